/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The VFS backends: the same file events as the syscall tracepoints, taken where the kernel
 * really acts on the file system, so resolved paths, symlinks, bind mounts and io_uring are all
 * seen as they are. Included by vigil.bpf.c (one object, one set of maps and helpers); user
 * space loads the programs of one backend only (vigil/kernel/hooks.py says which).
 *
 * Every change goes through two points:
 *   capture  where the kernel names the object with its mount (a struct path and the dentry):
 *            the security_path_* functions, or the LSM hooks of the same name. The event is
 *            built here, before the operation moves or removes the name, and parked per thread
 *            in `pending`.
 *   commit   the exit of the VFS function that does the work (vfs_unlink, vfs_rename,
 *            notify_change, ...), which knows the result. It checks that it works on the dentry
 *            the capture saw, sets the result and sends the event; failed attempts are sent for
 *            the configured errnos only, like the tracepoint backend does.
 * Capture runs as lsm/, fentry/ or kprobe/ programs, commit as fexit/ or kretprobe/ programs;
 * the bodies are shared. A write-open is sent from file_open (the file exists, FMODE_CREATED
 * tells whether this open made it) and the "modified" from the last reference going (__fput, or
 * the file_release LSM hook). Every program that can send an event ends with flush(ctx), where
 * the perf buffer variant sends it (send.bpf.h, submit()).
 *
 * Argument positions of the commit functions changed across kernels (an idmap argument came
 * first in 5.12 and 6.3, vfs_rename took a struct in 5.12, vfs_mkdir returns a dentry since
 * 6.15). User space reads each prototype from the BTF in use and writes the positions into the
 * pos_* and ret_* settings below before load; it refuses the backend on a prototype it does not
 * know. Nothing here compares kernel versions.
 */
#ifndef VIGIL_VFS_BPF_H
#define VIGIL_VFS_BPF_H

#include "file_event.bpf.h"

#define ATTR_OPEN (1 << 15)		/* do_truncate() on behalf of open(O_TRUNC) */
#define S_IFMT 00170000
#define S_IFREG 0100000

/* Which commit a capture waits for. */
enum commit_kind {
	CM_UNLINK = 1, CM_RMDIR, CM_MKDIR, CM_MKNOD, CM_SYMLINK, CM_LINK, CM_RENAME,
	CM_SETATTR, CM_TRUNCATE,
};

/* Index of the identifying argument (a struct dentry *, or vfs_rename's struct renamedata *)
 * and of the return value (the number of arguments) in each commit function; ret_ptr_* is 1
 * when the function returns a pointer (ERR_PTR on failure). */
const volatile __u32 pos_unlink = 2, ret_unlink = 4;
const volatile __u32 pos_rmdir = 2, ret_rmdir = 3;
const volatile __u32 pos_mkdir = 2, ret_mkdir = 4, ret_ptr_mkdir = 0;
const volatile __u32 pos_mknod = 2, ret_mknod = 5;
const volatile __u32 pos_symlink = 2, ret_symlink = 4;
const volatile __u32 pos_link = 0, ret_link = 5;
const volatile __u32 pos_rename = 0, ret_rename = 1, rename_takes_struct = 1;
const volatile __u32 pos_setattr = 1, ret_setattr = 4;
const volatile __u32 pos_truncate = 1, ret_truncate = 5, pos_truncate_attrs = 3;
/* Where vfs_rmdir is split by the compiler (vfs_rmdir.part.0 on Debian's 5.10, which rmdir(2)
 * calls directly), rmdir commits at the exit of do_rmdir(dfd, name) instead: ret_do_rmdir. */
const volatile __u32 ret_do_rmdir = 2;

struct pending {
	__u64 ident;			/* the dentry the commit must be working on */
	__u32 commit;			/* enum commit_kind */
	__u32 armed;			/* kprobe backend: the entry of the commit function matched */
	struct evbuf ev;		/* the event, complete but for its result */
};

