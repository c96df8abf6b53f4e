/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Kernel and security tampering (struct vigil_sec_event): kernel modules loaded, bpf()
 * programs loaded and attached by other processes, ptrace attach/seize and process_vm_writev
 * into another process, mount/umount/pivot_root, and signals sent to the agent.
 *
 * Every backend: the module:module_load tracepoint (a module now in the kernel, its name) and
 * signal:signal_generate (a signal to the agent, in the sender's context).
 *
 * lsm and fentry backends: fexit on ptrace_attach, process_vm_rw, path_mount and load_module
 * (their arguments and their result), fentry on path_umount, security_sb_pivotroot and
 * security_bpf (before the work: the request). The kprobe backend: the same through kprobes,
 * a kretprobe reading what its kprobe stashed (process_vm_rw's seventh argument, vm_write, is
 * beyond what a kprobe reads: not hooked there).
 *
 * Tracepoint backend: the syscalls' tracepoints, the arguments stashed at the entry (sec_calls)
 * and the event sent at the exit with the result; bpf() at its entry.
 *
 * Argument positions come from BTF (vigil/kernel/sec_hooks.py), like the file hooks'.
 */
#ifndef VIGIL_SEC_BPF_H
#define VIGIL_SEC_BPF_H

#include "cred.bpf.h"		/* tp_string */
#include "path.bpf.h"

const volatile __u32 pos_sec_ptrace_task = 0, pos_sec_ptrace_request = 1, ret_sec_ptrace = 4;
const volatile __u32 pos_sec_vm_rw_pid = 0, pos_sec_vm_rw_write = 6, ret_sec_vm_rw = 7;
const volatile __u32 pos_sec_mount_dev = 0, pos_sec_mount_path = 1, pos_sec_mount_type = 2,
		     pos_sec_mount_flags = 3, ret_sec_mount = 5;
const volatile __u32 pos_sec_umount_path = 0, pos_sec_umount_flags = 1;
const volatile __u32 pos_sec_pivot_old = 0, pos_sec_pivot_new = 1;
const volatile __u32 pos_sec_bpf_cmd = 0, pos_sec_bpf_attr = 1;
const volatile __u32 ret_sec_module = 3;

#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206
#define SIG_CHLD 17
#define SIG_URG 23
#define SIG_WINCH 28

/* A call followed from its entry to its exit (tracepoint backend; kprobe/kretprobe pairs). */
struct sec_call {
	__u32 op;
	__u32 _reserved;
	__u64 a[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);		/* thread id */
	__type(value, struct sec_call);
} sec_calls SEC(".maps");

/* Vigil's own programs, maps and links (kind << 32 | id), written by user space once loaded. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} own_ids SEC(".maps");

static __always_inline struct vigil_sec_event *sec_event(__u32 op)
{
	struct vigil_sec_event *e;

	e = new_event(VIGIL_EV_SEC);
	if (!e)
		return NULL;
	e->op = op;
	e->ret = 0;
	e->target_pid = 0;
	e->arg1 = 0;
	e->arg2 = 0;
	e->arg3 = 0;
	e->target_start_time = 0;
	__builtin_memset(e->target_comm, 0, sizeof(e->target_comm));
	__builtin_memset(e->name, 0, sizeof(e->name));
	e->path_len = 0;
	e->path2_len = 0;
	e->_reserved = 0;
	return e;
}

static __always_inline void sec_send(struct vigil_sec_event *e)
{
	e->hdr.size = sizeof(*e) + e->path_len + e->path2_len;
	submit_max(e, e->hdr.size, RECBUF_SIZE, VIGIL_STAT_DROP_SEC);
}

static __always_inline void sec_target(struct vigil_sec_event *e, struct task_struct *t)
{
	e->target_pid = KREAD(t, tgid);
	e->target_start_time = task_start(KREAD(t, group_leader));
	bpf_probe_read_kernel_str(e->target_comm, sizeof(e->target_comm), KADDR(t, comm));
}

/* The first path (built in pb) and a second part: a string (kernel or user memory). */
static __always_inline void sec_path(struct vigil_sec_event *e, struct pathbuf *pb, __u32 len)
{
	len = clamp_len(len);
	bpf_probe_read_kernel(e->data, len, pb->d);
	e->path_len = len;
}

static __always_inline void sec_string2(struct vigil_sec_event *e, const char *s, int user)
{
	__u32 at = clamp_len(e->path_len);
	long n = 0;

	if (s)
		n = user ? bpf_probe_read_user_str(&e->data[at], VIGIL_PATH_MAX, s)
			 : bpf_probe_read_kernel_str(&e->data[at], VIGIL_PATH_MAX, s);
	e->path2_len = n > 1 ? clamp_len(n - 1) : 0;
}

static __always_inline void sec_path2(struct vigil_sec_event *e, struct pathbuf *pb, __u32 len)
{
	__u32 at = clamp_len(e->path_len);

	len = clamp_len(len);
	bpf_probe_read_kernel(&e->data[at], len, pb->d);
	e->path2_len = len;
}

static __always_inline void sec_name(struct vigil_sec_event *e, const char *s, int user)
{
	if (!s)
		return;
	if (user)
		bpf_probe_read_user_str(e->name, sizeof(e->name), s);
	else
		bpf_probe_read_kernel_str(e->name, sizeof(e->name), s);
}

#define SCRATCH()								\
	__u32 zero = 0;								\
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);		\
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);		\
	__u16 pflags = 0;							\
	if (!wb || !pb)								\
		return 0

