// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Vigil's syscall-tracepoint backend: file changes in watched trees, execs and exits.
 *
 * Shape: every file syscall has an enter program that remembers its arguments (keyed by thread)
 * and an exit program that, knowing the result, resolves the path from kernel objects (the
 * opened file, the dirfd's file, the task's cwd or root), matches it against the watch list (an
 * LPM trie) and only then builds and sends an event. Read-only opens return at enter.
 *
 * Settings are const volatile globals written by user space between open and load.
 *
 * Records go to user space through a ring buffer, or, built as vigil_perf.bpf.c for kernels
 * without one, through a perf event array: then every program that can send a record ends with
 * flush(ctx) (see submit()).
 */
#include <linux/bpf.h>
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "kread.h"
#include <bpf/bpf_tracing.h>
#include "vigil_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define O_ACCMODE 00000003
#define O_WRONLY 00000001
#define O_RDWR 00000002
#define O_CREAT 00000100
#define O_TRUNC 00001000

#define WALK_END 4096			/* the walk writes right-aligned, ending here */
#define WALK_MASK (WALK_END - 1)
#define MAX_DEPTH 64			/* path components walked; deeper paths are flagged */
#define NAME_MASK 255
#define SCAN_MAX 256			/* bytes of a path argument checked for . and .. */
#define SCAN_MASK (2 * VIGIL_PATH_MAX - 1)
#define LEN_MAX (VIGIL_PATH_MAX - 1)	/* longest path string kept; also a mask */

const volatile __u64 cfg_failed_errnos = (1ULL << 1) | (1ULL << 13) | (1ULL << 30); /* EPERM EACCES EROFS */
const volatile __u64 cfg_wakeup_bytes = 1 << 20; /* wake the reader once this much is pending */
const volatile __u32 cfg_self_tgid = 0;		/* the agent: its own file operations are ignored */
const volatile __u32 cfg_fmode_write = 0x2;	/* FMODE_WRITE */
const volatile __u32 cfg_fmode_created = 0x100000; /* FMODE_CREATED, since 4.19 */
/* 1 when a VFS backend sees the last reference of a file go (__fput): exits then carry no
 * "pending writes" and the close syscalls are not hooked. */
const volatile __u32 cfg_close_at_fput = 0;

#ifdef VIGIL_PERFBUF
/* Kernels without ring buffers (< 5.8): one perf buffer per CPU (vigil_perf.bpf.c). */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));	/* max_entries 0: libbpf sets the CPU count */
} events SEC(".maps");
#else
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);	/* resized by user space before load */
} events SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct vigil_watch_key);
	__type(value, struct vigil_watch_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VIGIL_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* What a syscall's enter program leaves for its exit program. */
enum sc_kind { SC_OPEN = 1, SC_PATH, SC_PATH2, SC_SYMLINK, SC_FD };

struct inflight {
	__u32 kind;
	__u32 op;
	__s32 dfd1;
	__s32 dfd2;
	__u64 path1;
	__u64 path2;
	__u32 flags;
	__u32 mode;
	__u32 uid;
	__u32 gid;
};

/* A plain hash, not an LRU: an LRU would silently evict a syscall in progress; a full hash
 * fails the update, and that is counted. Every syscall exit (interrupted ones too) deletes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} inflight SEC(".maps");

/* Open files of watched paths that were opened for writing: closing them means "modified".
 * An LRU: on the tracepoint backend some last closes are never seen (close_range, the closes of
 * an exec's O_CLOEXEC files), so no path can promise the delete; a plain hash would fill with
 * them for good. Evictions are counted exactly
 * instead (lru_insert), and each one is reported as a lost "modified". */
struct wfile {
	__u64 inode;
	__u32 tgid;
	__u32 _reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);		/* struct file * */
	__type(value, struct wfile);
} wfiles SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);		/* tgid */
	__type(value, __u32);		/* tracked files opened by it */
} wpending SEC(".maps");

/* Scratch space, one per CPU (programs on one CPU do not nest). */
struct walkbuf {
	__u32 off;
	char d[WALK_END + NAME_MASK + 1];
};

struct pathbuf {
	__u32 prefixlen;		/* so that the buffer is also an LPM key */
	char d[2 * VIGIL_PATH_MAX + 8];	/* + room for the scan's look-ahead */
};

/* One file event, built or parked until its result is known (pending, uring_parked): its two
 * paths. */
#define EVBUF_SIZE (sizeof(struct vigil_file_event) + 2 * VIGIL_PATH_MAX + 64)
struct evbuf {
	char b[EVBUF_SIZE];
};

/* The record being built on this CPU (ev_scratch): a file event, or an exec's executable, argv
 * and working directory, the largest record. Only the per-CPU scratch is this big; the maps that
 * park file events keep theirs at EVBUF_SIZE. */
#define RECBUF_SIZE (sizeof(struct vigil_exec_event) + 3 * VIGIL_PATH_MAX + 64)
_Static_assert(RECBUF_SIZE >= EVBUF_SIZE, "the scratch record must hold a file event");
struct recbuf {
	char b[RECBUF_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walkbuf);
} walk_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pathbuf);
} path_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct recbuf);
} ev_scratch SEC(".maps");

/* min(len, LEN_MAX) in a form the verifier keeps track of whatever register clang picks */
static __always_inline __u32 clamp_len(__u32 len)
{
	if (len > LEN_MAX)
		len = LEN_MAX;
	asm volatile("" : "+r"(len));	/* keep clang from dropping the mask as redundant */
	return len & LEN_MAX;
}

/* Atomic although per CPU: a trampoline program can be preempted by another on the same CPU, and
 * the eviction counts (inserts - deletes - live entries) must be exact. */
static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

#define E_NOENT 2
#define E_EXIST 17

/* The LRU maps (wfiles, uring_reqs) evict without telling anyone. Each of their entries is
 * inserted once, then deleted or evicted or still there; so new keys and deletes are counted
 * here and user space, which counts the live entries when an eviction was possible, knows
 * exactly how many were evicted (vigil/kernel/lru.py). A replaced value is no new key: BPF_NOEXIST first, then BPF_EXIST. Where
 * an entry can be cleaned up on every path, a plain hash with a counted "full" is used instead
 * (inflight, pending). */
static __always_inline long lru_insert(void *map, void *key, void *val, __u32 stat_new)
{
	long err = bpf_map_update_elem(map, key, val, BPF_NOEXIST);

	if (err == -E_EXIST) {
		err = bpf_map_update_elem(map, key, val, BPF_EXIST);
		if (err != -E_NOENT)
			return err;
		err = bpf_map_update_elem(map, key, val, BPF_NOEXIST);	/* evicted in between */
	}
	if (!err)
		count(stat_new);
	return err;
}

static __always_inline void lru_delete(void *map, void *key, __u32 stat_del)
{
	if (!bpf_map_delete_elem(map, key))
		count(stat_del);
}

/* ---- who: the acting task ------------------------------------------------------------- */

static __always_inline __u64 task_start(struct task_struct *t)
{
	if (bpf_core_field_exists(t->start_boottime))
		return KREAD(t, start_boottime);
	return KREAD((struct task_struct___pre55 *)t, real_start_time);
}