/* One slot per thread with an operation between capture and commit. A plain hash, not an LRU
 * (which would evict a capture in progress without a trace): a capture whose commit never comes
 * (another LSM said no) keeps its thread's slot only until that thread's next capture replaces
 * it or the thread exits (handle_exit deletes it), so the slots in use never exceed the threads
 * alive; a full map fails the capture, which is counted (inflight_full) like a full inflight. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);		/* pid_tgid */
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending);
} pending_scratch SEC(".maps");

/* What a capture hook saw. */
struct capture {
	struct dentry *dentry;		/* the name operated on */
	struct vfsmount *mnt;
	struct dentry *dentry2;		/* rename's new name, link's new name */
	struct vfsmount *mnt2;
	const char *name2;		/* symlink: its target, in kernel memory */
	__u32 op;
	__u32 commit;
	__u32 mode;
	__u32 uid;
	__u32 gid;
	__u32 oflags;
};

/* Builds the event of a capture and parks it until the commit. 1 when parked. */
static __noinline int capture(struct capture *c)
{
	__u32 zero = 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	struct pending *pd = bpf_map_lookup_elem(&pending_scratch, &zero);
	struct vigil_file_event *e;
	__u16 flags = 0, flags2 = 0;
	__u32 len, len2 = 0;
	int hit;

	if (!wb || !pb || !pd || is_self())
		return 0;
	e = (struct vigil_file_event *)pd->ev.b;
	len = path_of_dentry(pb, wb, c->dentry, c->mnt, &flags);
	hit = is_watched(pb, len) || (flags & VIGIL_F_PATH_TRUNC);
	len = clamp_len(len);
	put_path(e, 0, pb, len);
	if (c->dentry2) {
		len2 = path_of_dentry(pb, wb, c->dentry2, c->mnt2, &flags2);
		hit |= is_watched(pb, len2) || (flags2 & VIGIL_F_PATH_TRUNC);
	} else if (c->name2) {
		long n = bpf_probe_read_kernel_str(pb->d, VIGIL_PATH_MAX, c->name2);

		len2 = n > 1 ? n - 1 : 0;
	}
	if (!hit && c->op == VIGIL_OP_SYMLINK) {
		/* as on the tracepoint backend: a new symlink anywhere may lead into a watched tree,
		 * and the xattr syscalls (matched by their path text on every backend) see through
		 * it only once user space has made it a watched name */
		hit = 1;
		flags |= VIGIL_F_LINK_ANYWHERE;
	}
	if (!hit) {
		bpf_map_delete_elem(&pending, &id);	/* no stale slot may meet this commit */
		return 0;
	}
	len2 = clamp_len(len2);
	put_path(e, len, pb, len2);

	e->hdr.kind = VIGIL_EV_FILE;
	e->hdr.flags = flags | ((flags2 & VIGIL_F_PATH_TRUNC) ? VIGIL_F_PATH2_TRUNC : 0);
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->hdr.size = sizeof(struct vigil_file_event) + len + len2;
	fill_proc(&e->proc);
	e->op = c->op;
	e->ret = 0;
	e->mode = c->mode;
	e->owner_uid = c->uid;
	e->owner_gid = c->gid;
	e->oflags = c->oflags;
	e->ino = 0;
	e->dev = 0;
	if (c->op != VIGIL_OP_MKDIR && c->op != VIGIL_OP_MKNOD && c->op != VIGIL_OP_SYMLINK) {
		struct dentry *d = c->dentry;	/* a plain read: struct capture is ours, not CO-RE */
		struct inode *inode = KREAD(d, d_inode);

		if (inode)
			set_inode(e, inode);
	}
	e->file_id = 0;
	e->path_len = len;
	e->path2_len = len2;
	pd->ident = (__u64)c->dentry;
	pd->commit = c->commit;
	pd->armed = 0;
	if (bpf_map_update_elem(&pending, &id, pd, BPF_ANY))
		count(VIGIL_STAT_INFLIGHT_FULL);
	return 1;
}

