/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The few kernel types Vigil's BPF programs read, declared by hand.
 *
 * Every struct carries preserve_access_index, so clang records each field access as a CO-RE
 * relocation and libbpf resolves it against the running kernel's BTF (or a tailored BTF) at load:
 * the offsets written here do not matter, only the names. Only the fields we read are declared.
 * This replaces a generated vmlinux.h: smaller, reviewable, and the same on every architecture.
 */
#ifndef VIGIL_KERNEL_TYPES_H
#define VIGIL_KERNEL_TYPES_H

#include <linux/types.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;

#define CORE __attribute__((preserve_access_index))

typedef struct { int counter; } CORE atomic_t;
typedef struct { s64 counter; } CORE atomic_long_t;
typedef struct { unsigned int val; } CORE kuid_t;
typedef struct { unsigned int val; } CORE kgid_t;

struct qstr {
	union {
		struct {
			u32 hash;
			u32 len;
		};
		u64 hash_len;
	};
	const unsigned char *name;
} CORE;

struct super_block {
	u32 s_dev;
} CORE;

struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
	struct super_block *i_sb;
	unsigned int i_nlink;		/* in an anonymous union with __i_nlink */
} CORE;

/* An inode's change time moved: i_ctime (a timespec64; a timespec before 4.18), __i_ctime
 * (6.6), then i_ctime_sec and i_ctime_nsec (6.11). */
struct timespec64 {
	s64 tv_sec;
	long tv_nsec;
} CORE;

struct inode___ctime_split {
	s64 i_ctime_sec;
	u32 i_ctime_nsec;
} CORE;

struct inode___ctime_hidden {
	struct timespec64 __i_ctime;
} CORE;

struct inode___ctime_old {
	struct timespec64 i_ctime;
} CORE;

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
} CORE;

struct vfsmount {
	struct dentry *mnt_root;
} CORE;

/* fs/mount.h: not exported to modules, but present in the kernel's BTF. */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} CORE;

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} CORE;

/* Since 6.13 (commit "fs: add file_ref") the reference count is a file_ref_t. */
typedef struct { atomic_long_t refcnt; } CORE file_ref_t;

struct file {
	struct path f_path;
	struct inode *f_inode;
	void *private_data;		/* a socket's file: its struct socket */
	unsigned int f_mode;
	unsigned int f_flags;
	atomic_long_t f_count;
	file_ref_t f_ref;
} CORE;

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} CORE;

struct files_struct {
	struct fdtable *fdt;
} CORE;

struct fs_struct {
	int umask;
	struct path root;
	struct path pwd;
} CORE;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
} CORE;

/* A capability set: { u64 val } since 6.3, { u32 cap[2] } before (same size; read as 8 bytes,
 * see kcap() in cred.bpf.h). */
typedef struct { u64 val; } CORE kernel_cap_t;

struct user_namespace;

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t suid;
	kgid_t sgid;
	kuid_t euid;
	kgid_t egid;
	kuid_t fsuid;
	kgid_t fsgid;
	kernel_cap_t cap_inheritable;
	kernel_cap_t cap_permitted;
	kernel_cap_t cap_effective;
	struct user_namespace *user_ns;
} CORE;

struct linux_binprm {
	struct cred *cred;
	const char *filename;
} CORE;

/* The session leader is found through the session's struct pid: its number in the initial pid
 * namespace is numbers[0]. */
struct upid {
	int nr;
} CORE;

struct pid {
	struct upid numbers[1];
} CORE;

enum pid_type { PIDTYPE_PID, PIDTYPE_TGID, PIDTYPE_PGID, PIDTYPE_SID, PIDTYPE_MAX };

struct tty_driver {
	int major;
	int minor_start;
} CORE;

struct tty_struct {
	struct tty_driver *driver;
	int index;
	char name[64];
} CORE;

struct signal_struct {
	atomic_t live;
	struct tty_struct *tty;		/* the controlling terminal, NULL without one */
	struct pid *pids[PIDTYPE_MAX];	/* since 4.19; before, in each task */
} CORE;

struct ns_common {
	unsigned int inum;
} CORE;

struct mnt_namespace {
	struct ns_common ns;
} CORE;

struct user_namespace {
	struct ns_common ns;
} CORE;