static __noinline void fill_proc(struct vigil_proc *p)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct task_struct *parent = KREAD(t, real_parent);
	const struct cred *cred = KREAD(t, cred);
	__u64 id = bpf_get_current_pid_tgid();

	p->pid = id >> 32;
	p->tid = (__u32)id;
	p->ppid = KREAD(parent, tgid);
	p->start_time = task_start(KREAD(t, group_leader));
	p->parent_start_time = task_start(KREAD(parent, group_leader));
	p->cgroup_id = bpf_get_current_cgroup_id();
	p->uid = KREAD(cred, uid.val);
	p->gid = KREAD(cred, gid.val);
	p->euid = KREAD(cred, euid.val);
	p->egid = KREAD(cred, egid.val);
	p->auid = (__u32)-1;
	p->sessionid = (__u32)-1;
	if (bpf_core_field_exists(t->loginuid)) {	/* CONFIG_AUDIT */
		p->auid = KREAD(t, loginuid.val);
		p->sessionid = KREAD(t, sessionid);
	}
	p->mnt_ns = KREAD(t, nsproxy, mnt_ns, ns.inum);
	bpf_get_current_comm(p->comm, sizeof(p->comm));
}

/* ---- where: paths from kernel objects --------------------------------------------------- */

#define WALK_TRUNC (1 << 16)		/* vigil_walk_path(): the path was cut */

/* Writes the path of (dentry, vfsmnt) right-aligned in the per-CPU walk buffer, ending at
 * WALK_END, crossing mount points up to the root of the task's mount namespace. Returns the start
 * offset, | WALK_TRUNC when the path was deeper or longer than we walk.
 *
 * A global function: the verifier checks it once, not once per caller (older verifiers, 5.10's,
 * otherwise exceed their million-instruction budget on the exit handler). Its arguments are
 * therefore plain numbers (5.10 allows nothing else) and it finds its buffer itself.
 *
 * The write offset lives in map memory, not in a register, on purpose: the verifier then sees it
 * as an unknown value bounded by masks, so the "crossed a mount" and "wrote a name" paths of an
 * iteration reach the next one in the same abstract state and are verified once, not 2^depth
 * times. */
__noinline int vigil_walk_path(__u64 dentry_p, __u64 vfsmnt_p)
{
	struct dentry *dentry = (struct dentry *)dentry_p;
	struct vfsmount *vfsmnt = (struct vfsmount *)vfsmnt_p;
	/* container_of with a relocated offset: struct mount's layout varies by kernel */
	struct mount *mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	__u32 zero = 0, trunc = 0;
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	int i;

	if (!wb)
		return WALK_END | WALK_TRUNC;
	wb->off = WALK_END;
	for (i = 0; i < MAX_DEPTH; i++) {
		struct dentry *mnt_root = KREAD(vfsmnt, mnt_root);
		struct dentry *parent = KREAD(dentry, d_parent);

		if (dentry == mnt_root) {
			struct mount *mparent = KREAD(mnt, mnt_parent);

			if (mparent == mnt)
				break;		/* root of the namespace */
			dentry = KREAD(mnt, mnt_mountpoint);
			mnt = mparent;
			vfsmnt = &mparent->mnt;
			continue;
		}
		if (dentry == parent)
			break;			/* a detached tree's root */

		__u32 len = KREAD(dentry, d_name.len) & NAME_MASK;
		const unsigned char *name = KREAD(dentry, d_name.name);
		__u32 off = wb->off;

		/* ">=": the path ends at most LEN_MAX bytes long; one of WALK_END bytes would lose
		 * its last byte to clamp_len() below without being flagged */
		if (len + 1 >= off || off > WALK_END) {
			trunc = WALK_TRUNC;
			break;
		}
		off -= len;
		/* Masked again out of clang's sight: Debian's 6.12 verifier (6.12.118) loses len's
		 * unsigned bound through the linked copy the test above compiles to (len + 1) and
		 * would refuse the read as unbounded */
		asm volatile("" : "+r"(len));
		bpf_probe_read_kernel(&wb->d[off & WALK_MASK], len & NAME_MASK, name);
		off -= 1;
		wb->d[off & WALK_MASK] = '/';
		wb->off = off;
		dentry = parent;
	}
	if (i == MAX_DEPTH)
		trunc = WALK_TRUNC;
	if (wb->off >= WALK_END) {
		wb->off = WALK_END - 1;
		wb->d[WALK_END - 1] = '/';
	}
	return (wb->off & WALK_MASK) | trunc;
}

/* Copies the path of (dentry, mnt) into pb->d[0..), returns its length. */
static __always_inline __u32 path_of_dentry(struct pathbuf *pb, struct walkbuf *wb,
					    struct dentry *dentry, struct vfsmount *mnt,
					    __u16 *flags)
{
	__u64 args[2] = {};
	int r;

	/* Typed pointers (an fentry or LSM program's arguments) may not be passed to a global
	 * function as numbers on older kernels; copied through a helper they are plain numbers. */
	bpf_probe_read_kernel(&args[0], sizeof(args[0]), &dentry);
	bpf_probe_read_kernel(&args[1], sizeof(args[1]), &mnt);
	r = vigil_walk_path(args[0], args[1]);
	__u32 off = r & WALK_MASK;
	__u32 len = WALK_END - off;

	if (r & WALK_TRUNC)
		*flags |= VIGIL_F_PATH_TRUNC;

	len = clamp_len(len);
	bpf_probe_read_kernel(pb->d, len, &wb->d[off & WALK_MASK]);
	return len;
}

/* Copies the path of a struct path in kernel memory into pb->d[0..), returns its length. */
static __always_inline __u32 path_of(struct pathbuf *pb, struct walkbuf *wb, const struct path *p,
				     __u16 *flags)
{
	return path_of_dentry(pb, wb, KREAD(p, dentry), KREAD(p, mnt), flags);
}

static __always_inline struct file *fd_file(int fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = KREAD(t, files, fdt);
	struct file **fds = KREAD(fdt, fd);

	if (fd < 0 || (unsigned int)fd >= KREAD(fdt, max_fds))
		return NULL;
	/* fds[fd], with the kernel's pointer width (4 bytes on a 32-bit kernel) */
	return (struct file *)KPTR_ELEM(fds, fd, fdt->fd);
}

/* True when the path argument at start..start+len of the per-CPU path buffer is not canonical
 * within its first SCAN_MAX bytes ("//", a "." or ".." component, a relative path starting
 * with "."), or is longer than that: then an LPM miss proves nothing and user space decides.
 * Conservative by design: "/.." anywhere counts. Global, like vigil_walk_path, to be verified
 * once. */
__noinline int vigil_needs_normalizing(__u32 start, __u32 len)
{
	__u32 zero = 0;
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	int i;

	if (!pb)
		return 1;
	if (len > SCAN_MAX)
		return 1;
	if (pb->d[start & SCAN_MASK] == '.')
		return 1;
	for (i = 0; i < SCAN_MAX; i++) {
		if (i >= len)
			break;
		__u32 o = (start + i) & SCAN_MASK;

		if (pb->d[o] != '/')
			continue;
		char c1 = pb->d[o + 1];

		if (c1 == '/')
			return 1;
		if (c1 == '.') {
			char c2 = pb->d[o + 2];

			if (c2 == '/' || c2 == '.' || c2 == 0)
				return 1;
		}
	}
	return 0;
}

/* "/proc/<pid>/root/...", "/proc/self/cwd/...", "/dev/fd/N/...": links the kernel follows to
 * anywhere, so the string says nothing about where the operation lands. */