/* ---- what each call reports ---------------------------------------------------------------- */

static __always_inline int sec_ptrace(__u64 task, long request, long ret)
{
	struct task_struct *t = (struct task_struct *)task;
	struct vigil_sec_event *e;

	if (request != PTRACE_ATTACH && request != PTRACE_SEIZE)
		return 0;
	e = sec_event(VIGIL_SEC_PTRACE);
	if (!e)
		return 0;
	sec_target(e, t);
	e->arg1 = request;
	e->ret = ret < 0 ? ret : 0;
	sec_send(e);
	return 0;
}

/* ptrace(2) on the tracepoint backend: the target as the caller named it */
static __always_inline int sec_ptrace_pid(__u32 pid, long request, long ret)
{
	struct vigil_sec_event *e;

	if (request != PTRACE_ATTACH && request != PTRACE_SEIZE)
		return 0;
	e = sec_event(VIGIL_SEC_PTRACE);
	if (!e)
		return 0;
	e->target_pid = pid;
	e->arg1 = request;
	e->ret = ret < 0 ? ret : 0;
	sec_send(e);
	return 0;
}

static __always_inline int sec_vm_write(__u32 pid, __u32 write, long ret)
{
	struct vigil_sec_event *e;

	if (!write || pid == bpf_get_current_pid_tgid() >> 32)
		return 0;
	e = sec_event(VIGIL_SEC_VM_WRITE);
	if (!e)
		return 0;
	e->target_pid = pid;
	e->ret = ret < 0 ? ret : 0;
	e->arg2 = ret > 0 ? ret : 0;	/* bytes written */
	sec_send(e);
	return 0;
}

/* A path given as a struct path (kernel) or as a path argument (user memory). */
static __always_inline __u32 sec_where(struct pathbuf *pb, struct walkbuf *wb, __u64 where,
				       int user, __u16 *flags)
{
	if (user)
		return path_of_arg(pb, wb, AT_FDCWD, (const char *)where, flags);
	return path_of(pb, wb, (const struct path *)where, flags);
}

/* mount: `user` says where the strings are; the mount point is a struct path (kernel) or a
 * path argument (user). */
static __always_inline int sec_mount(__u64 dev, __u64 where, __u64 type, __u64 flags, long ret,
				     int user)
{
	SCRATCH();
	struct vigil_sec_event *e;
	__u32 len;

	len = sec_where(pb, wb, where, user, &pflags);
	e = sec_event(VIGIL_SEC_MOUNT);
	if (!e)
		return 0;
	e->hdr.flags = pflags & (VIGIL_F_PATH_TRUNC | VIGIL_F_UNNORMALIZED);
	e->ret = ret < 0 ? ret : 0;
	e->arg2 = flags;
	sec_name(e, (const char *)type, user);
	sec_path(e, pb, len);
	sec_string2(e, (const char *)dev, user);
	sec_send(e);
	return 0;
}