struct nsproxy {
	struct mnt_namespace *mnt_ns;
} CORE;

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	u64 start_time;
	u64 start_boottime;
	unsigned int sessionid;
	kuid_t loginuid;
	char comm[16];
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	const struct cred *cred;
	struct files_struct *files;
	struct fs_struct *fs;
	struct mm_struct *mm;
	struct signal_struct *signal;
	struct nsproxy *nsproxy;
} CORE;

/* Before 5.5 the boot-based start time was called real_start_time. */
struct task_struct___pre55 {
	u64 real_start_time;
} CORE;

/* Raw layouts of the syscall tracepoints (trace_event_raw_sys_enter/exit in the kernel's BTF):
 * relocated too, so 32-bit kernels with 4-byte arguments resolve correctly. */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
} CORE;

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
} CORE;

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
} CORE;

/* Sockets (net.bpf.h). The addresses of struct sock_common sit in anonymous unions in the
 * kernel; CO-RE matches fields through anonymous members by name, so they are declared flat. */
struct in6_addr {
	__u8 u6_addr8[16];
} CORE;

struct sock_common {
	__u32 skc_daddr;		/* __be32 */
	__u32 skc_rcv_saddr;		/* __be32 */
	__u16 skc_dport;		/* __be16 */
	__u16 skc_num;			/* host order */
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;	/* CONFIG_IPV6 */
	struct in6_addr skc_v6_rcv_saddr;
} CORE;

struct sock {
	struct sock_common __sk_common;
	int sk_err;
} CORE;

/* An enum in the kernel too: libbpf relocates a field only to a field of the same kind. */
typedef enum { SS_FREE_, SS_UNCONNECTED_, SS_CONNECTING_ } socket_state;

struct socket {
	socket_state state;
	short type;			/* SOCK_STREAM, SOCK_DGRAM, ... */
	struct sock *sk;
} CORE;

struct msghdr {
	void *msg_name;			/* kernel copy of the address, or NULL */
} CORE;

/* sock:inet_sock_set_state (TCP state changes, since 4.16) */
struct trace_event_raw_inet_sock_set_state {
	struct trace_entry ent;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;			/* host order */
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
} CORE;

/* vfs_rename() takes its arguments in one struct since 5.12. */
struct renamedata {
	struct dentry *old_dentry;
} CORE;

/*
 * Registers of a kprobe'd function, per architecture: where the first five arguments and the
 * return value are (the kernel's calling convention, not the uapi one). Declared with the
 * kernel's own field names so CO-RE relocates them; used by KP_ARG/KP_RET in vfs.bpf.h.
 */
#if defined(__TARGET_ARCH_x86) && defined(VIGIL_32BIT)
struct pt_regs { unsigned long ax, dx, cx; } CORE;	/* i386: regparm(3) */
#define KP_ARG0(r) KREAD(r, ax)
#define KP_ARG1(r) KREAD(r, dx)
#define KP_ARG2(r) KREAD(r, cx)
#define KP_ARG3(r) 0
#define KP_ARG4(r) 0
#define KP_NARGS 3
#define KP_RET(r) KREAD(r, ax)
#elif defined(__TARGET_ARCH_x86)
struct pt_regs { unsigned long di, si, dx, cx, r8, ax; } CORE;
#define KP_ARG0(r) KREAD(r, di)
#define KP_ARG1(r) KREAD(r, si)
#define KP_ARG2(r) KREAD(r, dx)
#define KP_ARG3(r) KREAD(r, cx)
#define KP_ARG4(r) KREAD(r, r8)
#define KP_NARGS 5
#define KP_RET(r) KREAD(r, ax)
#elif defined(__TARGET_ARCH_arm64) || defined(__TARGET_ARCH_riscv) || \
	defined(__TARGET_ARCH_arm) || defined(__TARGET_ARCH_powerpc) || defined(__TARGET_ARCH_s390)
#if defined(__TARGET_ARCH_arm64)
struct pt_regs { u64 regs[31]; } CORE;
#define KP_REG(r, n) KELEM(r, regs[n])
#define KP_FIRST 0
#elif defined(__TARGET_ARCH_riscv)
struct pt_regs { unsigned long a0, a1, a2, a3, a4; } CORE;
#define KP_REG(r, n) ((n) == 0 ? KREAD(r, a0) : (n) == 1 ? KREAD(r, a1) : \
		      (n) == 2 ? KREAD(r, a2) : (n) == 3 ? KREAD(r, a3) : \
		      KREAD(r, a4))