static __always_inline int through_magic_link(struct pathbuf *pb, __u32 start, char first)
{
	char head[8] = {};

	if (first != '/')
		return 0;
	bpf_probe_read_kernel(head, sizeof(head), &pb->d[start & LEN_MAX]);
	return (head[1] == 'p' && head[2] == 'r' && head[3] == 'o' && head[4] == 'c' &&
		head[5] == '/') ||
	       (head[1] == 'd' && head[2] == 'e' && head[3] == 'v' && head[4] == '/' &&
		head[5] == 'f' && head[6] == 'd' && head[7] == '/');
}

/* Builds the absolute path named by (dfd, string) into pb->d[0..), returns its length. The
 * base directory comes from kernel objects (the dfd's file, the cwd, the root). The string is
 * in user memory (a syscall argument) or, with kstr, in the kernel's (io_uring's struct
 * filename). */
static __always_inline __u32 path_of_str(struct pathbuf *pb, struct walkbuf *wb, int dfd,
					 const char *upath, __u16 *flags, const int kstr)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	const struct path *base;
	char first = 0;
	__u32 pos;
	long n;

	*flags |= VIGIL_F_FROM_ARG;
	if (kstr)
		bpf_probe_read_kernel(&first, 1, upath);
	else
		bpf_probe_read_user(&first, 1, upath);
	struct fs_struct *fs = KREAD(t, fs);

	if (first == '/') {
		base = KADDR(fs, root);
	} else if (dfd == AT_FDCWD) {
		base = KADDR(fs, pwd);
	} else {
		struct file *f = fd_file(dfd);

		if (!f) {
			*flags |= VIGIL_F_UNNORMALIZED;	/* bad fd: the syscall failed anyway */
			base = KADDR(fs, pwd);
		} else {
			base = KADDR(f, f_path);
		}
	}
	pos = path_of(pb, wb, base, flags);
	if (pos == 1)			/* base is "/": do not double the slash */
		pos = 0;
	if (first == 0)			/* AT_EMPTY_PATH: the dfd itself */
		return pos ? pos : 1;
	pos = clamp_len(pos);
	if (first != '/' && pos < LEN_MAX) {
		pb->d[pos] = '/';
		pos++;
	}
	if (pos >= LEN_MAX) {
		*flags |= VIGIL_F_PATH_TRUNC;
		return LEN_MAX;
	}
	pos = clamp_len(pos);
	if (kstr)
		n = bpf_probe_read_kernel_str(&pb->d[pos], VIGIL_PATH_MAX, upath);
	else
		n = bpf_probe_read_user_str(&pb->d[pos], VIGIL_PATH_MAX, upath);
	if (n <= 1)
		return pos;
	if (vigil_needs_normalizing(pos, n - 1) || through_magic_link(pb, pos, first))
		*flags |= VIGIL_F_UNNORMALIZED;
	pos += n - 1;
	if (pos > LEN_MAX) {
		*flags |= VIGIL_F_PATH_TRUNC;
		pos = LEN_MAX;
	}
	return pos;
}

static __noinline __u32 path_of_arg(struct pathbuf *pb, struct walkbuf *wb, int dfd,
				    const char *upath, __u16 *flags)
{
	return path_of_str(pb, wb, dfd, upath, flags, 0);
}

static __noinline __u32 path_of_karg(struct pathbuf *pb, struct walkbuf *wb, int dfd,
				     const char *kpath, __u16 *flags)
{
	return path_of_str(pb, wb, dfd, kpath, flags, 1);
}

/* Looks "<path>/" up in the watch list. 1: watched, 0: not. */
static __noinline int is_watched(struct pathbuf *pb, __u32 len)
{
	struct vigil_watch_val *v;
	__u32 keylen;

	len = clamp_len(len);
	pb->d[len] = '/';
	keylen = len + 1;
	if (keylen > VIGIL_WATCH_KEY_LEN)
		keylen = VIGIL_WATCH_KEY_LEN;
	pb->prefixlen = keylen * 8;
	v = bpf_map_lookup_elem(&watched, pb);
	return v && (v->flags & VIGIL_WATCH_INCLUDE);
}

/* ---- sending ---------------------------------------------------------------------------- */

#ifdef VIGIL_PERFBUF
/* bpf_perf_event_output needs the program's context, which the helpers that build events do
 * not have (a BPF function takes at most 5 arguments). So submit() parks the record in a per-CPU
 * outbox and every program that can submit ends with flush(ctx), which sends it. A program
 * submits at most one record; programs on one CPU do not nest. */
#define PERF_ENOSPC 28
#define OUTBOX_SIZE 16384		/* a power of two >= RECBUF_SIZE: a mask bounds sizes */
_Static_assert(OUTBOX_SIZE >= RECBUF_SIZE, "the outbox must hold any record");

struct outbox {
	__u32 size;			/* 0: empty */
	__u32 drop_stat;		/* the counter of a failed send */
	char b[OUTBOX_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct outbox);
} outbox SEC(".maps");

static __always_inline void submit_max(void *ev, __u32 size, const __u32 max, __u32 drop_stat)
{
	__u32 zero = 0;
	struct outbox *o = bpf_map_lookup_elem(&outbox, &zero);

	if (!o)
		return;
	if (o->size)
		count(o->drop_stat);	/* never flushed: counted, not silently replaced */
	o->size = 0;
	if (size > max)
		return;
	asm volatile("" : "+r"(size));	/* keep clang from dropping the mask as redundant */
	size &= OUTBOX_SIZE - 1;
	if (bpf_probe_read_kernel(o->b, size, ev)) {
		count(drop_stat);
		return;
	}
	o->size = size;
	o->drop_stat = drop_stat;
}

/* Sends the outbox's record, if any. A failure is counted by kind like a failed ring reserve;
 * a full buffer (-ENOSPC) also in VIGIL_STAT_PERF_FULL, so that user space can tell which of
 * the losses perf reports itself it has already counted (4.x kernels return 0 then). */
static __always_inline int flush(void *ctx)
{
	__u32 zero = 0;
	struct outbox *o = bpf_map_lookup_elem(&outbox, &zero);
	__u32 size;
	long err;

	if (!o || !o->size)
		return 0;
	size = o->size & (OUTBOX_SIZE - 1);
	o->size = 0;
	err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, o->b, size);
	if (err) {
		count(o->drop_stat);
		if (err == -PERF_ENOSPC)
			count(VIGIL_STAT_PERF_FULL);
	}
	return 0;
}
#else
static __always_inline void submit_max(void *ev, __u32 size, const __u32 max, __u32 drop_stat)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size >= cfg_wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (size > max)
		return;
	if (bpf_ringbuf_output(&events, ev, size, flags))
		count(drop_stat);
}

/* Ring buffer records are sent by submit_max() itself. */
static __always_inline int flush(void *ctx)
{
	return 0;
}
#endif

/* submit_max(ev, size, max, ...) sends at most `max` bytes, the size of the memory `ev` is in
 * (the verifier checks it): EVBUF_SIZE for file events, which may sit in a parking map;
 * RECBUF_SIZE for an exec record, built in ev_scratch only. */
static __always_inline void submit(void *ev, __u32 size, __u32 drop_stat)
{
	submit_max(ev, size, EVBUF_SIZE, drop_stat);
}

/* Every record starts with a header and the acting process. */
struct ev_common {
	struct vigil_hdr hdr;
	struct vigil_proc proc;
};

static __always_inline void *new_event(__u16 kind)
{
	__u32 zero = 0;
	struct ev_common *e = bpf_map_lookup_elem(&ev_scratch, &zero);

	if (!e)
		return NULL;
	e->hdr.kind = kind;
	e->hdr.flags = 0;
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	fill_proc(&e->proc);
	return e;
}