/* The commit: `ident` is what the VFS function was called on, `ret` its result. */
static __noinline int commit(__u32 kind, __u64 ident, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *pd = bpf_map_lookup_elem(&pending, &id);
	struct vigil_file_event *e;

	if (!pd || pd->commit != kind || pd->ident != ident)
		return 0;	/* not ours (notify_change inside do_truncate, an unwatched path) */
	e = (struct vigil_file_event *)pd->ev.b;
	/* a symlink sent only because it may lead somewhere watched: not if it was not made */
	if (errno_reported(ret) && !(ret < 0 && (e->hdr.flags & VIGIL_F_LINK_ANYWHERE))) {
		e->ret = ret < 0 ? ret : 0;
		if (kind == CM_MKDIR && ret >= 0) {
			/* the mode the directory got: the capture saw the one asked for, which is
			 * before the umask where the file system applies it (POSIX ACLs) */
			struct dentry *d = (struct dentry *)ident;
			struct inode *inode = KREAD(d, d_inode);

			if (inode)
				e->mode = KREAD(inode, i_mode) & 07777;
		}
		submit(e, e->hdr.size, VIGIL_STAT_DROP_FILE);
	}
	bpf_map_delete_elem(&pending, &id);
	return 0;
}

/* A capture that no commit will send (open's O_TRUNC, reported by the write-open): its slot is
 * freed now rather than left for the thread's next capture. */
static __always_inline int drop_capture(__u32 kind, __u64 ident)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *pd = bpf_map_lookup_elem(&pending, &id);

	if (pd && pd->commit == kind && pd->ident == ident)
		bpf_map_delete_elem(&pending, &id);
	return 0;
}

/* ---- capture bodies, shared by the lsm/, fentry/ and kprobe/ programs -------------------- */

static __always_inline int cap_dir_entry(const struct path *dir, struct dentry *dentry,
					 __u32 op, __u32 kind, __u32 mode)
{
	struct capture c = {
		.dentry = dentry, .mnt = KREAD(dir, mnt), .op = op, .commit = kind,
		.mode = mode, .uid = (__u32)-1, .gid = (__u32)-1,
	};
	return capture(&c);
}

static __always_inline int cap_mknod(const struct path *dir, struct dentry *dentry, __u32 mode)
{
	/* open(O_CREAT) passes here with S_IFREG and is reported by file_open; a regular file
	 * made by mknod(2) itself is not reported (it is created empty and closed at once) */
	if ((mode & S_IFMT) == S_IFREG)
		return 0;
	return cap_dir_entry(dir, dentry, VIGIL_OP_MKNOD, CM_MKNOD, mode);
}

static __always_inline int cap_symlink(const struct path *dir, struct dentry *dentry,
				       const char *target)
{
	struct capture c = {
		.dentry = dentry, .mnt = KREAD(dir, mnt), .name2 = target,
		.op = VIGIL_OP_SYMLINK, .commit = CM_SYMLINK, .uid = (__u32)-1, .gid = (__u32)-1,
	};
	return capture(&c);
}

static __always_inline int cap_link(struct dentry *old, const struct path *new_dir,
				    struct dentry *new)
{
	struct vfsmount *mnt = KREAD(new_dir, mnt);	/* links stay on one mount */
	struct capture c = {
		.dentry = old, .mnt = mnt, .dentry2 = new, .mnt2 = mnt, .op = VIGIL_OP_LINK,
		.commit = CM_LINK, .uid = (__u32)-1, .gid = (__u32)-1,
	};
	return capture(&c);
}

static __always_inline int cap_rename(const struct path *old_dir, struct dentry *old,
				      const struct path *new_dir, struct dentry *new,
				      __u32 flags)
{
	struct capture c = {
		.dentry = old, .mnt = KREAD(old_dir, mnt), .dentry2 = new,
		.mnt2 = KREAD(new_dir, mnt), .op = VIGIL_OP_RENAME, .commit = CM_RENAME,
		.uid = (__u32)-1, .gid = (__u32)-1, .oflags = flags,
	};
	return capture(&c);
}

