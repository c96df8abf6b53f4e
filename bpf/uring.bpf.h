/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * io_uring, as the syscall-tracepoint backend sees it.
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
 * name the request (5.10) are not served: both programs return at once (a CO-RE test).
 */
#ifndef VIGIL_URING_BPF_H
#define VIGIL_URING_BPF_H

#include "syscalls_file.bpf.h"

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
	handoff(ctx, H_URING_SUBMIT);
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

#endif /* VIGIL_URING_BPF_H */