static __always_inline int sec_umount(__u64 where, __u32 flags, long ret, int user)
{
	SCRATCH();
	struct vigil_sec_event *e;
	__u32 len;

	len = sec_where(pb, wb, where, user, &pflags);
	e = sec_event(VIGIL_SEC_UMOUNT);
	if (!e)
		return 0;
	e->hdr.flags = pflags & (VIGIL_F_PATH_TRUNC | VIGIL_F_UNNORMALIZED);
	e->ret = ret < 0 ? ret : 0;
	e->arg2 = flags;
	sec_path(e, pb, len);
	sec_send(e);
	return 0;
}

static __always_inline int sec_pivot(__u64 new_root, __u64 put_old, long ret, int user)
{
	SCRATCH();
	struct vigil_sec_event *e;

	e = sec_event(VIGIL_SEC_PIVOT_ROOT);
	if (!e)
		return 0;
	sec_path(e, pb, sec_where(pb, wb, new_root, user, &pflags));
	sec_path2(e, pb, sec_where(pb, wb, put_old, user, &pflags));
	e->hdr.flags = pflags & (VIGIL_F_PATH_TRUNC | VIGIL_F_UNNORMALIZED);
	e->ret = ret < 0 ? ret : 0;
	sec_send(e);
	return 0;
}

/* A field of the bpf() attributes, in kernel (a copy) or user memory. */
#define ATTR(dst, attr, field, user) ({						\
	union bpf_attr *__a = (union bpf_attr *)(attr);				\
	user ? bpf_probe_read_user(&(dst), sizeof(dst), &__a->field)		\
	     : bpf_probe_read_kernel(&(dst), sizeof(dst), &__a->field);		\
})

/* A handle asked for on one of Vigil's own objects: bpftool reading them, or the first step
 * of detaching, replacing or rewriting them. Every other object's is not reported. */
static __always_inline int sec_bpf_own(__u32 cmd, __u64 attr, int user)
{
	struct vigil_sec_event *e;
	__u32 id = 0;
	__u64 key;

	ATTR(id, attr, prog_id, user);	/* prog_id, map_id and link_id share their place */
	key = (__u64)(cmd == BPF_PROG_GET_FD_BY_ID ? VIGIL_OWN_PROG :
		      cmd == BPF_MAP_GET_FD_BY_ID ? VIGIL_OWN_MAP : VIGIL_OWN_LINK) << 32 | id;
	if (!bpf_map_lookup_elem(&own_ids, &key))
		return 0;
	e = sec_event(VIGIL_SEC_BPF_OWN);
	if (!e)
		return 0;
	e->arg1 = cmd;
	e->arg2 = id;
	sec_send(e);
	return 0;
}