static __always_inline int cap_attr(const struct path *path, __u32 op, __u32 kind, __u32 mode,
				    __u32 uid, __u32 gid)
{
	struct capture c = {
		.dentry = KREAD(path, dentry), .mnt = KREAD(path, mnt), .op = op,
		.commit = kind, .mode = mode, .uid = uid, .gid = gid,
	};
	return capture(&c);
}

static __always_inline int cap_file_truncate(struct file *f)
{
	return cap_attr(KADDR(f, f_path), VIGIL_OP_TRUNCATE, CM_TRUNCATE, 0, (__u32)-1, (__u32)-1);
}

/* A file was opened: a write-open of a watched file is sent now and tracked to its last
 * reference. */
static __always_inline int on_file_open(struct file *f)
{
	__u32 fmode;
	__u16 created;

	if (is_self())
		return 0;
	fmode = KREAD(f, f_mode);
	if (!(fmode & cfg_fmode_write))
		return 0;
	/* overlayfs opens the file of the layer below as a second struct file that passes here
	 * too, named by the overlay's path (open_with_fake_path, before 6.7) but holding the lower
	 * inode; it has a last fput of its own, so tracking it would report every close twice.
	 * The caller's file is the one whose inode is its dentry's. */
	struct path *fp = KADDR(f, f_path);
	struct dentry *fd = KREAD(fp, dentry);

	if (KREAD(fd, d_inode) != KREAD(f, f_inode))
		return 0;
	created = (fmode & cfg_fmode_created) ? VIGIL_F_CREATED : 0;

	struct inflight in = { .op = VIGIL_OP_OPEN_WRITE, .flags = KREAD(f, f_flags) };

	if (emit_for_file(&in, 0, f, (__u64)f, created))
		track_write(f);
	return 0;
}

/* The last reference to a file is going: a tracked write-open means "modified". */
static __always_inline int on_last_fput(struct file *f)
{
	__u64 key = (__u64)f;
	struct wfile *w = bpf_map_lookup_elem(&wfiles, &key);

	if (!w)
		return 0;
	lru_delete(&wfiles, &key, VIGIL_STAT_WFILES_DEL);

	struct inflight in = { .op = VIGIL_OP_MODIFY, .flags = KREAD(f, f_flags) };

	return emit_for_file(&in, 0, f, key, 0);
}

/* ---- LSM hooks (capture). Return 0: Vigil observes, it never denies. ------------------- */

SEC("lsm/path_unlink")
int BPF_PROG(lsm_path_unlink, const struct path *dir, struct dentry *dentry)
{
	cap_dir_entry(dir, dentry, VIGIL_OP_DELETE, CM_UNLINK, 0);
	return 0;
}

SEC("lsm/path_rmdir")
int BPF_PROG(lsm_path_rmdir, const struct path *dir, struct dentry *dentry)
{
	cap_dir_entry(dir, dentry, VIGIL_OP_RMDIR, CM_RMDIR, 0);
	return 0;
}

SEC("lsm/path_mkdir")
int BPF_PROG(lsm_path_mkdir, const struct path *dir, struct dentry *dentry, unsigned short mode)
{
	cap_dir_entry(dir, dentry, VIGIL_OP_MKDIR, CM_MKDIR, mode);
	return 0;
}

SEC("lsm/path_mknod")
int BPF_PROG(lsm_path_mknod, const struct path *dir, struct dentry *dentry, unsigned short mode)
{
	cap_mknod(dir, dentry, mode);
	return 0;
}

SEC("lsm/path_symlink")
int BPF_PROG(lsm_path_symlink, const struct path *dir, struct dentry *dentry, const char *name)
{
	cap_symlink(dir, dentry, name);
	return 0;
}

