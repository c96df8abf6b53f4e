/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The syscall-tracepoint backend's file syscalls.
 *
 * Shape: every file syscall has an enter program that remembers its arguments (keyed by thread)
 * and an exit program that, knowing the result, resolves the path from kernel objects (the
 * opened file, the dirfd's file, the task's cwd or root), matches it against the watch list (an
 * LPM trie) and only then builds and sends an event. Read-only opens return at enter; calls on
 * path strings whose paths are not watched too (handle_enter_path).
 *
 * Here: the tail-call table `handlers`, the remember_*() helpers that fill struct inflight at
 * enter, the heavy handlers of the file syscalls (handle_enter_path, handle_sys_exit,
 * handle_close; the table's others are with their parts), and closing(), the test that sends
 * the close of a tracked file to handle_close.
 */
#ifndef VIGIL_SYSCALLS_FILE_BPF_H
#define VIGIL_SYSCALLS_FILE_BPF_H

#include "file_event.bpf.h"

#define AT_REMOVEDIR 0x200
#define O_ACCMODE 00000003
#define O_WRONLY 00000001
#define O_RDWR 00000002
#define O_CREAT 00000100
#define O_TRUNC 00001000

/* The syscall's number in a syscalls:sys_{enter,exit}_* record: an int right after the common
 * fields (where raw_syscalls' records, the BTF type trace_event_raw_sys_enter, have a long, of
 * which it would be the wrong half on a big-endian kernel). */
static __always_inline __u32 syscall_nr(void *ctx)
{
	__s32 nr = -1;

	bpf_probe_read_kernel(&nr, sizeof(nr), ctx + bpf_core_type_size(struct trace_entry));
	return nr;
}

/* The tail-call table. Its handlers: the entries of the calls on path strings and the exits of
 * the file syscalls (handle_enter_path, handle_sys_exit, handle_close: below), io_uring
 * submissions (uring.bpf.h) and the exits of the network, credential and mount-like syscalls
 * (net.bpf.h, cred.bpf.h, sec.bpf.h), each verified once as a program of its own instead of once per syscall, which
 * made them most of the verifier's time at start-up. User space loads a handler only with a
 * program that calls it and fills its slot after the load (vigil/kernel/hooks.py:
 * TAIL_CALLS, the same slots): a backend that never reaches one does not verify it, and
 * libbpf cannot leave out a statically initialised slot whose program is not loaded. */
enum { H_SYS_EXIT = 0, H_CLOSE = 1, H_URING_SUBMIT = 2, H_NET_EXIT = 3, H_CRED_EXIT = 4,
       H_SEC_EXIT = 5, H_ENTER_PATH = 6, H_COUNT };

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, H_COUNT);
	__type(key, __u32);
	__type(value, __u32);
} handlers SEC(".maps");

/* Hands the program's work to the handler in `slot`; returns only if that failed, counted. */
static __always_inline void handoff(void *ctx, __u32 slot)
{
	bpf_tail_call(ctx, &handlers, slot);
	count(VIGIL_STAT_TAIL_CALL_FAILED);
}

/* Stores a call's arguments for its exit, under the thread. */
static __always_inline int stash(struct inflight *in)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (bpf_map_update_elem(&inflight, &id, in, BPF_ANY))
		count(VIGIL_STAT_INFLIGHT_FULL);
	return 0;
}

/* Leaves the arguments for the exit (not the agent's own calls). */
static __always_inline int remember(struct trace_event_raw_sys_enter *ctx, struct inflight *in)
{
	if (is_self())
		return 0;
	in->nr = syscall_nr(ctx);
	return stash(in);
}

/* A call on path strings, between its entry program and handle_enter_path (one per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inflight);
} enter_scratch SEC(".maps");

/* A call on path strings (unlink, rename, chmod, ...) is judged at entry by handle_enter_path:
 * when no path it names is watched, nothing goes in flight, which spares the call the map
 * update here and the lookup and delete at exit. One program, verified once (in each of ~30
 * entry programs the path code would be verified again). If the handler cannot be reached,
 * the call is stored and its exit judges, as for every other call. */
static __always_inline int remember_judged(struct trace_event_raw_sys_enter *ctx,
					   struct inflight *in)
{
	__u32 zero = 0;
	struct inflight *s;