/* cmd: an int argument, whose register's upper half a trampoline or kprobe reads as it is */
static __always_inline int sec_bpf(__u32 cmd, __u64 attr, int user)
{
	struct vigil_sec_event *e;
	__u32 a = 0, b = 0;
	__u64 name = 0;

	if (is_self())
		return 0;
	if (cmd == BPF_PROG_GET_FD_BY_ID || cmd == BPF_MAP_GET_FD_BY_ID ||
	    cmd == BPF_LINK_GET_FD_BY_ID)
		return sec_bpf_own(cmd, attr, user);
	if (cmd != BPF_PROG_LOAD && cmd != BPF_LINK_CREATE && cmd != BPF_PROG_ATTACH &&
	    cmd != BPF_RAW_TRACEPOINT_OPEN)
		return 0;
	e = sec_event(cmd == BPF_PROG_LOAD ? VIGIL_SEC_BPF_PROG_LOAD : VIGIL_SEC_BPF_ATTACH);
	if (!e)
		return 0;
	e->arg1 = cmd;
	switch (cmd) {
	case BPF_PROG_LOAD:
		ATTR(a, attr, prog_type, user);
		ATTR(b, attr, expected_attach_type, user);
		if (user)
			bpf_probe_read_user(e->name, BPF_OBJ_NAME_LEN,
					    ((union bpf_attr *)attr)->prog_name);
		else
			bpf_probe_read_kernel(e->name, BPF_OBJ_NAME_LEN,
					      ((union bpf_attr *)attr)->prog_name);
		e->name[BPF_OBJ_NAME_LEN - 1] = 0;
		break;
	case BPF_LINK_CREATE:
		ATTR(a, attr, link_create.prog_fd, user);
		ATTR(b, attr, link_create.attach_type, user);
		break;
	case BPF_PROG_ATTACH:
		ATTR(a, attr, attach_bpf_fd, user);
		ATTR(b, attr, attach_type, user);
		break;
	case BPF_RAW_TRACEPOINT_OPEN:
		ATTR(a, attr, raw_tracepoint.prog_fd, user);
		ATTR(name, attr, raw_tracepoint.name, user);
		sec_name(e, (const char *)name, 1);	/* a user pointer either way */
		break;
	}
	e->arg2 = a;	/* PROG_LOAD: the program type; the attaches: the program's fd */
	e->arg3 = b;	/* the (expected) attach type */
	sec_send(e);
	return 0;
}

static __always_inline int sec_module_failed(long ret)
{
	struct vigil_sec_event *e;

	if (ret >= 0)
		return 0;	/* loaded: module:module_load reports it, with its name */
	e = sec_event(VIGIL_SEC_MODULE_LOAD);
	if (!e)
		return 0;
	e->ret = ret;
	sec_send(e);
	return 0;
}

/* ---- every backend --------------------------------------------------------------------------- */

SEC("tracepoint/module/module_load")
int sec_module_load(struct trace_event_raw_module_load *ctx)
{
	struct vigil_sec_event *e;

	/* a kernel without modules has neither the tracepoint nor its record type: never loaded
	 * there, and its relocations then resolve nowhere (dead code, for the offline check) */
	if (!bpf_core_type_exists(struct trace_event_raw_module_load))
		return 0;
	e = sec_event(VIGIL_SEC_MODULE_LOAD);
	if (!e)
		return 0;
	e->arg1 = KREAD(ctx, taints);
	sec_name(e, tp_string(ctx, KREAD(ctx, __data_loc_name)), 0);
	sec_send(e);
	return flush(ctx);
}

SEC("tracepoint/signal/signal_generate")
int sec_signal(struct trace_event_raw_signal_generate *ctx)
{
	struct vigil_sec_event *e;
	int sig;

	if (!cfg_self_tgid || KREAD(ctx, pid) != cfg_self_tgid || is_self())
		return 0;
	sig = KREAD(ctx, sig);
	if (sig == SIG_CHLD || sig == SIG_URG || sig == SIG_WINCH)
		return 0;
	e = sec_event(VIGIL_SEC_SIGNAL);
	if (!e)
		return 0;
	e->target_pid = cfg_self_tgid;
	e->arg1 = sig;
	e->arg2 = KREAD(ctx, result);
	sec_send(e);
	return flush(ctx);
}

/* ---- lsm and fentry backends ----------------------------------------------------------------- */

#define FE(i) ctx_arg(ctx, i)
#define FE_RET(slot) result(ctx_arg(ctx, slot), 0)

SEC("fexit/ptrace_attach")
int sec_fx_ptrace(__u64 *ctx)
{
	sec_ptrace(FE(pos_sec_ptrace_task), FE(pos_sec_ptrace_request), FE_RET(ret_sec_ptrace));
	return flush(ctx);
}

SEC("fexit/process_vm_rw")
int sec_fx_vm_rw(__u64 *ctx)
{
	sec_vm_write(FE(pos_sec_vm_rw_pid), FE(pos_sec_vm_rw_write), (long)FE(ret_sec_vm_rw));
	return flush(ctx);
}

SEC("fexit/path_mount")
int sec_fx_mount(__u64 *ctx)
{
	sec_mount(FE(pos_sec_mount_dev), FE(pos_sec_mount_path), FE(pos_sec_mount_type),
		  FE(pos_sec_mount_flags), FE_RET(ret_sec_mount), 0);
	return flush(ctx);
}

