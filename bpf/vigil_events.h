/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The records the kernel side sends to user space, and the keys user space writes into maps.
 *
 * This is the one definition: the Python decoder (vigil/events/layout.py) mirrors it, and a test
 * reads these structs from the compiled object's BTF and compares sizes and offsets. Rules:
 * fixed-width fields only, no bool, every hole filled by a named _reserved field.
 */
#ifndef VIGIL_EVENTS_H
#define VIGIL_EVENTS_H

#define VIGIL_COMM_LEN 16
#define VIGIL_PATH_MAX 4096	/* a path is cut (and flagged) beyond this */
#define VIGIL_WATCH_KEY_LEN 256	/* the watch list matches on the first 256 bytes of a path */

enum vigil_kind {
	VIGIL_EV_FILE = 1,
	VIGIL_EV_EXEC = 2,
	VIGIL_EV_EXIT = 3,
	VIGIL_EV_NET = 4,
	VIGIL_EV_CRED = 5,	/* a change of a process's credentials (struct vigil_cred_event) */
	VIGIL_EV_SEC = 6,	/* kernel and security tampering (struct vigil_sec_event) */
	VIGIL_EV_SHELL = 7,	/* a command line typed in an interactive shell (uprobe) */
};

/* Same values as vigil.events.model.NetOp. */
enum vigil_net_op {
	VIGIL_NET_CONNECT = 1,		/* outbound TCP connect, once its outcome is known */
	VIGIL_NET_ACCEPT = 2,		/* inbound TCP connection accepted */
	VIGIL_NET_LISTEN = 3,
	VIGIL_NET_BIND = 4,
	VIGIL_NET_UDP_SEND = 5,		/* first datagram of a UDP flow, sent ... */
	VIGIL_NET_UDP_RECV = 6,		/* ... or received */
	VIGIL_NET_UNIX_CONNECT = 7,	/* connect to a Unix socket path on the unix watch list */
	VIGIL_NET_OP_MAX = 8,
};

/* Same values as vigil.events.model.CredOp: what changed a process's credentials. */
enum vigil_cred_op {
	VIGIL_CRED_SETUID = 1,		/* setuid(2) */
	VIGIL_CRED_SETREUID = 2,
	VIGIL_CRED_SETRESUID = 3,
	VIGIL_CRED_SETFSUID = 4,
	VIGIL_CRED_SETGID = 5,
	VIGIL_CRED_SETREGID = 6,
	VIGIL_CRED_SETRESGID = 7,
	VIGIL_CRED_SETFSGID = 8,
	VIGIL_CRED_CAPSET = 9,
	VIGIL_CRED_EXEC = 10,		/* exec of a setuid/setgid or file-capability program */
	VIGIL_CRED_ESCALATION = 11,	/* more privilege that no set*id call or exec explains */
	VIGIL_CRED_OP_MAX = 12,
};

/* Same values as vigil.events.model.SecOp: kernel and security tampering. */
enum vigil_sec_op {
	VIGIL_SEC_MODULE_LOAD = 1,	/* a kernel module loaded (name), or a load that failed */
	VIGIL_SEC_BPF_PROG_LOAD = 2,	/* bpf(BPF_PROG_LOAD) by another process */
	VIGIL_SEC_BPF_ATTACH = 3,	/* bpf() attach: LINK_CREATE, PROG_ATTACH, RAW_TRACEPOINT_OPEN */
	VIGIL_SEC_PTRACE = 4,		/* ptrace attach or seize of another process */
	VIGIL_SEC_VM_WRITE = 5,		/* process_vm_writev into another process */
	VIGIL_SEC_MOUNT = 6,
	VIGIL_SEC_UMOUNT = 7,
	VIGIL_SEC_PIVOT_ROOT = 8,
	VIGIL_SEC_SIGNAL = 9,		/* a signal sent to the agent */
	VIGIL_SEC_BPF_OWN = 10,		/* another process took a handle on one of Vigil's own BPF
					 * programs, maps or links (by id: the way to detach, replace
					 * or rewrite them) */
	VIGIL_SEC_OP_MAX = 11,
};