/* Appends pb->d[0..len) to the file event's data at offset `at`. */
static __always_inline void put_path(struct vigil_file_event *e, __u32 at, struct pathbuf *pb,
				     __u32 len)
{
	at = clamp_len(at);
	len = clamp_len(len);
	bpf_probe_read_kernel(&e->data[at], len, pb->d);
}

static __always_inline void file_event_init(struct vigil_file_event *e, struct inflight *in, long ret)
{
	e->op = in->op;
	e->ret = ret < 0 ? ret : 0;
	e->mode = in->mode;
	e->owner_uid = in->uid;
	e->owner_gid = in->gid;
	e->oflags = in->flags;
	e->ino = 0;
	e->file_id = 0;
	e->dev = 0;
	e->path_len = 0;
	e->path2_len = 0;
}

static __always_inline void set_inode(struct vigil_file_event *e, struct inode *inode)
{
	e->ino = KREAD(inode, i_ino);
	e->dev = KREAD(inode, i_sb, s_dev);
}

static __always_inline void send_file(struct vigil_file_event *e, __u16 flags)
{
	__u32 size = sizeof(struct vigil_file_event) + e->path_len + e->path2_len;

	e->hdr.flags |= flags;
	e->hdr.size = size;
	submit(e, size, VIGIL_STAT_DROP_FILE);
}

/* A watched file's event from its struct file (open, close, f* syscalls). */
static __noinline int emit_for_file(struct inflight *in, long ret, struct file *f, __u64 file_id,
				    __u16 flags)
{
	__u32 zero = 0;
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	__u32 len;

	if (!wb || !pb || !f)
		return 0;
	len = path_of(pb, wb, KADDR(f, f_path), &flags);
	if (!is_watched(pb, len) && !(flags & VIGIL_F_PATH_TRUNC))
		return 0;

	struct vigil_file_event *e = new_event(VIGIL_EV_FILE);

	if (!e)
		return 0;
	file_event_init(e, in, ret);
	set_inode(e, KREAD(f, f_inode));
	if (in->op == VIGIL_OP_OPEN_WRITE)	/* what the file got, umask and ACLs applied */
		e->mode = KREAD(f, f_inode, i_mode) & 07777;
	e->file_id = file_id;
	len = clamp_len(len);
	put_path(e, 0, pb, len);
	e->path_len = len;
	if (in->path2) {	/* f*xattr: the attribute's name */
		long n = bpf_probe_read_user_str(pb->d, VIGIL_PATH_MAX, (const char *)in->path2);

		e->path2_len = n > 1 ? n - 1 : 0;
		put_path(e, len, pb, e->path2_len);
	}
	send_file(e, flags);
	return 1;
}

/* A watched path's event from path strings (unlink, rename, chmod, failed opens, ...), built in
 * ev_scratch but not sent: NULL when nothing is watched. The strings are syscall arguments in
 * user memory or, with kstr, io_uring's copies in kernel memory. */
static __always_inline struct vigil_file_event *build_for_strs(struct inflight *in, long ret,
								const int kstr)
{
	__u32 zero = 0;
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	__u16 flags = 0, flags2 = 0;
	__u32 len, len2 = 0;
	int hit;

	if (!wb || !pb)
		return NULL;
	if (kstr)
		len = path_of_karg(pb, wb, in->dfd1, (const char *)in->path1, &flags);
	else
		len = path_of_arg(pb, wb, in->dfd1, (const char *)in->path1, &flags);
	hit = is_watched(pb, len) || (flags & (VIGIL_F_UNNORMALIZED | VIGIL_F_PATH_TRUNC));
	if (!hit && in->kind == SC_SYMLINK && ret == 0) {
		/* A new symlink anywhere may lead into a watched tree; later operations through it
		 * would be matched by their text alone. Rare enough to send every one. */
		hit = 1;
		flags |= VIGIL_F_LINK_ANYWHERE;
	}
	if (!hit && in->kind != SC_PATH2)
		return NULL;

	struct vigil_file_event *e = bpf_map_lookup_elem(&ev_scratch, &zero);

	if (!e)
		return NULL;
	len = clamp_len(len);
	put_path(e, 0, pb, len);	/* kept aside: the second path reuses pb */

	if (in->kind == SC_PATH2) {
		if (kstr)
			len2 = path_of_karg(pb, wb, in->dfd2, (const char *)in->path2, &flags2);
		else
			len2 = path_of_arg(pb, wb, in->dfd2, (const char *)in->path2, &flags2);
		hit |= is_watched(pb, len2) ||
		       (flags2 & (VIGIL_F_UNNORMALIZED | VIGIL_F_PATH_TRUNC));
	} else if (in->kind == SC_SYMLINK || in->path2) {
		/* the symlink's content or the xattr name: a plain string, not resolved */
		long n = kstr ? bpf_probe_read_kernel_str(pb->d, VIGIL_PATH_MAX,
							  (const char *)in->path2)
			      : bpf_probe_read_user_str(pb->d, VIGIL_PATH_MAX, (const char *)in->path2);

		len2 = n > 1 ? n - 1 : 0;
	}
	if (!hit)
		return NULL;
	len2 = clamp_len(len2);
	put_path(e, len, pb, len2);

	e->hdr.kind = VIGIL_EV_FILE;
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	fill_proc(&e->proc);
	file_event_init(e, in, ret);
	e->path_len = len;
	e->path2_len = len2;
	if (flags2 & VIGIL_F_PATH_TRUNC)
		flags |= VIGIL_F_PATH2_TRUNC;
	e->hdr.flags = flags | (flags2 & VIGIL_F_UNNORMALIZED);
	return e;
}

/* A watched path's event from syscall arguments, sent. */
static __noinline int emit_for_args(struct inflight *in, long ret)
{
	struct vigil_file_event *e = build_for_strs(in, ret, 0);

	if (!e)
		return 0;
	send_file(e, 0);
	return 1;
}

/* ---- write tracking: open-for-write ... close ------------------------------------------- */

static __always_inline long file_refs(struct file *f)
{
	if (bpf_core_field_exists(f->f_ref))	/* file_ref_t counts from 0 for one reference */
		return KREAD(f, f_ref.refcnt.counter) + 1;
	return KREAD(f, f_count.counter);
}

static __always_inline void track_write(struct file *f)
{
	__u64 key = (__u64)f;
	struct wfile w = {
		.inode = (__u64)KREAD(f, f_inode),
		.tgid = bpf_get_current_pid_tgid() >> 32,
	};
	__u32 one = 1, *n;

	if (lru_insert(&wfiles, &key, &w, VIGIL_STAT_WFILES_NEW)) {
		count(VIGIL_STAT_WFILES_FULL);
		return;
	}
	n = bpf_map_lookup_elem(&wpending, &w.tgid);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&wpending, &w.tgid, &one, BPF_ANY);
}

/* fd is being closed (close, or replaced by dup2/dup3). The last reference means "modified".
 * Runs as its own program, reached by tail call only for files we track. */
static __always_inline int on_close(int fd)
{
	struct file *f = fd_file(fd);
	__u64 key = (__u64)f;
	struct wfile *w;

	if (!f)
		return 0;
	w = bpf_map_lookup_elem(&wfiles, &key);
	if (!w)
		return 0;
	if (w->inode != (__u64)KREAD(f, f_inode)) {
		lru_delete(&wfiles, &key, VIGIL_STAT_WFILES_DEL);	/* a recycled struct file */
		return 0;
	}
	if (file_refs(f) > 1)
		return 0;	/* another fd or process still holds it: wait for the last close */

	__u32 tgid = w->tgid, *n = bpf_map_lookup_elem(&wpending, &tgid);

	if (n && *n > 0)
		__sync_fetch_and_add(n, -1);
	lru_delete(&wfiles, &key, VIGIL_STAT_WFILES_DEL);

	struct inflight in = { .op = VIGIL_OP_MODIFY, .flags = KREAD(f, f_flags) };

	return emit_for_file(&in, 0, f, key, 0);
}