SEC("lsm/path_link")
int BPF_PROG(lsm_path_link, struct dentry *old, const struct path *new_dir, struct dentry *new)
{
	cap_link(old, new_dir, new);
	return 0;
}

SEC("lsm/path_rename")
int BPF_PROG(lsm_path_rename, const struct path *old_dir, struct dentry *old,
	     const struct path *new_dir, struct dentry *new, unsigned int flags)
{
	cap_rename(old_dir, old, new_dir, new, flags);
	return 0;
}

SEC("lsm/path_chmod")
int BPF_PROG(lsm_path_chmod, const struct path *path, unsigned short mode)
{
	cap_attr(path, VIGIL_OP_CHMOD, CM_SETATTR, mode & 07777, (__u32)-1, (__u32)-1);
	return 0;
}

SEC("lsm/path_chown")
int BPF_PROG(lsm_path_chown, const struct path *path, __u32 uid, __u32 gid)
{
	cap_attr(path, VIGIL_OP_CHOWN, CM_SETATTR, 0, uid, gid);
	return 0;
}

SEC("lsm/path_truncate")
int BPF_PROG(lsm_path_truncate, const struct path *path)
{
	cap_attr(path, VIGIL_OP_TRUNCATE, CM_TRUNCATE, 0, (__u32)-1, (__u32)-1);
	return 0;
}