/* Same values as vigil.events.model.FileOp. */
enum vigil_file_op {
	VIGIL_OP_CREATE = 1,
	VIGIL_OP_MODIFY = 2,
	VIGIL_OP_DELETE = 3,
	VIGIL_OP_RMDIR = 4,
	VIGIL_OP_RENAME = 5,
	VIGIL_OP_CHMOD = 6,
	VIGIL_OP_CHOWN = 7,
	VIGIL_OP_TRUNCATE = 8,
	VIGIL_OP_LINK = 9,
	VIGIL_OP_SYMLINK = 10,
	VIGIL_OP_MKDIR = 11,
	VIGIL_OP_SETXATTR = 12,
	VIGIL_OP_REMOVEXATTR = 13,
	VIGIL_OP_MKNOD = 14,
	VIGIL_OP_OPEN = 15,
	VIGIL_OP_OPEN_WRITE = 16, /* internal: a watched file was opened for writing */
};

/* vigil_hdr.flags */
enum vigil_ev_flags {
	VIGIL_F_PATH_TRUNC = 1,		/* path deeper or longer than the kernel side walks */
	VIGIL_F_PATH2_TRUNC = 2,
	VIGIL_F_ARGS_TRUNC = 4,
	VIGIL_F_UNNORMALIZED = 8,	/* a path argument had //, . or .. components: the kernel
					 * could not match it exactly, user space decides */
	VIGIL_F_FROM_ARG = 16,		/* path built from a syscall argument, not a kernel object */
	VIGIL_F_CREATED = 32,		/* open_write: the open created the file */
	VIGIL_F_PENDING_WRITES = 64,	/* exit: the process still held watched files open for write */
	VIGIL_F_LINK_ANYWHERE = 128,	/* symlink outside the watch list, sent so user space can
					 * tell whether it leads into a watched tree */
	VIGIL_F_CWD_TRUNC = 256,	/* exec: the working directory was cut like a path
					 * (PATH_TRUNC says it of the executable) */
	VIGIL_F_EXE_DELETED = 512,	/* exec: the executable has no name left (unlinked, or a
					 * memfd): user space adds the kernel's " (deleted)" */
};

/* Index into the per-CPU `stats` array: every failed ring-buffer reserve is counted, and so is
 * every new key and every delete of the LRU maps (user space derives their evictions: an LRU
 * map has no eviction callback, but each entry is either still there, deleted or evicted). */
enum vigil_stat {
	VIGIL_STAT_DROP_FILE = 0,
	VIGIL_STAT_DROP_EXEC = 1,
	VIGIL_STAT_DROP_EXIT = 2,
	VIGIL_STAT_INFLIGHT_FULL = 3,
	VIGIL_STAT_WFILES_FULL = 4,
	VIGIL_STAT_PERF_FULL = 5,	/* perf variant: sends that found the CPU's buffer full (also
					 * counted by kind above) */
	VIGIL_STAT_WFILES_NEW = 6,	/* wfiles: keys inserted ... */
	VIGIL_STAT_WFILES_DEL = 7,	/* ... and deleted by BPF (user space counts its own) */
	VIGIL_STAT_URING_NEW = 8,	/* uring_reqs: the same */
	VIGIL_STAT_URING_DEL = 9,
	VIGIL_STAT_DROP_NET = 10,	/* network records the buffer had no room for */
	VIGIL_STAT_NET_CONNS_FULL = 11,	/* connects in progress the kernel side could not follow */
	VIGIL_STAT_NET_RATE = 12,	/* network events over a process's rate cap (lost) */
	VIGIL_STAT_NET_FILTERED = 13,	/* network events the config excludes (not lost) */
	VIGIL_STAT_DROP_SHELL = 14,	/* shell command lines the buffer had no room for */
	VIGIL_STAT_DROP_CRED = 15,	/* credential changes the buffer had no room for */
	VIGIL_STAT_DROP_SEC = 16,	/* tampering records the buffer had no room for */
	VIGIL_STAT_TAIL_CALL_FAILED = 17, /* a handler not reached (an empty slot: never expected);
					 * its event, if it had one, is lost */
	VIGIL_STAT_MAX = 24,
};