/* ---- the generic enter/exit pair ------------------------------------------------------- */

static __always_inline int remember(struct inflight *in)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (cfg_self_tgid && (id >> 32) == cfg_self_tgid)
		return 0;
	if (bpf_map_update_elem(&inflight, &id, in, BPF_ANY))
		count(VIGIL_STAT_INFLIGHT_FULL);
	return 0;
}

static __always_inline int errno_reported(long ret)
{
	if (ret >= 0)
		return 1;
	if (-ret >= 64)
		return 0;
	return (cfg_failed_errnos >> (-ret)) & 1;
}

static __noinline int on_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *p = bpf_map_lookup_elem(&inflight, &id);
	struct inflight in;

	if (!p)
		return 0;
	in = *p;
	bpf_map_delete_elem(&inflight, &id);
	if (!errno_reported(ret))
		return 0;

	if (in.kind == SC_OPEN) {
		if (ret < 0) {
			if (!in.path1)
				return 0;
			in.op = VIGIL_OP_OPEN;
			return emit_for_args(&in, ret);
		}
		struct file *f = fd_file(ret);

		if (!f)
			return 0;
		if (!(KREAD(f, f_mode) & cfg_fmode_write))
			return 0;	/* O_CREAT without write access: nothing to track */
		in.op = VIGIL_OP_OPEN_WRITE;
		__u16 created = (KREAD(f, f_mode) & cfg_fmode_created) ? VIGIL_F_CREATED : 0;

		if (!emit_for_file(&in, 0, f, (__u64)f, created))
			return 0;
		track_write(f);
		return 0;
	}
	if (in.kind == SC_FD) {
		if (ret < 0)
			return 0;	/* failed f* calls on an fd already open: not an attempt on a path */
		return emit_for_file(&in, ret, fd_file(in.dfd1), 0, 0);
	}
	return emit_for_args(&in, ret);
}

/* The heavy handlers are verified once, as programs of their own, and reached from the small
 * per-syscall programs by tail call (verifying them inline in ~45 exit programs took the
 * verifier most of a minute). */
SEC("tracepoint")
int handle_sys_exit(struct trace_event_raw_sys_exit *ctx)
{
	/* not ctx->ret: libbpf cannot narrow a direct load of a signed long (32-bit kernels) */
	int ret = on_exit(KREAD(ctx, ret));

	flush(ctx);
	return ret;
}

struct close_arg {
	__s32 fd;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct close_arg);
} close_scratch SEC(".maps");

SEC("tracepoint")
int handle_close(void *ctx)
{
	__u32 zero = 0;
	struct close_arg *a = bpf_map_lookup_elem(&close_scratch, &zero);
	int ret = a ? on_close(a->fd) : 0;

	flush(ctx);
	return ret;
}

/* io_uring submissions, below. */
int handle_uring_submit(void *ctx);

enum { H_SYS_EXIT = 0, H_CLOSE = 1, H_URING_SUBMIT = 2 };

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__array(values, int (void *));
} handlers SEC(".maps") = {
	.values = {
		[H_SYS_EXIT] = (void *)&handle_sys_exit,
		[H_CLOSE] = (void *)&handle_close,
		[H_URING_SUBMIT] = (void *)&handle_uring_submit,
	},
};

/* Cheap test first: most closes are of files nobody tracks. */
static __always_inline int closing(void *ctx, int fd)
{
	__u32 zero = 0;
	struct file *f = fd_file(fd);
	__u64 key = (__u64)f;
	struct close_arg *a;

	if (!f || !bpf_map_lookup_elem(&wfiles, &key))
		return 0;
	a = bpf_map_lookup_elem(&close_scratch, &zero);
	if (!a)
		return 0;
	a->fd = fd;
	bpf_tail_call(ctx, &handlers, H_CLOSE);
	return 0;
}

#define ENTER(sc) SEC("tracepoint/syscalls/sys_enter_" #sc) \
	int enter_##sc(struct trace_event_raw_sys_enter *ctx)
#define EXIT(sc) SEC("tracepoint/syscalls/sys_exit_" #sc) \
	int exit_##sc(void *ctx) { bpf_tail_call(ctx, &handlers, H_SYS_EXIT); return 0; }
#define ARG(n) (ctx->args[n])

static __always_inline int remember_open(int dfd, __u64 path, __u32 flags, __u32 mode)
{
	if ((flags & O_ACCMODE) == 0 && !(flags & (O_CREAT | O_TRUNC)))
		return 0;	/* read-only: never pays for more than this test */
	struct inflight in = { .kind = SC_OPEN, .dfd1 = dfd, .path1 = path, .flags = flags,
			       .mode = mode & 07777 };
	return remember(&in);
}

ENTER(open) { return remember_open(AT_FDCWD, ARG(0), ARG(1), ARG(2)); }
EXIT(open)
ENTER(openat) { return remember_open(ARG(0), ARG(1), ARG(2), ARG(3)); }
EXIT(openat)
ENTER(creat) { return remember_open(AT_FDCWD, ARG(0), O_CREAT | O_WRONLY | O_TRUNC, ARG(1)); }
EXIT(creat)
ENTER(openat2)
{
	struct open_how how = {};

	bpf_probe_read_user(&how, sizeof(how), (void *)ARG(2));
	return remember_open(ARG(0), ARG(1), how.flags, how.mode);
}
EXIT(openat2)
ENTER(open_by_handle_at) { return remember_open(AT_FDCWD, 0, ARG(2), 0); }
EXIT(open_by_handle_at)

ENTER(close) { return closing(ctx, ARG(0)); }
ENTER(dup2) { return ARG(0) == ARG(1) ? 0 : closing(ctx, ARG(1)); }
ENTER(dup3) { return closing(ctx, ARG(1)); }

static __always_inline int remember_path(__u32 op, int dfd, __u64 path, __u32 mode, __u32 uid,
					 __u32 gid, __u32 flags, __u64 path2)
{
	struct inflight in = { .kind = SC_PATH, .op = op, .dfd1 = dfd, .path1 = path,
			       .mode = mode, .uid = uid, .gid = gid, .flags = flags,
			       .path2 = path2 };
	return remember(&in);
}

static __always_inline int remember_fd(__u32 op, int fd, __u32 mode, __u32 uid, __u32 gid,
				       __u64 name)
{
	struct inflight in = { .kind = SC_FD, .op = op, .dfd1 = fd, .mode = mode, .uid = uid,
			       .gid = gid, .path2 = name };
	return remember(&in);
}

/* The mode a new directory or node gets: permission bits less the task's umask (a default
 * ACL on the parent would override it; then this is what was asked, not what was given). */
static __always_inline __u32 umasked(__u32 mode)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u32 umask = KREAD(t, fs, umask);

	return (mode & ~07777) | (mode & 07777 & ~umask);
}

static __always_inline int remember_path2(__u32 kind, __u32 op, int dfd1, __u64 p1, int dfd2,
					  __u64 p2, __u32 flags)
{
	struct inflight in = { .kind = kind, .op = op, .dfd1 = dfd1, .path1 = p1, .dfd2 = dfd2,
			       .path2 = p2, .flags = flags };
	return remember(&in);
}