#define KP_FIRST 0
#elif defined(__TARGET_ARCH_arm)
struct pt_regs { unsigned long uregs[18]; } CORE;
#define KP_REG(r, n) KELEM(r, uregs[n])
#define KP_FIRST 0
#elif defined(__TARGET_ARCH_powerpc)
struct pt_regs { unsigned long gpr[32]; } CORE;
#define KP_REG(r, n) KELEM(r, gpr[n])
#define KP_FIRST 3
#else /* s390: the first argument is saved in orig_gpr2, gprs[2] becomes the return value */
struct pt_regs { unsigned long gprs[16]; unsigned long orig_gpr2; } CORE;
#define KP_REG(r, n) ((n) == 2 ? KREAD(r, orig_gpr2) : KELEM(r, gprs[n]))
#define KP_FIRST 2
#endif
#define KP_ARG0(r) KP_REG(r, KP_FIRST + 0)
#define KP_ARG1(r) KP_REG(r, KP_FIRST + 1)
#define KP_ARG2(r) KP_REG(r, KP_FIRST + 2)
#define KP_ARG3(r) KP_REG(r, KP_FIRST + 3)
#define KP_ARG4(r) KP_REG(r, KP_FIRST + 4)
#define KP_NARGS 5
#if defined(__TARGET_ARCH_s390)
#define KP_RET(r) KELEM(r, gprs[2])
#else
#define KP_RET(r) KP_REG(r, KP_FIRST)
#endif
#endif

/* include/uapi/linux/openat2.h */
struct open_how {
	u64 flags;
	u64 mode;
	u64 resolve;
};

/* io_uring (the tracepoint backend's view of it). The request is read from the io_uring
 * tracepoints' records; its per-opcode data, prepared at submission, from struct io_kiocb. */
struct filename {
	const char *name;		/* the kernel's copy of the path string */
} CORE;

struct io_open {
	int dfd;
	u32 file_slot;			/* != 0: a fixed-file slot, not an fd */
	struct filename *filename;
	struct open_how how;
} CORE;

struct io_close {
	int fd;
	u32 file_slot;
} CORE;

struct io_rename {
	int old_dfd;
	int new_dfd;
	struct filename *oldpath;
	struct filename *newpath;
	int flags;
} CORE;

struct io_unlink {
	int dfd;
	int flags;
	struct filename *filename;
} CORE;

struct io_mkdir {
	int dfd;
	unsigned short mode;
	struct filename *filename;
} CORE;

/* symlinkat and linkat share struct io_link in 6.x ... */
struct io_link {
	int old_dfd;
	int new_dfd;
	struct filename *oldpath;
	struct filename *newpath;
	int flags;
} CORE;

/* ... before, each had its own (Debian's 5.10, with io_uring backported from 5.15). */
struct io_hardlink {
	int old_dfd;
	int new_dfd;
	struct filename *oldpath;
	struct filename *newpath;
	int flags;
} CORE;

struct io_symlink {
	int new_dfd;
	struct filename *oldpath;
	struct filename *newpath;
} CORE;

struct io_cmd_data {
	struct file *file;
} CORE;

/* In 6.x the per-opcode data is an opaque io_cmd_data each opcode casts ... */
struct io_kiocb {
	struct io_cmd_data cmd;
	u8 opcode;
} CORE;

/* ... in 5.10, a union of the per-opcode structs (all at the union's offset). */
struct io_kiocb___union {
	struct io_open open;
} CORE;

/* The io_uring tracepoints' records: submission (io_uring_submit_req in 6.18, io_uring_submit_sqe
 * in 6.1 and 5.10) and completion (5.10's names no request: only ctx, user_data and res). */
struct trace_event_raw_io_uring_submit_req {
	void *req;
} CORE;

struct trace_event_raw_io_uring_submit_sqe {
	void *req;
} CORE;

struct trace_event_raw_io_uring_complete {
	void *req;
	int res;
} CORE;

/* Tracepoints of the privilege and tampering events (cred.bpf.h, sec.bpf.h). A __data_loc
 * field holds a string's offset from the record's start (low 16 bits) and its length. */
struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	u32 __data_loc_filename;
	int pid;
	int old_pid;
} CORE;

struct trace_event_raw_module_load {
	struct trace_entry ent;
	unsigned int taints;
	u32 __data_loc_name;
} CORE;

struct trace_event_raw_signal_generate {
	struct trace_entry ent;
	int sig;
	int errno;
	int code;
	char comm[16];
	int pid;
	int group;
	int result;
} CORE;

#endif /* VIGIL_KERNEL_TYPES_H */