	if (is_self())
		return 0;
	s = bpf_map_lookup_elem(&enter_scratch, &zero);
	if (s) {
		*s = *in;
		bpf_tail_call(ctx, &handlers, H_ENTER_PATH);
	}
	in->nr = syscall_nr(ctx);
	return stash(in);
}

/* 1 when the path (dfd, string) may be watched: it is, or it is not canonical, too long to
 * check, or unreadable now (at entry, a page not yet in memory: a BPF program cannot fault it
 * in; the kernel will, and the exit reads it). Built as the exit builds it (build_for_strs). */
static __always_inline int may_be_watched(struct pathbuf *pb, struct walkbuf *wb, int dfd,
					  __u64 path)
{
	__u16 flags = 0;
	__u32 len = path_of_arg(pb, wb, dfd, (const char *)path, &flags);

	return (flags & (VIGIL_F_UNNORMALIZED | VIGIL_F_PATH_TRUNC | F_UNREADABLE)) ||
	       is_watched(pb, len);
}

SEC("tracepoint")
int handle_enter_path(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero = 0;
	struct inflight *s = bpf_map_lookup_elem(&enter_scratch, &zero);
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	struct inflight in;

	if (!s)
		return 0;
	in = *s;
	if (wb && pb && !may_be_watched(pb, wb, in.dfd1, in.path1) &&
	    !(in.kind == SC_PATH2 && may_be_watched(pb, wb, in.dfd2, in.path2)))
		return 0;
	in.nr = syscall_nr(ctx);
	return stash(&in);
}

static __noinline int on_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *p = bpf_map_lookup_elem(&inflight, &id);
	struct inflight in;
	long ret;

	if (!p)
		return 0;
	in = *p;
	bpf_map_delete_elem(&inflight, &id);
	if (in.nr != syscall_nr(ctx))
		return 0;	/* another call's, whose exit was not seen (never expected) */
	/* not ctx->ret: libbpf cannot narrow a direct load of a signed long (32-bit kernels) */
	ret = KREAD(ctx, ret);
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
		__u32 fmode = KREAD(f, f_mode);

		if (!(fmode & cfg_fmode_write))
			return 0;	/* O_CREAT without write access: nothing to track */
		in.op = VIGIL_OP_OPEN_WRITE;
		__u16 created = (fmode & cfg_fmode_created) ? VIGIL_F_CREATED : 0;

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
	int ret = on_exit(ctx);

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
	handoff(ctx, H_CLOSE);
	return 0;
}

#define ENTER(sc) SEC("tracepoint/syscalls/sys_enter_" #sc) \
	int enter_##sc(struct trace_event_raw_sys_enter *ctx)
#define EXIT(sc) SEC("tracepoint/syscalls/sys_exit_" #sc) \
	int exit_##sc(void *ctx) { handoff(ctx, H_SYS_EXIT); return 0; }
#define ARG(n) (ctx->args[n])

static __always_inline int remember_open(struct trace_event_raw_sys_enter *ctx, int dfd,
					 __u64 path, __u32 flags, __u32 mode)
{
	if ((flags & O_ACCMODE) == 0 && !(flags & (O_CREAT | O_TRUNC)))
		return 0;	/* read-only: never pays for more than this test */
	struct inflight in = { .kind = SC_OPEN, .dfd1 = dfd, .path1 = path, .flags = flags,
			       .mode = mode & 07777 };
	return remember(ctx, &in);
}

ENTER(open) { return remember_open(ctx, AT_FDCWD, ARG(0), ARG(1), ARG(2)); }
EXIT(open)
ENTER(openat) { return remember_open(ctx, ARG(0), ARG(1), ARG(2), ARG(3)); }
EXIT(openat)
ENTER(creat) { return remember_open(ctx, AT_FDCWD, ARG(0), O_CREAT | O_WRONLY | O_TRUNC, ARG(1)); }
EXIT(creat)
ENTER(openat2)
{
	struct open_how how = {};

	bpf_probe_read_user(&how, sizeof(how), (void *)ARG(2));
	return remember_open(ctx, ARG(0), ARG(1), how.flags, how.mode);
}
EXIT(openat2)
ENTER(open_by_handle_at) { return remember_open(ctx, AT_FDCWD, 0, ARG(2), 0); }
EXIT(open_by_handle_at)

ENTER(close) { return closing(ctx, ARG(0)); }
ENTER(dup2) { return ARG(0) == ARG(1) ? 0 : closing(ctx, ARG(1)); }
ENTER(dup3) { return closing(ctx, ARG(1)); }