#define NO_ID ((__u32)-1)

ENTER(unlink) { return remember_path(VIGIL_OP_DELETE, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, 0); }
EXIT(unlink)
ENTER(unlinkat)
{
	__u32 op = (ARG(2) & AT_REMOVEDIR) ? VIGIL_OP_RMDIR : VIGIL_OP_DELETE;

	return remember_path(op, ARG(0), ARG(1), 0, NO_ID, NO_ID, ARG(2), 0);
}
EXIT(unlinkat)
ENTER(rmdir) { return remember_path(VIGIL_OP_RMDIR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, 0); }
EXIT(rmdir)

ENTER(rename) { return remember_path2(SC_PATH2, VIGIL_OP_RENAME, AT_FDCWD, ARG(0), AT_FDCWD, ARG(1), 0); }
EXIT(rename)
ENTER(renameat) { return remember_path2(SC_PATH2, VIGIL_OP_RENAME, ARG(0), ARG(1), ARG(2), ARG(3), 0); }
EXIT(renameat)
ENTER(renameat2) { return remember_path2(SC_PATH2, VIGIL_OP_RENAME, ARG(0), ARG(1), ARG(2), ARG(3), ARG(4)); }
EXIT(renameat2)
ENTER(link) { return remember_path2(SC_PATH2, VIGIL_OP_LINK, AT_FDCWD, ARG(0), AT_FDCWD, ARG(1), 0); }
EXIT(link)
ENTER(linkat) { return remember_path2(SC_PATH2, VIGIL_OP_LINK, ARG(0), ARG(1), ARG(2), ARG(3), ARG(4)); }
EXIT(linkat)
/* symlink(target, linkpath): the new name is path1, the (unresolved) target path2 */
ENTER(symlink) { return remember_path2(SC_SYMLINK, VIGIL_OP_SYMLINK, AT_FDCWD, ARG(1), 0, ARG(0), 0); }
EXIT(symlink)
ENTER(symlinkat) { return remember_path2(SC_SYMLINK, VIGIL_OP_SYMLINK, ARG(1), ARG(2), 0, ARG(0), 0); }
EXIT(symlinkat)

ENTER(mkdir) { return remember_path(VIGIL_OP_MKDIR, AT_FDCWD, ARG(0), umasked(ARG(1)), NO_ID, NO_ID, 0, 0); }
EXIT(mkdir)
ENTER(mkdirat) { return remember_path(VIGIL_OP_MKDIR, ARG(0), ARG(1), umasked(ARG(2)), NO_ID, NO_ID, 0, 0); }
EXIT(mkdirat)
ENTER(mknod) { return remember_path(VIGIL_OP_MKNOD, AT_FDCWD, ARG(0), umasked(ARG(1)), NO_ID, NO_ID, 0, 0); }
EXIT(mknod)
ENTER(mknodat) { return remember_path(VIGIL_OP_MKNOD, ARG(0), ARG(1), umasked(ARG(2)), NO_ID, NO_ID, 0, 0); }
EXIT(mknodat)

ENTER(chmod) { return remember_path(VIGIL_OP_CHMOD, AT_FDCWD, ARG(0), ARG(1), NO_ID, NO_ID, 0, 0); }
EXIT(chmod)
ENTER(fchmodat) { return remember_path(VIGIL_OP_CHMOD, ARG(0), ARG(1), ARG(2), NO_ID, NO_ID, 0, 0); }
EXIT(fchmodat)
ENTER(fchmodat2) { return remember_path(VIGIL_OP_CHMOD, ARG(0), ARG(1), ARG(2), NO_ID, NO_ID, ARG(3), 0); }
EXIT(fchmodat2)
ENTER(fchmod) { return remember_fd(VIGIL_OP_CHMOD, ARG(0), ARG(1), NO_ID, NO_ID, 0); }
EXIT(fchmod)

ENTER(chown) { return remember_path(VIGIL_OP_CHOWN, AT_FDCWD, ARG(0), 0, ARG(1), ARG(2), 0, 0); }
EXIT(chown)
ENTER(lchown) { return remember_path(VIGIL_OP_CHOWN, AT_FDCWD, ARG(0), 0, ARG(1), ARG(2), 0x100, 0); }
EXIT(lchown)
ENTER(fchownat) { return remember_path(VIGIL_OP_CHOWN, ARG(0), ARG(1), 0, ARG(2), ARG(3), ARG(4), 0); }
EXIT(fchownat)
ENTER(fchown) { return remember_fd(VIGIL_OP_CHOWN, ARG(0), 0, ARG(1), ARG(2), 0); }
EXIT(fchown)

ENTER(truncate) { return remember_path(VIGIL_OP_TRUNCATE, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, 0); }
EXIT(truncate)
ENTER(ftruncate) { return remember_fd(VIGIL_OP_TRUNCATE, ARG(0), 0, NO_ID, NO_ID, 0); }
EXIT(ftruncate)

/* xattr syscalls: path2 carries the attribute name */
ENTER(setxattr) { return remember_path(VIGIL_OP_SETXATTR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, ARG(1)); }
EXIT(setxattr)
ENTER(lsetxattr) { return remember_path(VIGIL_OP_SETXATTR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0x100, ARG(1)); }
EXIT(lsetxattr)
ENTER(fsetxattr) { return remember_fd(VIGIL_OP_SETXATTR, ARG(0), 0, NO_ID, NO_ID, ARG(1)); }
EXIT(fsetxattr)
ENTER(setxattrat) { return remember_path(VIGIL_OP_SETXATTR, ARG(0), ARG(1), 0, NO_ID, NO_ID, ARG(2), ARG(3)); }
EXIT(setxattrat)
ENTER(removexattr) { return remember_path(VIGIL_OP_REMOVEXATTR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, ARG(1)); }
EXIT(removexattr)
ENTER(lremovexattr) { return remember_path(VIGIL_OP_REMOVEXATTR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0x100, ARG(1)); }
EXIT(lremovexattr)
ENTER(fremovexattr) { return remember_fd(VIGIL_OP_REMOVEXATTR, ARG(0), 0, NO_ID, NO_ID, ARG(1)); }
EXIT(fremovexattr)
ENTER(removexattrat) { return remember_path(VIGIL_OP_REMOVEXATTR, ARG(0), ARG(1), 0, NO_ID, NO_ID, ARG(2), ARG(3)); }
EXIT(removexattrat)

/* ---- io_uring ----------------------------------------------------------------------------
 *
 * io_uring runs file operations without a file syscall. What the tracepoint backend sees of
 * them comes from io_uring's own tracepoints: at submission (io_uring_submit_req, called
 * io_uring_submit_sqe on older kernels; user space loads the one that exists) the request's
 * opcode and the path strings its prep step copied into the kernel (struct filename) are read
 * from struct io_kiocb; a watched path's event is built there, while the names still name what
 * they named, by the submitting task, and parked under the request's address; the completion
 * (io_uring_complete) sends it with the result. A write-open is finished from the fd the
 * completion returns, like the openat syscall's exit, and tracked, so that a later close (the
 * syscall, or IORING_OP_CLOSE here) says "modified". Kernels whose completion record does not
 * name the request (5.10) are not served: both programs return at once (a CO-RE test). */