SEC("fentry/path_umount")
int sec_fe_umount(__u64 *ctx)
{
	sec_umount(FE(pos_sec_umount_path), FE(pos_sec_umount_flags), 0, 0);
	return flush(ctx);
}

SEC("fentry/security_sb_pivotroot")
int sec_fe_pivot(__u64 *ctx)
{
	sec_pivot(FE(pos_sec_pivot_new), FE(pos_sec_pivot_old), 0, 0);
	return flush(ctx);
}

SEC("fentry/security_bpf")
int sec_fe_bpf(__u64 *ctx)
{
	sec_bpf(FE(pos_sec_bpf_cmd), FE(pos_sec_bpf_attr), 0);
	return flush(ctx);
}

SEC("fexit/load_module")
int sec_fx_module(__u64 *ctx)
{
	sec_module_failed(FE_RET(ret_sec_module));
	return flush(ctx);
}

/* ---- kprobe backend -------------------------------------------------------------------------- */

static __always_inline int sec_stash(__u32 op, __u64 a0, __u64 a1, __u64 a2, __u64 a3)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct sec_call c = { .op = op, .a = { a0, a1, a2, a3 } };

	bpf_map_update_elem(&sec_calls, &tid, &c, BPF_ANY);
	return 0;
}

/* The stashed call of this thread, taken out of the map (a copy: the map entry is deleted). */
static __always_inline int sec_unstash(__u32 op, struct sec_call *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct sec_call *c = bpf_map_lookup_elem(&sec_calls, &tid);

	if (!c)
		return 0;
	*out = *c;
	bpf_map_delete_elem(&sec_calls, &tid);
	return out->op == op;
}

SEC("kprobe/ptrace_attach")
int sec_kp_ptrace(struct pt_regs *r)
{
	return sec_stash(VIGIL_SEC_PTRACE, kp_arg(r, pos_sec_ptrace_task),
			 kp_arg(r, pos_sec_ptrace_request), 0, 0);
}

SEC("kretprobe/ptrace_attach")
int sec_kr_ptrace(struct pt_regs *r)
{
	struct sec_call c;

	if (sec_unstash(VIGIL_SEC_PTRACE, &c))
		sec_ptrace(c.a[0], c.a[1], (int)KP_RET(r));
	return flush(r);
}

SEC("kprobe/path_mount")
int sec_kp_mount(struct pt_regs *r)
{
	return sec_stash(VIGIL_SEC_MOUNT, kp_arg(r, pos_sec_mount_dev),
			 kp_arg(r, pos_sec_mount_path), kp_arg(r, pos_sec_mount_type),
			 kp_arg(r, pos_sec_mount_flags));
}

SEC("kretprobe/path_mount")
int sec_kr_mount(struct pt_regs *r)
{
	struct sec_call c;

	if (sec_unstash(VIGIL_SEC_MOUNT, &c))
		sec_mount(c.a[0], c.a[1], c.a[2], c.a[3], (int)KP_RET(r), 0);
	return flush(r);
}

SEC("kprobe/path_umount")
int sec_kp_umount(struct pt_regs *r)
{
	sec_umount(kp_arg(r, pos_sec_umount_path), kp_arg(r, pos_sec_umount_flags), 0, 0);
	return flush(r);
}

SEC("kprobe/security_sb_pivotroot")
int sec_kp_pivot(struct pt_regs *r)
{
	sec_pivot(kp_arg(r, pos_sec_pivot_new), kp_arg(r, pos_sec_pivot_old), 0, 0);
	return flush(r);
}

SEC("kprobe/security_bpf")
int sec_kp_bpf(struct pt_regs *r)
{
	sec_bpf(kp_arg(r, pos_sec_bpf_cmd), kp_arg(r, pos_sec_bpf_attr), 0);
	return flush(r);
}

SEC("kretprobe/load_module")
int sec_kr_module(struct pt_regs *r)
{
	sec_module_failed((int)KP_RET(r));
	return flush(r);
}