struct vigil_hdr {
	__u16 kind;
	__u16 flags;
	__u32 size;		/* bytes of this record, header included */
	__u64 ktime_ns;		/* CLOCK_MONOTONIC */
};

/* Who did it. start times are CLOCK_BOOTTIME ns of the thread-group leaders. */
struct vigil_proc {
	__u64 start_time;
	__u64 parent_start_time;
	__u64 cgroup_id;
	__u32 pid;		/* thread-group id */
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 egid;
	__u32 auid;		/* login uid, (u32)-1 when unset */
	__u32 sessionid;
	__u32 mnt_ns;
	char comm[VIGIL_COMM_LEN];
};

struct vigil_file_event {
	struct vigil_hdr hdr;
	struct vigil_proc proc;
	__u32 op;		/* enum vigil_file_op */
	__s32 ret;		/* 0, or -errno of a failed attempt */
	__u32 mode;
	__u32 owner_uid;
	__u32 owner_gid;
	__u32 oflags;
	__u64 ino;
	__u64 file_id;		/* open_write/modify: identity of the open file */
	__u32 dev;
	__u16 path_len;
	__u16 path2_len;
	char data[];		/* path, then path2 (no NULs) */
};

struct vigil_exec_event {
	struct vigil_hdr hdr;
	struct vigil_proc proc;
	__u32 exe_len;
	__u32 args_len;
	__u32 cwd_len;		/* 0: no working directory known (a task without an fs_struct) */
	__u32 exe_dev;		/* the executed file: its device (the kernel's dev_t), ... */
	__u64 exe_ino;		/* ... inode number (0: no file) ... */
	__u64 exe_ctime_ns;	/* ... and change time, as the exec found them */
	char data[];		/* executable path, then argv (NUL-separated), then the working
				 * directory (no NULs) */
};

struct vigil_exit_event {
	struct vigil_hdr hdr;
	struct vigil_proc proc;
	__s32 exit_code;	/* wait status */
	__u32 _reserved;
};

struct vigil_net_event {
	struct vigil_hdr hdr;
	struct vigil_proc proc;	/* connect: the task that called connect(), not the one the
				 * outcome arrived on */
	__u32 op;		/* enum vigil_net_op */
	__s32 ret;		/* 0, or -errno of a failed connect or bind */
	__u16 family;		/* AF_INET, AF_INET6, AF_UNIX */
	__u16 protocol;		/* IPPROTO_TCP, IPPROTO_UDP; 0 for Unix sockets */
	__u16 lport;		/* host byte order */
	__u16 rport;
	__u8 laddr[16];		/* network byte order; IPv4 in the first 4 bytes */
	__u8 raddr[16];
	__u64 sock_id;		/* the socket's kernel address: the events of one socket */
	__u32 path_len;		/* Unix sockets: the path, in data */
	__u32 _reserved;
	char data[];
};

/* A command line an interactive shell read (a uretprobe on its readline). The who-data is the
 * shell's; VIGIL_F_ARGS_TRUNC says the line was longer than VIGIL_SHELL_MAX and was cut. */
#define VIGIL_SHELL_MAX 4096		/* bytes of a command line kept (its NUL not counted) */
#define VIGIL_TTY_NAME_LEN 32

struct vigil_shell_event {
	struct vigil_hdr hdr;
	struct vigil_proc proc;
	__u32 tty_major;	/* the controlling terminal; 0/0 and an empty name: none */
	__u32 tty_minor;
	__u32 session_leader;	/* pid of the session's leader (initial pid namespace); 0: unknown */
	__u32 len;		/* bytes of the command line in data (no NUL) */
	char tty_name[VIGIL_TTY_NAME_LEN];	/* the kernel's name: "pts3", "tty1" */
	char data[];
};