#define IORING_OP_OPENAT 18
#define IORING_OP_CLOSE 19
#define IORING_OP_OPENAT2 28
#define IORING_OP_RENAMEAT 35
#define IORING_OP_UNLINKAT 36
#define IORING_OP_MKDIRAT 37
#define IORING_OP_SYMLINKAT 38
#define IORING_OP_LINKAT 39

/* Events of watched paths waiting for their request's completion. The values are whole
 * records, so the map allocates as it fills; a full map fails the update, which is counted.
 * A request submitted with IOSQE_CQE_SKIP_SUCCESS that succeeds has no completion: its entry
 * stays until the request's memory is reused (then it is replaced or dropped, see below). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);		/* struct io_kiocb * */
	__type(value, struct evbuf);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} uring_parked SEC(".maps");

/* Requests waiting for their completion: parked events, and write-opens (their path comes from
 * the opened file, not the string). The opcode tells, at completion, a request from a later
 * one that reuses its memory. An LRU: entries whose completion never came age out. */
struct uring_req {
	__u32 opcode;
	__u32 oflags;			/* openat: the open flags */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);		/* struct io_kiocb * */
	__type(value, struct uring_req);
} uring_reqs SEC(".maps");

static __always_inline int uring_served(void)
{
	return bpf_core_field_exists(struct trace_event_raw_io_uring_complete, req);
}

/* Where the per-opcode data (struct io_open, io_rename, ...) starts in a request. */
static __always_inline void *uring_op_data(struct io_kiocb *req)
{
	if (bpf_core_field_exists(req->cmd))
		return (void *)req + bpf_core_field_offset(req->cmd);
	return (void *)req + bpf_core_field_offset(struct io_kiocb___union, open);
}

static __always_inline __u64 fname(struct filename *f)
{
	return (__u64)KREAD(f, name);
}

/* symlinkat and linkat: struct io_link, or before it io_symlink and io_hardlink. */
static __always_inline void uring_link(struct inflight *in, void *data, int symlink)
{
	if (bpf_core_type_exists(struct io_link)) {
		struct io_link *l = data;

		in->dfd1 = KREAD(l, new_dfd);
		in->path1 = fname(KREAD(l, newpath));
		in->path2 = fname(KREAD(l, oldpath));
		if (symlink)
			return;
		in->dfd2 = in->dfd1;
		in->dfd1 = KREAD(l, old_dfd);
		in->path2 = in->path1;
		in->path1 = fname(KREAD(l, oldpath));
		in->flags = KREAD(l, flags);
	} else if (symlink) {
		struct io_symlink *l = data;

		in->dfd1 = KREAD(l, new_dfd);
		in->path1 = fname(KREAD(l, newpath));
		in->path2 = fname(KREAD(l, oldpath));
	} else {
		struct io_hardlink *l = data;

		in->dfd1 = KREAD(l, old_dfd);
		in->path1 = fname(KREAD(l, oldpath));
		in->dfd2 = KREAD(l, new_dfd);
		in->path2 = fname(KREAD(l, newpath));
		in->flags = KREAD(l, flags);
	}
}

static __always_inline int on_uring_submit(struct io_kiocb *req)
{
	__u64 key = (__u64)req;
	struct inflight in = { .uid = NO_ID, .gid = NO_ID };
	struct uring_req r = {};
	void *data = uring_op_data(req);
	__u8 opcode = KREAD(req, opcode);

	switch (opcode) {
	case IORING_OP_OPENAT:
	case IORING_OP_OPENAT2: {
		struct io_open *o = data;
		__u32 flags = KREAD(o, how.flags);

		if ((flags & O_ACCMODE) == 0 && !(flags & (O_CREAT | O_TRUNC)))
			return 0;
		if (KREAD(o, file_slot))
			return 0;	/* into a fixed-file slot: no fd to follow */
		r.oflags = flags;
		in.kind = SC_OPEN;
		in.op = VIGIL_OP_OPEN;
		in.uid = in.gid = 0;
		in.dfd1 = KREAD(o, dfd);
		in.path1 = fname(KREAD(o, filename));
		in.flags = flags;
		in.mode = KREAD(o, how.mode) & 07777;
		break;
	}
	case IORING_OP_UNLINKAT: {
		struct io_unlink *u = data;

		in.kind = SC_PATH;
		in.flags = KREAD(u, flags);
		in.op = (in.flags & AT_REMOVEDIR) ? VIGIL_OP_RMDIR : VIGIL_OP_DELETE;
		in.dfd1 = KREAD(u, dfd);
		in.path1 = fname(KREAD(u, filename));
		break;
	}
	case IORING_OP_MKDIRAT: {
		struct io_mkdir *m = data;

		in.kind = SC_PATH;
		in.op = VIGIL_OP_MKDIR;
		in.dfd1 = KREAD(m, dfd);
		in.path1 = fname(KREAD(m, filename));
		in.mode = umasked(KREAD(m, mode));
		break;
	}
	case IORING_OP_RENAMEAT: {
		struct io_rename *rn = data;

		in.kind = SC_PATH2;
		in.op = VIGIL_OP_RENAME;
		in.dfd1 = KREAD(rn, old_dfd);
		in.path1 = fname(KREAD(rn, oldpath));
		in.dfd2 = KREAD(rn, new_dfd);
		in.path2 = fname(KREAD(rn, newpath));
		in.flags = KREAD(rn, flags);
		break;
	}
	case IORING_OP_SYMLINKAT:
		in.kind = SC_SYMLINK;
		in.op = VIGIL_OP_SYMLINK;
		uring_link(&in, data, 1);
		break;
	case IORING_OP_LINKAT:
		in.kind = SC_PATH2;
		in.op = VIGIL_OP_LINK;
		uring_link(&in, data, 0);
		break;
	default:
		return 0;
	}
	r.opcode = opcode;

	struct vigil_file_event *e = in.path1 ? build_for_strs(&in, 0, 1) : NULL;

	if (e) {
		e->hdr.size = sizeof(struct vigil_file_event) + e->path_len + e->path2_len;
		if (bpf_map_update_elem(&uring_parked, &key, e, BPF_ANY)) {
			count(VIGIL_STAT_INFLIGHT_FULL);
			e = NULL;
		}
	} else {
		bpf_map_delete_elem(&uring_parked, &key);	/* an earlier request's, if any */
	}
	if (e || r.opcode == IORING_OP_OPENAT || r.opcode == IORING_OP_OPENAT2) {
		if (lru_insert(&uring_reqs, &key, &r, VIGIL_STAT_URING_NEW))
			count(VIGIL_STAT_INFLIGHT_FULL);
	}
	return 0;
}

/* Each submission program loads only where its tracepoint exists (user space checks); the
 * type test keeps the other's record layout out of kernels that lack it. */
struct uring_arg {
	__u64 req;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct uring_arg);
} uring_scratch SEC(".maps");

/* A submission: a close must find its file now, before the kernel closes it (closing() tail
 * calls handle_close when it is tracked); anything else is parked by handle_uring_submit,
 * reached by tail call too. So the tracepoint programs themselves make no BPF-to-BPF call: a
 * program with both is refused by the kernel's interpreter and by the 32-bit JITs (armhf, i386
 * load none of them otherwise). */