/* path2, when given, is an xattr's name, not a path */
static __always_inline int remember_path(struct trace_event_raw_sys_enter *ctx, __u32 op, int dfd,
					 __u64 path, __u32 mode, __u32 uid, __u32 gid, __u32 flags,
					 __u64 path2)
{
	struct inflight in = { .kind = SC_PATH, .op = op, .dfd1 = dfd, .path1 = path,
			       .mode = mode, .uid = uid, .gid = gid, .flags = flags,
			       .path2 = path2 };

	return remember_judged(ctx, &in);
}

static __always_inline int remember_fd(struct trace_event_raw_sys_enter *ctx, __u32 op, int fd,
				       __u32 mode, __u32 uid, __u32 gid, __u64 name)
{
	struct inflight in = { .kind = SC_FD, .op = op, .dfd1 = fd, .mode = mode, .uid = uid,
			       .gid = gid, .path2 = name };
	return remember(ctx, &in);
}

/* The mode a new directory or node gets: permission bits less the task's umask (a default
 * ACL on the parent would override it; then this is what was asked, not what was given). */
static __always_inline __u32 umasked(__u32 mode)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u32 umask = KREAD(t, fs, umask);

	return (mode & ~07777) | (mode & 07777 & ~umask);
}

/* Two paths (rename, link), or a symlink's new name and its target. Every new symlink goes to
 * the exit, watched or not (build_for_strs). */
static __always_inline int remember_path2(struct trace_event_raw_sys_enter *ctx, __u32 kind,
					  __u32 op, int dfd1, __u64 p1, int dfd2, __u64 p2,
					  __u32 flags)
{
	struct inflight in = { .kind = kind, .op = op, .dfd1 = dfd1, .path1 = p1, .dfd2 = dfd2,
			       .path2 = p2, .flags = flags };

	return kind == SC_PATH2 ? remember_judged(ctx, &in) : remember(ctx, &in);
}

#define NO_ID ((__u32)-1)

ENTER(unlink) { return remember_path(ctx, VIGIL_OP_DELETE, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, 0); }
EXIT(unlink)
ENTER(unlinkat)
{
	__u32 op = (ARG(2) & AT_REMOVEDIR) ? VIGIL_OP_RMDIR : VIGIL_OP_DELETE;

	return remember_path(ctx, op, ARG(0), ARG(1), 0, NO_ID, NO_ID, ARG(2), 0);
}
EXIT(unlinkat)
ENTER(rmdir) { return remember_path(ctx, VIGIL_OP_RMDIR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, 0); }
EXIT(rmdir)

ENTER(rename) { return remember_path2(ctx, SC_PATH2, VIGIL_OP_RENAME, AT_FDCWD, ARG(0), AT_FDCWD, ARG(1), 0); }
EXIT(rename)
ENTER(renameat) { return remember_path2(ctx, SC_PATH2, VIGIL_OP_RENAME, ARG(0), ARG(1), ARG(2), ARG(3), 0); }
EXIT(renameat)
ENTER(renameat2) { return remember_path2(ctx, SC_PATH2, VIGIL_OP_RENAME, ARG(0), ARG(1), ARG(2), ARG(3), ARG(4)); }
EXIT(renameat2)
ENTER(link) { return remember_path2(ctx, SC_PATH2, VIGIL_OP_LINK, AT_FDCWD, ARG(0), AT_FDCWD, ARG(1), 0); }
EXIT(link)
ENTER(linkat) { return remember_path2(ctx, SC_PATH2, VIGIL_OP_LINK, ARG(0), ARG(1), ARG(2), ARG(3), ARG(4)); }
EXIT(linkat)
/* symlink(target, linkpath): the new name is path1, the (unresolved) target path2 */
ENTER(symlink) { return remember_path2(ctx, SC_SYMLINK, VIGIL_OP_SYMLINK, AT_FDCWD, ARG(1), 0, ARG(0), 0); }
EXIT(symlink)
ENTER(symlinkat) { return remember_path2(ctx, SC_SYMLINK, VIGIL_OP_SYMLINK, ARG(1), ARG(2), 0, ARG(0), 0); }
EXIT(symlinkat)