SEC("lsm/file_truncate")
int BPF_PROG(lsm_file_truncate, struct file *file)
{
	cap_file_truncate(file);
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(lsm_file_open, struct file *file)
{
	on_file_open(file);
	return flush(ctx);
}

SEC("lsm/file_release")
int BPF_PROG(lsm_file_release, struct file *file)
{
	on_last_fput(file);
	return flush(ctx);
}

/* ---- fentry on the same security_* functions (capture) --------------------------------- */

SEC("fentry/security_path_unlink")
int BPF_PROG(fe_path_unlink, const struct path *dir, struct dentry *dentry)
{
	return cap_dir_entry(dir, dentry, VIGIL_OP_DELETE, CM_UNLINK, 0), 0;
}

SEC("fentry/security_path_rmdir")
int BPF_PROG(fe_path_rmdir, const struct path *dir, struct dentry *dentry)
{
	return cap_dir_entry(dir, dentry, VIGIL_OP_RMDIR, CM_RMDIR, 0), 0;
}

SEC("fentry/security_path_mkdir")
int BPF_PROG(fe_path_mkdir, const struct path *dir, struct dentry *dentry, unsigned short mode)
{
	return cap_dir_entry(dir, dentry, VIGIL_OP_MKDIR, CM_MKDIR, mode), 0;
}

SEC("fentry/security_path_mknod")
int BPF_PROG(fe_path_mknod, const struct path *dir, struct dentry *dentry, unsigned short mode)
{
	return cap_mknod(dir, dentry, mode), 0;
}

SEC("fentry/security_path_symlink")
int BPF_PROG(fe_path_symlink, const struct path *dir, struct dentry *dentry, const char *name)
{
	return cap_symlink(dir, dentry, name), 0;
}

SEC("fentry/security_path_link")
int BPF_PROG(fe_path_link, struct dentry *old, const struct path *new_dir, struct dentry *new)
{
	return cap_link(old, new_dir, new), 0;
}

SEC("fentry/security_path_rename")
int BPF_PROG(fe_path_rename, const struct path *old_dir, struct dentry *old,
	     const struct path *new_dir, struct dentry *new, unsigned int flags)
{
	return cap_rename(old_dir, old, new_dir, new, flags), 0;
}

SEC("fentry/security_path_chmod")
int BPF_PROG(fe_path_chmod, const struct path *path, unsigned short mode)
{
	return cap_attr(path, VIGIL_OP_CHMOD, CM_SETATTR, mode & 07777, (__u32)-1, (__u32)-1), 0;
}

SEC("fentry/security_path_chown")
int BPF_PROG(fe_path_chown, const struct path *path, __u32 uid, __u32 gid)
{
	return cap_attr(path, VIGIL_OP_CHOWN, CM_SETATTR, 0, uid, gid), 0;
}

SEC("fentry/security_path_truncate")
int BPF_PROG(fe_path_truncate, const struct path *path)
{
	return cap_attr(path, VIGIL_OP_TRUNCATE, CM_TRUNCATE, 0, (__u32)-1, (__u32)-1), 0;
}

SEC("fentry/security_file_truncate")
int BPF_PROG(fe_file_truncate, struct file *file)
{
	return cap_file_truncate(file), 0;
}

SEC("fentry/security_file_open")
int BPF_PROG(fe_file_open, struct file *file)
{
	return on_file_open(file), flush(ctx);
}

SEC("fentry/__fput")
int BPF_PROG(fe_fput, struct file *file)
{
	return on_last_fput(file), flush(ctx);
}

/* ---- fexit on the VFS functions (commit) ------------------------------------------------- */

/* ctx[i] for an index known only at load (a .rodata constant): the verifier sees the constant
 * and keeps the one branch, so every access has a fixed offset. The asm keeps clang from
 * merging the loads into one through a computed pointer, which the verifier refuses. */
#define CTX_CASE(n) case n: v = ctx[n]; asm volatile("" : "+r"(v)); break

static __always_inline __u64 ctx_arg(__u64 *ctx, __u32 i)
{
	__u64 v = 0;

	switch (i) {
	CTX_CASE(0);
	CTX_CASE(1);
	CTX_CASE(2);
	CTX_CASE(3);
	CTX_CASE(4);
	CTX_CASE(5);
	CTX_CASE(6);
	CTX_CASE(7);
	}
	return v;
}

/* A commit function's return value as an errno (<0) or 0. Registers hold a 32-bit kernel's
 * values zero-extended, so its ERR_PTR(-errno) is 0xfffff001..0xffffffff, which no 64-bit
 * kernel pointer can be. */
static __always_inline long result(__u64 raw, __u32 is_ptr)
{
	if (!is_ptr)
		return (int)raw;
	if (raw >= (__u64)-4095)	/* ERR_PTR(-errno), 64-bit */
		return (long)raw;
	if (raw >= 0xfffff001ULL && raw <= 0xffffffffULL)
		return (int)raw;	/* ERR_PTR(-errno), 32-bit */
	return 0;			/* a valid pointer */
}

static __always_inline __u64 rename_ident(__u64 arg)
{
	if (rename_takes_struct)
		return (__u64)KREAD((struct renamedata *)arg, old_dentry);
	return arg;
}

#define FEXIT(fn, kind, pos, ret, is_ptr)						\
	SEC("fexit/" #fn)								\
	int fx_##fn(__u64 *ctx)								\
	{										\
		commit(kind, ctx_arg(ctx, pos), result(ctx_arg(ctx, ret), is_ptr));	\
		return flush(ctx);							\
	}

FEXIT(vfs_unlink, CM_UNLINK, pos_unlink, ret_unlink, 0)
FEXIT(vfs_rmdir, CM_RMDIR, pos_rmdir, ret_rmdir, 0)
FEXIT(vfs_mkdir, CM_MKDIR, pos_mkdir, ret_mkdir, ret_ptr_mkdir)
FEXIT(vfs_mknod, CM_MKNOD, pos_mknod, ret_mknod, 0)
FEXIT(vfs_symlink, CM_SYMLINK, pos_symlink, ret_symlink, 0)
FEXIT(vfs_link, CM_LINK, pos_link, ret_link, 0)
FEXIT(notify_change, CM_SETATTR, pos_setattr, ret_setattr, 0)

/* Commit whatever capture of `kind` this thread parked: the caller (do_rmdir) does not name
 * the dentry, and only its own security_path_rmdir capture can be pending. */
static __always_inline int commit_parked(__u32 kind, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *pd = bpf_map_lookup_elem(&pending, &id);

	if (!pd || pd->commit != kind)
		return 0;
	return commit(kind, pd->ident, ret);
}

SEC("fexit/do_rmdir")
int fx_do_rmdir(__u64 *ctx)
{
	commit_parked(CM_RMDIR, result(ctx_arg(ctx, ret_do_rmdir), 0));
	return flush(ctx);
}

SEC("fexit/vfs_rename")
int fx_vfs_rename(__u64 *ctx)
{
	commit(CM_RENAME, rename_ident(ctx_arg(ctx, pos_rename)),
	       result(ctx_arg(ctx, ret_rename), 0));
	return flush(ctx);
}

SEC("fexit/do_truncate")
int fx_do_truncate(__u64 *ctx)
{
	if (ctx_arg(ctx, pos_truncate_attrs) & ATTR_OPEN)	/* the write-open reports it */
		return drop_capture(CM_TRUNCATE, ctx_arg(ctx, pos_truncate));
	commit(CM_TRUNCATE, ctx_arg(ctx, pos_truncate), result(ctx_arg(ctx, ret_truncate), 0));
	return flush(ctx);
}

/* ---- kprobes: capture at the security_* functions, commit armed at the entry of the VFS
 * function (the arguments are gone by its return) and sent at its return ----------------- */

static __always_inline __u64 kp_arg(struct pt_regs *r, __u32 i)
{
	switch (i) {
	case 0: return KP_ARG0(r);
	case 1: return KP_ARG1(r);
	case 2: return KP_ARG2(r);
	case 3: return KP_ARG3(r);
	case 4: return KP_ARG4(r);
	default: return 0;
	}
}

SEC("kprobe/security_path_unlink")
int kp_path_unlink(struct pt_regs *r)
{
	return cap_dir_entry((void *)KP_ARG0(r), (void *)KP_ARG1(r), VIGIL_OP_DELETE, CM_UNLINK, 0), 0;
}

SEC("kprobe/security_path_rmdir")
int kp_path_rmdir(struct pt_regs *r)
{
	return cap_dir_entry((void *)KP_ARG0(r), (void *)KP_ARG1(r), VIGIL_OP_RMDIR, CM_RMDIR, 0), 0;
}

SEC("kprobe/security_path_mkdir")
int kp_path_mkdir(struct pt_regs *r)
{
	return cap_dir_entry((void *)KP_ARG0(r), (void *)KP_ARG1(r), VIGIL_OP_MKDIR, CM_MKDIR,
			     (unsigned short)KP_ARG2(r)), 0;
}

SEC("kprobe/security_path_mknod")
int kp_path_mknod(struct pt_regs *r)
{
	return cap_mknod((void *)KP_ARG0(r), (void *)KP_ARG1(r), (unsigned short)KP_ARG2(r)), 0;
}

SEC("kprobe/security_path_symlink")
int kp_path_symlink(struct pt_regs *r)
{
	return cap_symlink((void *)KP_ARG0(r), (void *)KP_ARG1(r), (void *)KP_ARG2(r)), 0;
}

SEC("kprobe/security_path_link")
int kp_path_link(struct pt_regs *r)
{
	return cap_link((void *)KP_ARG0(r), (void *)KP_ARG1(r), (void *)KP_ARG2(r)), 0;
}

SEC("kprobe/security_path_rename")
int kp_path_rename(struct pt_regs *r)
{
	return cap_rename((void *)KP_ARG0(r), (void *)KP_ARG1(r), (void *)KP_ARG2(r),
			  (void *)KP_ARG3(r), KP_ARG4(r)), 0;
}

SEC("kprobe/security_path_chmod")
int kp_path_chmod(struct pt_regs *r)
{
	return cap_attr((void *)KP_ARG0(r), VIGIL_OP_CHMOD, CM_SETATTR, KP_ARG1(r) & 07777,
			(__u32)-1, (__u32)-1), 0;
}

SEC("kprobe/security_path_chown")
int kp_path_chown(struct pt_regs *r)
{
	return cap_attr((void *)KP_ARG0(r), VIGIL_OP_CHOWN, CM_SETATTR, 0, KP_ARG1(r),
			KP_ARG2(r)), 0;
}

SEC("kprobe/security_path_truncate")
int kp_path_truncate(struct pt_regs *r)
{
	return cap_attr((void *)KP_ARG0(r), VIGIL_OP_TRUNCATE, CM_TRUNCATE, 0, (__u32)-1,
			(__u32)-1), 0;
}

SEC("kprobe/security_file_truncate")
int kp_file_truncate(struct pt_regs *r)
{
	return cap_file_truncate((void *)KP_ARG0(r)), 0;
}

SEC("kprobe/security_file_open")
int kp_file_open(struct pt_regs *r)
{
	return on_file_open((void *)KP_ARG0(r)), flush(r);
}

SEC("kprobe/__fput")
int kp_fput(struct pt_regs *r)
{
	return on_last_fput((void *)KP_ARG0(r)), flush(r);
}

/* Entry of a commit function: arm the thread's slot when it is the captured dentry. */
static __always_inline int arm(__u32 kind, __u64 ident)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *pd = bpf_map_lookup_elem(&pending, &id);

	if (pd && pd->commit == kind && pd->ident == ident)
		pd->armed = 1;
	return 0;
}

/* Return of a commit function: send an armed slot with the result. */
static __always_inline int fire(__u32 kind, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *pd = bpf_map_lookup_elem(&pending, &id);

	if (!pd || !pd->armed)
		return 0;
	return commit(kind, pd->ident, ret);
}

#define KPROBE_COMMIT(fn, kind, pos, is_ptr)						\
	SEC("kprobe/" #fn)								\
	int kp_##fn(struct pt_regs *r) { return arm(kind, kp_arg(r, pos)); }		\
	SEC("kretprobe/" #fn)								\
	int kr_##fn(struct pt_regs *r) { return fire(kind, result(KP_RET(r), is_ptr)), flush(r); }

SEC("kretprobe/do_rmdir")
int kr_do_rmdir(struct pt_regs *r)
{
	commit_parked(CM_RMDIR, result(KP_RET(r), 0));
	return flush(r);
}

KPROBE_COMMIT(vfs_unlink, CM_UNLINK, pos_unlink, 0)
KPROBE_COMMIT(vfs_rmdir, CM_RMDIR, pos_rmdir, 0)
KPROBE_COMMIT(vfs_mkdir, CM_MKDIR, pos_mkdir, ret_ptr_mkdir)
KPROBE_COMMIT(vfs_mknod, CM_MKNOD, pos_mknod, 0)
KPROBE_COMMIT(vfs_symlink, CM_SYMLINK, pos_symlink, 0)
KPROBE_COMMIT(vfs_link, CM_LINK, pos_link, 0)
KPROBE_COMMIT(notify_change, CM_SETATTR, pos_setattr, 0)

SEC("kprobe/vfs_rename")
int kp_vfs_rename(struct pt_regs *r)
{
	return arm(CM_RENAME, rename_ident(kp_arg(r, pos_rename)));
}

SEC("kretprobe/vfs_rename")
int kr_vfs_rename(struct pt_regs *r)
{
	return fire(CM_RENAME, result(KP_RET(r), 0)), flush(r);
}

SEC("kprobe/do_truncate")
int kp_do_truncate(struct pt_regs *r)
{
	if (kp_arg(r, pos_truncate_attrs) & ATTR_OPEN)
		return drop_capture(CM_TRUNCATE, kp_arg(r, pos_truncate));
	return arm(CM_TRUNCATE, kp_arg(r, pos_truncate));
}

SEC("kretprobe/do_truncate")
int kr_do_truncate(struct pt_regs *r)
{
	return fire(CM_TRUNCATE, result(KP_RET(r), 0)), flush(r);
}

#endif /* VIGIL_VFS_BPF_H */