static __always_inline int uring_submitted(void *ctx, struct io_kiocb *req)
{
	__u32 zero = 0;
	struct uring_arg *a;

	if (!uring_served() || !req)
		return 0;
	if (cfg_self_tgid && (bpf_get_current_pid_tgid() >> 32) == cfg_self_tgid)
		return 0;
	if (KREAD(req, opcode) == IORING_OP_CLOSE) {
		struct io_close *c = uring_op_data(req);

		if (KREAD(c, file_slot))
			return 0;	/* a fixed-file slot */
		return closing(ctx, KREAD(c, fd));
	}
	a = bpf_map_lookup_elem(&uring_scratch, &zero);
	if (!a)
		return 0;
	a->req = (__u64)req;
	bpf_tail_call(ctx, &handlers, H_URING_SUBMIT);
	return 0;
}

SEC("tracepoint")
int handle_uring_submit(void *ctx)
{
	__u32 zero = 0;
	struct uring_arg *a = bpf_map_lookup_elem(&uring_scratch, &zero);

	return a ? on_uring_submit((struct io_kiocb *)a->req) : 0;
}

SEC("tracepoint/io_uring/io_uring_submit_req")
int uring_submit_req(struct trace_event_raw_io_uring_submit_req *ctx)
{
	if (!bpf_core_type_exists(struct trace_event_raw_io_uring_submit_req))
		return 0;
	return uring_submitted(ctx, ctx->req);
}

SEC("tracepoint/io_uring/io_uring_submit_sqe")
int uring_submit_sqe(struct trace_event_raw_io_uring_submit_sqe *ctx)
{
	if (!bpf_core_type_exists(struct trace_event_raw_io_uring_submit_sqe))
		return 0;
	return uring_submitted(ctx, ctx->req);
}

static __always_inline int on_uring_complete(struct io_kiocb *req, int res)
{
	__u64 key = (__u64)req;
	struct uring_req *p = bpf_map_lookup_elem(&uring_reqs, &key);
	struct uring_req r;

	if (!p)
		return 0;	/* most completions: one lookup */
	r = *p;
	lru_delete(&uring_reqs, &key, VIGIL_STAT_URING_DEL);
	if (KREAD(req, opcode) != r.opcode) {
		bpf_map_delete_elem(&uring_parked, &key);	/* left by a request never completed */
		return 0;
	}
	if (r.opcode == IORING_OP_OPENAT || r.opcode == IORING_OP_OPENAT2) {
		struct inflight in = { .op = VIGIL_OP_OPEN_WRITE, .flags = r.oflags };

		if (res >= 0) {
			struct file *f = fd_file(res);

			bpf_map_delete_elem(&uring_parked, &key);
			if (!f || !(KREAD(f, f_mode) & cfg_fmode_write))
				return 0;
			__u16 created = (KREAD(f, f_mode) & cfg_fmode_created) ?
					VIGIL_F_CREATED : 0;

			if (emit_for_file(&in, 0, f, (__u64)f, created))
				track_write(f);
			return 0;
		}
	}

	struct vigil_file_event *e = bpf_map_lookup_elem(&uring_parked, &key);

	if (!e)
		return 0;
	/* a symlink sent only because it may lead somewhere watched: not if it was not made */
	if (errno_reported(res) && !(res < 0 && (e->hdr.flags & VIGIL_F_LINK_ANYWHERE))) {
		e->ret = res < 0 ? res : 0;
		e->hdr.ktime_ns = bpf_ktime_get_ns();
		submit(e, e->hdr.size, VIGIL_STAT_DROP_FILE);
	}
	bpf_map_delete_elem(&uring_parked, &key);
	return 0;
}

SEC("tracepoint/io_uring/io_uring_complete")
int uring_complete(struct trace_event_raw_io_uring_complete *ctx)
{
	int ret;

	if (!uring_served())
		return 0;
	ret = on_uring_complete(ctx->req, ctx->res);
	flush(ctx);
	return ret;
}

/* The LSM, fentry and kprobe backends: hooks on the VFS (vfs.bpf.h). */
#include "vfs.bpf.h"

/* ---- processes ------------------------------------------------------------------------- */

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u32 zero = 0;
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	struct vigil_exec_event *e;
	__u16 flags = 0, cwd_flags = 0;
	__u32 len = 0, alen, clen = 0, at;
	unsigned long astart, aend;

	if (!wb || !pb)
		return 0;
	struct file *exe = KREAD(t, mm, exe_file);

	if (exe)
		len = path_of(pb, wb, KADDR(exe, f_path), &flags);
	e = new_event(VIGIL_EV_EXEC);
	if (!e)
		return 0;
	len = clamp_len(len);
	bpf_probe_read_kernel(e->data, len, pb->d);
	e->exe_len = len;

	astart = KREAD(t, mm, arg_start);
	aend = KREAD(t, mm, arg_end);
	alen = aend > astart ? aend - astart : 0;
	if (alen > LEN_MAX)
		flags |= VIGIL_F_ARGS_TRUNC;
	alen = clamp_len(alen);	/* argv is kept up to the same 4095 bytes as a path */
	if (bpf_probe_read_user(&e->data[len], alen, (void *)astart))
		alen = 0;
	e->args_len = alen;

	/* The working directory the program starts in (Sigma's CurrentDirectory), walked like
	 * any path: one the walk had to cut is flagged on its own (the executable's flag is
	 * PATH_TRUNC). A task without an fs_struct has none to report: cwd_len 0. */
	struct fs_struct *fs = KREAD(t, fs);

	if (fs) {
		clen = path_of(pb, wb, KADDR(fs, pwd), &cwd_flags);
		if (cwd_flags & VIGIL_F_PATH_TRUNC)
			flags |= VIGIL_F_CWD_TRUNC;
	}
	at = len + alen;
	asm volatile("" : "+r"(at));	/* keep clang from dropping the mask as redundant */
	at &= 2 * VIGIL_PATH_MAX - 1;	/* two parts of at most LEN_MAX bytes each */
	clen = clamp_len(clen);
	bpf_probe_read_kernel(&e->data[at], clen, pb->d);
	e->cwd_len = clen;
	e->_reserved = 0;
	e->hdr.flags = flags;
	e->hdr.size = sizeof(struct vigil_exec_event) + len + alen + clen;
	submit_max(e, e->hdr.size, RECBUF_SIZE, VIGIL_STAT_DROP_EXEC);
	return flush(ctx);
}

SEC("tracepoint/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 *held;
	__u16 flags = 0;

	/* every thread's exit: a VFS capture it parked and no commit sent goes with it */
	bpf_map_delete_elem(&pending, &id);
	if (KREAD(t, signal, live.counter) != 0)
		return 0;	/* other threads remain: not the process's exit */
	held = cfg_close_at_fput ? NULL : bpf_map_lookup_elem(&wpending, &tgid);
	if (held) {
		if (*held)
			flags |= VIGIL_F_PENDING_WRITES;
		bpf_map_delete_elem(&wpending, &tgid);
	}
	struct vigil_exit_event *e = new_event(VIGIL_EV_EXIT);

	if (!e)
		return 0;
	e->exit_code = KREAD(t, exit_code);
	e->_reserved = 0;
	e->hdr.flags = flags;
	e->hdr.size = sizeof(struct vigil_exit_event);
	submit(e, sizeof(struct vigil_exit_event), VIGIL_STAT_DROP_EXIT);
	return flush(ctx);
}

/* Anchors: put every record type into the object's BTF, so user space can check its mirror of
 * the layout against what was compiled (tests/unit/test_layout.py). Never read. */
struct vigil_file_event *const volatile anchor_file_event;
struct vigil_exec_event *const volatile anchor_exec_event;
struct vigil_exit_event *const volatile anchor_exit_event;
struct vigil_watch_key *const volatile anchor_watch_key;
struct vigil_watch_val *const volatile anchor_watch_val;