ENTER(mkdir) { return remember_path(ctx, VIGIL_OP_MKDIR, AT_FDCWD, ARG(0), umasked(ARG(1)), NO_ID, NO_ID, 0, 0); }
EXIT(mkdir)
ENTER(mkdirat) { return remember_path(ctx, VIGIL_OP_MKDIR, ARG(0), ARG(1), umasked(ARG(2)), NO_ID, NO_ID, 0, 0); }
EXIT(mkdirat)
ENTER(mknod) { return remember_path(ctx, VIGIL_OP_MKNOD, AT_FDCWD, ARG(0), umasked(ARG(1)), NO_ID, NO_ID, 0, 0); }
EXIT(mknod)
ENTER(mknodat) { return remember_path(ctx, VIGIL_OP_MKNOD, ARG(0), ARG(1), umasked(ARG(2)), NO_ID, NO_ID, 0, 0); }
EXIT(mknodat)

ENTER(chmod) { return remember_path(ctx, VIGIL_OP_CHMOD, AT_FDCWD, ARG(0), ARG(1), NO_ID, NO_ID, 0, 0); }
EXIT(chmod)
ENTER(fchmodat) { return remember_path(ctx, VIGIL_OP_CHMOD, ARG(0), ARG(1), ARG(2), NO_ID, NO_ID, 0, 0); }
EXIT(fchmodat)
ENTER(fchmodat2) { return remember_path(ctx, VIGIL_OP_CHMOD, ARG(0), ARG(1), ARG(2), NO_ID, NO_ID, ARG(3), 0); }
EXIT(fchmodat2)
ENTER(fchmod) { return remember_fd(ctx, VIGIL_OP_CHMOD, ARG(0), ARG(1), NO_ID, NO_ID, 0); }
EXIT(fchmod)

ENTER(chown) { return remember_path(ctx, VIGIL_OP_CHOWN, AT_FDCWD, ARG(0), 0, ARG(1), ARG(2), 0, 0); }
EXIT(chown)
ENTER(lchown) { return remember_path(ctx, VIGIL_OP_CHOWN, AT_FDCWD, ARG(0), 0, ARG(1), ARG(2), 0x100, 0); }
EXIT(lchown)
ENTER(fchownat) { return remember_path(ctx, VIGIL_OP_CHOWN, ARG(0), ARG(1), 0, ARG(2), ARG(3), ARG(4), 0); }
EXIT(fchownat)
ENTER(fchown) { return remember_fd(ctx, VIGIL_OP_CHOWN, ARG(0), 0, ARG(1), ARG(2), 0); }
EXIT(fchown)

ENTER(truncate) { return remember_path(ctx, VIGIL_OP_TRUNCATE, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, 0); }
EXIT(truncate)
ENTER(ftruncate) { return remember_fd(ctx, VIGIL_OP_TRUNCATE, ARG(0), 0, NO_ID, NO_ID, 0); }
EXIT(ftruncate)

/* xattr syscalls: path2 carries the attribute name */
ENTER(setxattr) { return remember_path(ctx, VIGIL_OP_SETXATTR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, ARG(1)); }
EXIT(setxattr)
ENTER(lsetxattr) { return remember_path(ctx, VIGIL_OP_SETXATTR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0x100, ARG(1)); }
EXIT(lsetxattr)
ENTER(fsetxattr) { return remember_fd(ctx, VIGIL_OP_SETXATTR, ARG(0), 0, NO_ID, NO_ID, ARG(1)); }
EXIT(fsetxattr)
ENTER(setxattrat) { return remember_path(ctx, VIGIL_OP_SETXATTR, ARG(0), ARG(1), 0, NO_ID, NO_ID, ARG(2), ARG(3)); }
EXIT(setxattrat)
ENTER(removexattr) { return remember_path(ctx, VIGIL_OP_REMOVEXATTR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0, ARG(1)); }
EXIT(removexattr)
ENTER(lremovexattr) { return remember_path(ctx, VIGIL_OP_REMOVEXATTR, AT_FDCWD, ARG(0), 0, NO_ID, NO_ID, 0x100, ARG(1)); }
EXIT(lremovexattr)
ENTER(fremovexattr) { return remember_fd(ctx, VIGIL_OP_REMOVEXATTR, ARG(0), 0, NO_ID, NO_ID, ARG(1)); }
EXIT(fremovexattr)
ENTER(removexattrat) { return remember_path(ctx, VIGIL_OP_REMOVEXATTR, ARG(0), ARG(1), 0, NO_ID, NO_ID, ARG(2), ARG(3)); }
EXIT(removexattrat)

#endif /* VIGIL_SYSCALLS_FILE_BPF_H */