/* A process's identity, as struct cred holds it (ids in the initial user namespace). */
struct vigil_creds {
	__u32 uid;
	__u32 gid;
	__u32 suid;
	__u32 sgid;
	__u32 euid;
	__u32 egid;
	__u32 fsuid;
	__u32 fsgid;
	__u64 cap_effective;
	__u64 cap_permitted;
	__u64 cap_inheritable;
	__u64 user_ns;		/* the user namespace's inode number: capabilities count there */
};

/* A change of credentials: before and after. proc is the task's who-data before the change
 * (an exec's: the program that called exec). */
struct vigil_cred_event {
	struct vigil_hdr hdr;
	struct vigil_proc proc;
	__u32 op;		/* enum vigil_cred_op */
	__u32 path_len;		/* exec: the program's name as exec was given it, in data */
	struct vigil_creds old;
	struct vigil_creds new;
	char data[];
};

/* Kernel and security tampering. Which fields mean something depends on op:
 *   module_load   name: the module's; ret: a failed load's error
 *   bpf_*         arg1: the command; arg2: program type; arg3: expected attach type /
 *                 attach type; name: the program's name; target_pid: 0
 *   ptrace        arg1: the request (PTRACE_ATTACH 16, PTRACE_SEIZE 0x4206); target_*
 *   vm_write      target_*; ret: bytes written or -errno
 *   mount         name: the filesystem type; path: the mount point; path2: the source;
 *                 arg2: the flags
 *   umount        path: the mount point; arg2: the flags
 *   pivot_root    path: the new root; path2: where the old one goes
 *   signal        arg1: the signal; target_pid: the agent
 *   bpf_own       arg1: the command (BPF_*_GET_FD_BY_ID); arg2: the object's id
 */
#define VIGIL_SEC_NAME_LEN 64

struct vigil_sec_event {
	struct vigil_hdr hdr;
	struct vigil_proc proc;
	__u32 op;		/* enum vigil_sec_op */
	__s32 ret;		/* 0, or -errno; ptrace and mounts: the call's result */
	__u32 target_pid;	/* the process acted on (thread-group id) */
	__u32 arg1;
	__u64 arg2;
	__u64 arg3;
	__u64 target_start_time;	/* with target_pid, the target's identity */
	char target_comm[VIGIL_COMM_LEN];
	char name[VIGIL_SEC_NAME_LEN];
	__u16 path_len;
	__u16 path2_len;
	__u32 _reserved;
	char data[];		/* path, then path2 (no NULs) */
};

/* Vigil's own BPF objects (the own_ids map): kind << 32 | the kernel's id of the object. */
enum vigil_own_kind {
	VIGIL_OWN_PROG = 1,
	VIGIL_OWN_MAP = 2,
	VIGIL_OWN_LINK = 3,
};

/* Keys of the network filters. Excluded networks: an LPM trie over 16-byte addresses, IPv4
 * as IPv4-mapped IPv6 (::ffff:a.b.c.d). */
struct vigil_net_cidr_key {
	__u32 prefixlen;	/* in bits */
	__u8 addr[16];
};

/* The watch list: an LPM trie over path bytes. User space writes "/etc/" for a watched /etc;
 * the kernel looks up "<path>/" so /etc itself, /etc/x and /etc/x/y match but /etcx does not. */
struct vigil_watch_key {
	__u32 prefixlen;	/* in bits */
	__u8 path[VIGIL_WATCH_KEY_LEN];
};

enum vigil_watch_flags {
	VIGIL_WATCH_INCLUDE = 1,
	VIGIL_WATCH_EXCLUDE = 2,
};

struct vigil_watch_val {
	__u32 flags;
	__u32 id;
};

#endif /* VIGIL_EVENTS_H */