/* ---- tracepoint backend: the syscalls -------------------------------------------------------- */

#define SEC_ENTER(sc) SEC("tracepoint/syscalls/sys_enter_" #sc) \
	int sec_enter_##sc(struct trace_event_raw_sys_enter *ctx)
#define SEC_EXIT(sc) SEC("tracepoint/syscalls/sys_exit_" #sc) \
	int sec_exit_##sc(struct trace_event_raw_sys_exit *ctx)
#define TP_ARG(n) (ctx->args[n])

SEC_ENTER(ptrace) { return sec_stash(VIGIL_SEC_PTRACE, TP_ARG(0), TP_ARG(1), 0, 0); }
SEC_EXIT(ptrace)
{
	struct sec_call c;

	if (sec_unstash(VIGIL_SEC_PTRACE, &c))
		sec_ptrace_pid(c.a[1], c.a[0], KREAD(ctx, ret));
	return flush(ctx);
}

SEC_ENTER(process_vm_writev) { return sec_stash(VIGIL_SEC_VM_WRITE, TP_ARG(0), 0, 0, 0); }
SEC_EXIT(process_vm_writev)
{
	struct sec_call c;

	if (sec_unstash(VIGIL_SEC_VM_WRITE, &c))
		sec_vm_write(c.a[0], 1, KREAD(ctx, ret));
	return flush(ctx);
}

/* The exits of mount, umount and pivot_root resolve path arguments (path_of_arg, most of what
 * the verifier checks in them): one handler, reached by tail call when this thread's stashed
 * call is the exiting syscall's, verified once instead of three times. */
SEC("tracepoint")
int handle_sec_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct sec_call *p = bpf_map_lookup_elem(&sec_calls, &tid);
	long ret = KREAD(ctx, ret);
	struct sec_call c;

	if (!p)
		return 0;
	c = *p;
	bpf_map_delete_elem(&sec_calls, &tid);
	if (c.op == VIGIL_SEC_MOUNT)
		sec_mount(c.a[0], c.a[1], c.a[2], c.a[3], ret, 1);
	else if (c.op == VIGIL_SEC_UMOUNT)
		sec_umount(c.a[0], c.a[1], ret, 1);
	else if (c.op == VIGIL_SEC_PIVOT_ROOT)
		sec_pivot(c.a[0], c.a[1], ret, 1);
	return flush(ctx);
}

static __always_inline int sec_path_exit(void *ctx, __u32 op)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct sec_call *c = bpf_map_lookup_elem(&sec_calls, &tid);

	if (!c)
		return 0;
	if (c->op == op)
		handoff(ctx, H_SEC_EXIT);
	bpf_map_delete_elem(&sec_calls, &tid);	/* another call's, or no handler */
	return 0;
}

SEC_ENTER(mount)
{
	return sec_stash(VIGIL_SEC_MOUNT, TP_ARG(0), TP_ARG(1), TP_ARG(2), TP_ARG(3));
}
SEC_EXIT(mount) { return sec_path_exit(ctx, VIGIL_SEC_MOUNT); }

SEC_ENTER(umount) { return sec_stash(VIGIL_SEC_UMOUNT, TP_ARG(0), TP_ARG(1), 0, 0); }
SEC_EXIT(umount) { return sec_path_exit(ctx, VIGIL_SEC_UMOUNT); }

SEC_ENTER(pivot_root) { return sec_stash(VIGIL_SEC_PIVOT_ROOT, TP_ARG(0), TP_ARG(1), 0, 0); }
SEC_EXIT(pivot_root) { return sec_path_exit(ctx, VIGIL_SEC_PIVOT_ROOT); }

SEC_ENTER(bpf)
{
	sec_bpf(TP_ARG(0), TP_ARG(1), 1);
	return flush(ctx);
}

SEC_EXIT(init_module)
{
	sec_module_failed(KREAD(ctx, ret));
	return flush(ctx);
}

SEC_EXIT(finit_module)
{
	sec_module_failed(KREAD(ctx, ret));
	return flush(ctx);
}

#endif /* VIGIL_SEC_BPF_H */
