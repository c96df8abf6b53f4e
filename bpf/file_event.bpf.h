/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * File events, for every backend: which failures are reported (cfg_failed_errnos); an event
 * built from a struct file (emit_for_file: opens, closes, the f* calls) or from path strings
 * (build_for_strs: syscall arguments, io_uring's copies), kept only when its path is watched;
 * and write tracking: a watched file opened for writing is remembered in wfiles until its last
 * close, which means "modified".
 */
#ifndef VIGIL_FILE_EVENT_BPF_H
#define VIGIL_FILE_EVENT_BPF_H

#include "path.bpf.h"
#include "send.bpf.h"

/* 1 when a result is reported: a success, or a failure whose errno is in cfg_failed_errnos. */
static __always_inline int errno_reported(long ret)
{
	if (ret >= 0)
		return 1;
	if (-ret >= 64)
		return 0;
	return (cfg_failed_errnos >> (-ret)) & 1;
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
	e->hdr.flags = (flags & ~F_UNREADABLE) | (flags2 & VIGIL_F_UNNORMALIZED);
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

#endif /* VIGIL_FILE_EVENT_BPF_H */
