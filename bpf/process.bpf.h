/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Processes, for every backend: the exec record (the executable's path, argv and the working
 * directory, walked like any path) and the exit record (the exit code, and whether the process
 * still held files open for writing that no close was seen for). They always flow: user space's
 * process table names the acting program of every later event from them.
 */
#ifndef VIGIL_PROCESS_BPF_H
#define VIGIL_PROCESS_BPF_H

#include "path.bpf.h"
#include "send.bpf.h"
#include "vfs.bpf.h"		/* an exit frees its thread's VFS capture slot (pending) */

/* An inode's change time in ns, whichever way this kernel keeps it. */
static __always_inline __u64 inode_ctime_ns(struct inode *i)
{
	struct inode___ctime_split *split = (void *)i;
	struct inode___ctime_hidden *hidden = (void *)i;
	struct inode___ctime_old *old = (void *)i;

	/* since 6.13 the top bit of i_ctime_nsec says the time was queried (multigrain
	 * timestamps), never part of the nanoseconds */
	if (bpf_core_field_exists(split->i_ctime_sec))
		return KREAD(split, i_ctime_sec) * 1000000000ULL +
		       (KREAD(split, i_ctime_nsec) & 0x7fffffffU);
	if (bpf_core_field_exists(hidden->__i_ctime))
		return KREAD(hidden, __i_ctime.tv_sec) * 1000000000ULL +
		       KREAD(hidden, __i_ctime.tv_nsec);
	return KREAD(old, i_ctime.tv_sec) * 1000000000ULL + KREAD(old, i_ctime.tv_nsec);
}

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u32 zero = 0;
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	struct vigil_exec_event *e;
	__u16 flags = 0, cwd_flags = 0;
	__u32 len = 0, alen, clen = 0, at, dev = 0;
	__u64 ino = 0, ctime = 0;
	unsigned long astart, aend;

	if (!wb || !pb)
		return 0;
	struct file *exe = KREAD(t, mm, exe_file);

	if (exe) {
		struct dentry *d = KREAD(exe, f_path.dentry);

		len = path_of(pb, wb, KADDR(exe, f_path), &flags);
		/* A file with no parent to walk to (a memfd, an anonymous file) walks to "/":
		 * its own name follows, as the kernel's d_path gives it ("/memfd:NAME"). */
		if (len == 1 && KREAD(d, d_parent) == d) {
			long n = bpf_probe_read_kernel_str(&pb->d[1], NAME_MASK + 1,
							   KREAD(d, d_name.name));

			if (n > 1)
				len = n;	/* "/" + the name, its NUL not counted */
		}
		struct inode *inode = KREAD(exe, f_inode);

		if (!KREAD(inode, i_nlink))
			flags |= VIGIL_F_EXE_DELETED;
		/* which file ran: user space hashes it and checks it is still that one */
		ino = KREAD(inode, i_ino);
		dev = KREAD(inode, i_sb, s_dev);
		ctime = inode_ctime_ns(inode);
	}
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
	e->exe_dev = dev;
	e->exe_ino = ino;
	e->exe_ctime_ns = ctime;
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

#endif /* VIGIL_PROCESS_BPF_H */
