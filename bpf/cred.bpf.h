/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Privilege changes: a record with the credentials before and after (struct vigil_cred_event)
 * whenever a set*id call, capset or an exec changes a process's ids or capabilities, and an
 * escalation record when more privilege arrives that none of them explains.
 *
 * lsm, fentry and kprobe backends: the kernel's own checkpoints, each given the old and the new
 * credentials, before commit_creds() installs the new ones (the set*id and capset hooks at
 * their return, fexit or kretprobe: the LSMs finish the new credentials inside them):
 *   security_task_fix_setuid(new, old, flags)   setuid, setreuid, setresuid, setfsuid (flags)
 *   security_task_fix_setgid(new, old, flags)   the gid calls
 *   security_capset(new, old, ...)              capset
 *   security_bprm_committing_creds(bprm)        exec: bprm->cred against the caller's
 * Each marks the new credentials as explained (cred_why, keyed by thread) and reports the change.
 * commit_creds(new) then installs them: credentials it installs that gain root ids or
 * capabilities (in the same user namespace) with no explanation for exactly that struct cred
 * are what a kernel exploit's commit_creds(prepare_kernel_cred(0)) looks like: an escalation.
 *
 * Tracepoint backend: the syscalls' tracepoints (the credentials stashed at the entry, compared
 * at the exit) and exec (stashed at execve/execveat's entry, compared at sched_process_exec).
 * It cannot see commit_creds: user space catches what it can (vigil/events/creds.py).
 *
 * Only changes are reported: a setuid() to the uid a process already has sends nothing.
 */
#ifndef VIGIL_CRED_BPF_H
#define VIGIL_CRED_BPF_H

#include "send.bpf.h"
#include "vfs.bpf.h"		/* ctx_arg, kp_arg */

/* pos_cred_<fn>_<arg>: the argument's index (vigil/kernel/sec_hooks.py, from BTF) */
const volatile __u32 pos_cred_fix_setuid_new = 0, pos_cred_fix_setuid_old = 1,
		     pos_cred_fix_setuid_flags = 2;
const volatile __u32 pos_cred_fix_setgid_new = 0, pos_cred_fix_setgid_old = 1,
		     pos_cred_fix_setgid_flags = 2;
const volatile __u32 pos_cred_capset_new = 0, pos_cred_capset_old = 1;
const volatile __u32 pos_cred_bprm_bprm = 0;
const volatile __u32 pos_cred_commit_new = 0;

#define LSM_SETID_ID 1
#define LSM_SETID_RE 2
#define LSM_SETID_RES 4
#define LSM_SETID_FS 8

/* The credentials a thread's set*id call, capset or exec prepared: commit_creds of exactly
 * these is explained. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);		/* thread id */
	__type(value, __u64);		/* struct cred * */
} cred_why SEC(".maps");

/* Tracepoint backend: the credentials at a call's entry. */
struct cred_stash {
	__u32 op;
	__u32 _reserved;
	struct vigil_creds old;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);		/* thread id */
	__type(value, struct cred_stash);
} cred_stashed SEC(".maps");

/* A kernel_cap_t, 64 bits: { u64 val } since 6.3, { u32 cap[2] } before (cap[0] holds
 * capabilities 0-31): read as the kernel lays it out, the same code for either byte order. */
static __always_inline __u64 kcap(const void *addr, int old_layout)
{
	__u32 half[2] = {};
	__u64 v = 0;

	if (old_layout) {
		bpf_probe_read_kernel(half, sizeof(half), addr);
		return (__u64)half[1] << 32 | half[0];
	}
	bpf_probe_read_kernel(&v, sizeof(v), addr);
	return v;
}

static __noinline void read_creds(const struct cred *c, struct vigil_creds *o)
{
	int old_layout = !bpf_core_field_exists(c->cap_effective.val);

	o->uid = KREAD(c, uid.val);
	o->gid = KREAD(c, gid.val);
	o->suid = KREAD(c, suid.val);
	o->sgid = KREAD(c, sgid.val);
	o->euid = KREAD(c, euid.val);
	o->egid = KREAD(c, egid.val);
	o->fsuid = KREAD(c, fsuid.val);
	o->fsgid = KREAD(c, fsgid.val);
	o->cap_effective = kcap(KADDR(c, cap_effective), old_layout);
	o->cap_permitted = kcap(KADDR(c, cap_permitted), old_layout);
	o->cap_inheritable = kcap(KADDR(c, cap_inheritable), old_layout);
	o->user_ns = KREAD(c, user_ns, ns.inum);
}

static __always_inline const struct cred *current_cred(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	return KREAD(t, cred);
}

static __always_inline int creds_differ(const struct vigil_creds *a, const struct vigil_creds *b)
{
	return a->uid != b->uid || a->gid != b->gid || a->suid != b->suid || a->sgid != b->sgid ||
	       a->euid != b->euid || a->egid != b->egid || a->fsuid != b->fsuid ||
	       a->fsgid != b->fsgid || a->cap_effective != b->cap_effective ||
	       a->cap_permitted != b->cap_permitted || a->cap_inheritable != b->cap_inheritable;
}

#define GAINED_ROOT(f) (n->f == 0 && o->f != 0)

/* More privilege: a root id it did not have, or capabilities beyond what it was permitted in
 * the same user namespace (a new user namespace's full set counts only inside it). */
static __always_inline int escalates(const struct vigil_creds *o, const struct vigil_creds *n)
{
	return GAINED_ROOT(uid) || GAINED_ROOT(euid) || GAINED_ROOT(suid) || GAINED_ROOT(fsuid) ||
	       GAINED_ROOT(gid) || GAINED_ROOT(egid) || GAINED_ROOT(sgid) || GAINED_ROOT(fsgid) ||
	       (n->user_ns == o->user_ns &&
		((n->cap_effective | n->cap_permitted) & ~o->cap_permitted));
}

/* What an exec reports: a program that changes the effective ids (setuid, setgid) or brings
 * capabilities the caller was not permitted (file capabilities). Every exec by a process
 * holding capabilities without being root drops them: not reported. */
static __always_inline int exec_gains(const struct vigil_creds *o, const struct vigil_creds *n)
{
	return n->euid != o->euid || n->egid != o->egid ||
	       (n->user_ns == o->user_ns &&
		((n->cap_effective | n->cap_permitted) & ~o->cap_permitted));
}

static __always_inline struct vigil_cred_event *cred_event(__u32 op)
{
	struct vigil_cred_event *e;

	e = new_event(VIGIL_EV_CRED);
	if (e) {
		e->op = op;
		e->path_len = 0;
	}
	return e;
}

static __always_inline void cred_send(struct vigil_cred_event *e)
{
	e->hdr.size = sizeof(*e) + e->path_len;
	submit(e, e->hdr.size, VIGIL_STAT_DROP_CRED);
}

/* old -> new, reported when they differ; `name`: an exec's program (kernel string) */
static __always_inline void cred_change(__u32 op, const struct cred *old, const struct cred *new,
					const char *name)
{
	struct vigil_cred_event *e = cred_event(op);

	if (!e)
		return;
	read_creds(old, &e->old);
	read_creds(new, &e->new);
	if (!creds_differ(&e->old, &e->new) ||
	    (op == VIGIL_CRED_EXEC && !exec_gains(&e->old, &e->new)))
		return;
	if (name) {
		long n = bpf_probe_read_kernel_str(e->data, VIGIL_PATH_MAX, name);

		e->path_len = n > 1 ? clamp_len(n - 1) : 0;
	}
	cred_send(e);
}

static __always_inline void explain(__u64 new)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	bpf_map_update_elem(&cred_why, &tid, &new, BPF_ANY);
}

static __always_inline __u32 setuid_op(__u32 flags, __u32 base)
{
	/* base: VIGIL_CRED_SETUID or VIGIL_CRED_SETGID, each followed by re, res, fs */
	if (flags & LSM_SETID_RE)
		return base + 1;
	if (flags & LSM_SETID_RES)
		return base + 2;
	if (flags & LSM_SETID_FS)
		return base + 3;
	return base;
}

/* At the hook's return: the LSMs have finished the new credentials (commoncap fills capset's
 * sets, and adjusts the capabilities of a uid change, in the hook itself). A refusal (ret)
 * commits nothing. */
static __always_inline int cred_fix_id(__u64 new, __u64 old, __u32 flags, __u32 base, long ret)
{
	if (ret)
		return 0;
	explain(new);
	cred_change(setuid_op(flags, base), (const struct cred *)old, (const struct cred *)new,
		    NULL);
	return 0;
}

static __always_inline int cred_capset(__u64 new, __u64 old, long ret)
{
	if (ret)
		return 0;
	explain(new);
	cred_change(VIGIL_CRED_CAPSET, (const struct cred *)old, (const struct cred *)new, NULL);
	return 0;
}

static __always_inline int cred_bprm(__u64 bprm)
{
	struct linux_binprm *b = (struct linux_binprm *)bprm;
	const struct cred *new = KREAD(b, cred);

	explain((__u64)new);
	cred_change(VIGIL_CRED_EXEC, current_cred(), new, KREAD(b, filename));
	return 0;
}

static __always_inline int cred_commit(__u64 new)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *why = bpf_map_lookup_elem(&cred_why, &tid);
	struct vigil_cred_event *e;

	if (why) {
		__u64 explained = *why;

		bpf_map_delete_elem(&cred_why, &tid);
		if (explained == new)
			return 0;
	}
	e = cred_event(VIGIL_CRED_ESCALATION);
	if (!e)
		return 0;
	read_creds(current_cred(), &e->old);
	read_creds((const struct cred *)new, &e->new);
	if (escalates(&e->old, &e->new))
		cred_send(e);
	return 0;
}

const volatile __u32 ret_cred_fix_setuid = 3, ret_cred_fix_setgid = 3, ret_cred_capset = 5;

/* ---- lsm and fentry backends ----------------------------------------------------------------- */

#define CRED_ARG(i) ctx_arg(ctx, i)
#define CRED_RET(slot) result(ctx_arg(ctx, slot), 0)

SEC("fexit/security_task_fix_setuid")
int cred_fx_fix_setuid(__u64 *ctx)
{
	cred_fix_id(CRED_ARG(pos_cred_fix_setuid_new), CRED_ARG(pos_cred_fix_setuid_old),
		    CRED_ARG(pos_cred_fix_setuid_flags), VIGIL_CRED_SETUID,
		    CRED_RET(ret_cred_fix_setuid));
	return flush(ctx);
}

SEC("fexit/security_task_fix_setgid")
int cred_fx_fix_setgid(__u64 *ctx)
{
	cred_fix_id(CRED_ARG(pos_cred_fix_setgid_new), CRED_ARG(pos_cred_fix_setgid_old),
		    CRED_ARG(pos_cred_fix_setgid_flags), VIGIL_CRED_SETGID,
		    CRED_RET(ret_cred_fix_setgid));
	return flush(ctx);
}

SEC("fexit/security_capset")
int cred_fx_capset(__u64 *ctx)
{
	cred_capset(CRED_ARG(pos_cred_capset_new), CRED_ARG(pos_cred_capset_old),
		    CRED_RET(ret_cred_capset));
	return flush(ctx);
}

SEC("fentry/security_bprm_committing_creds")
int cred_fe_bprm(__u64 *ctx)
{
	cred_bprm(CRED_ARG(pos_cred_bprm_bprm));
	return flush(ctx);
}

SEC("fentry/commit_creds")
int cred_fe_commit(__u64 *ctx)
{
	cred_commit(CRED_ARG(pos_cred_commit_new));
	return flush(ctx);
}

/* ---- kprobe backend: the hooks' arguments kept from the kprobe to the kretprobe ------------- */

struct cred_call {
	__u64 new;
	__u64 old;
	__u64 flags;
	__u32 fn;		/* which hook (CALL_*): a stale entry of another is not taken */
	__u32 _reserved;
};

#define CALL_FIX_SETUID 1
#define CALL_FIX_SETGID 2
#define CALL_CAPSET 3

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);		/* thread id */
	__type(value, struct cred_call);
} cred_calls SEC(".maps");

/* The credentials are explained at the entry already: a kretprobe can miss its return (too
 * many at once), and a missed explanation would make a legitimate setuid an escalation.
 * Credentials a refusal abandons are never committed, so explaining them early is harmless. */
static __always_inline int cred_keep(__u32 fn, __u64 new, __u64 old, __u64 flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct cred_call c = { .new = new, .old = old, .flags = flags, .fn = fn };

	explain(new);
	bpf_map_update_elem(&cred_calls, &tid, &c, BPF_ANY);
	return 0;
}

static __always_inline int cred_take(__u32 fn, struct cred_call *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct cred_call *c = bpf_map_lookup_elem(&cred_calls, &tid);

	if (!c)
		return 0;
	*out = *c;
	bpf_map_delete_elem(&cred_calls, &tid);
	return out->fn == fn;
}

SEC("kprobe/security_task_fix_setuid")
int cred_kp_fix_setuid(struct pt_regs *r)
{
	return cred_keep(CALL_FIX_SETUID, kp_arg(r, pos_cred_fix_setuid_new),
			 kp_arg(r, pos_cred_fix_setuid_old), kp_arg(r, pos_cred_fix_setuid_flags));
}

SEC("kretprobe/security_task_fix_setuid")
int cred_kr_fix_setuid(struct pt_regs *r)
{
	struct cred_call c;

	if (cred_take(CALL_FIX_SETUID, &c))
		cred_fix_id(c.new, c.old, c.flags, VIGIL_CRED_SETUID, (int)KP_RET(r));
	return flush(r);
}

SEC("kprobe/security_task_fix_setgid")
int cred_kp_fix_setgid(struct pt_regs *r)
{
	return cred_keep(CALL_FIX_SETGID, kp_arg(r, pos_cred_fix_setgid_new),
			 kp_arg(r, pos_cred_fix_setgid_old), kp_arg(r, pos_cred_fix_setgid_flags));
}

SEC("kretprobe/security_task_fix_setgid")
int cred_kr_fix_setgid(struct pt_regs *r)
{
	struct cred_call c;

	if (cred_take(CALL_FIX_SETGID, &c))
		cred_fix_id(c.new, c.old, c.flags, VIGIL_CRED_SETGID, (int)KP_RET(r));
	return flush(r);
}

SEC("kprobe/security_capset")
int cred_kp_capset(struct pt_regs *r)
{
	return cred_keep(CALL_CAPSET, kp_arg(r, pos_cred_capset_new),
			 kp_arg(r, pos_cred_capset_old), 0);
}

SEC("kretprobe/security_capset")
int cred_kr_capset(struct pt_regs *r)
{
	struct cred_call c;

	if (cred_take(CALL_CAPSET, &c))
		cred_capset(c.new, c.old, (int)KP_RET(r));
	return flush(r);
}

SEC("kprobe/security_bprm_committing_creds")
int cred_kp_bprm(struct pt_regs *r)
{
	cred_bprm(kp_arg(r, pos_cred_bprm_bprm));
	return flush(r);
}

SEC("kprobe/commit_creds")
int cred_kp_commit(struct pt_regs *r)
{
	cred_commit(kp_arg(r, pos_cred_commit_new));
	return flush(r);
}

/* ---- the tracepoint backend: syscalls and exec ------------------------------------------- */

static __always_inline int cred_remember(__u32 op)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct cred_stash *s;

	/* built in the per-CPU record scratch, then copied into the map */
	s = bpf_map_lookup_elem(&ev_scratch, &zero);
	if (!s)
		return 0;
	s->op = op;
	s->_reserved = 0;
	read_creds(current_cred(), &s->old);
	bpf_map_update_elem(&cred_stashed, &tid, s, BPF_ANY);
	return 0;
}

/* At the exit (or at sched_process_exec, with the thread that called exec): the stash against
 * the credentials now. */
static __always_inline void cred_compare(__u32 tid, const char *name)
{
	struct cred_stash *s = bpf_map_lookup_elem(&cred_stashed, &tid);
	struct vigil_cred_event *e;

	if (!s)
		return;
	e = cred_event(s->op);
	if (e) {
		e->old = s->old;
		read_creds(current_cred(), &e->new);
		if (creds_differ(&e->old, &e->new) &&
		    (s->op != VIGIL_CRED_EXEC || exec_gains(&e->old, &e->new))) {
			if (name) {
				long n = bpf_probe_read_kernel_str(e->data, VIGIL_PATH_MAX, name);

				e->path_len = n > 1 ? clamp_len(n - 1) : 0;
			}
			cred_send(e);
		}
	}
	bpf_map_delete_elem(&cred_stashed, &tid);
}

/* The exit of every set*id and capset call: one program, reached by tail call from each
 * syscall's exit program (syscalls_file.bpf.h: handlers). */
SEC("tracepoint")
int handle_cred_exit(void *ctx)
{
	cred_compare((__u32)bpf_get_current_pid_tgid(), NULL);
	return flush(ctx);
}

#define CRED_SYSCALL(sc, op)								\
	SEC("tracepoint/syscalls/sys_enter_" #sc)					\
	int cred_enter_##sc(void *ctx) { return cred_remember(op); }			\
	SEC("tracepoint/syscalls/sys_exit_" #sc)					\
	int cred_exit_##sc(void *ctx) { handoff(ctx, H_CRED_EXIT); return 0; }

CRED_SYSCALL(setuid, VIGIL_CRED_SETUID)
CRED_SYSCALL(setreuid, VIGIL_CRED_SETREUID)
CRED_SYSCALL(setresuid, VIGIL_CRED_SETRESUID)
CRED_SYSCALL(setfsuid, VIGIL_CRED_SETFSUID)
CRED_SYSCALL(setgid, VIGIL_CRED_SETGID)
CRED_SYSCALL(setregid, VIGIL_CRED_SETREGID)
CRED_SYSCALL(setresgid, VIGIL_CRED_SETRESGID)
CRED_SYSCALL(setfsgid, VIGIL_CRED_SETFSGID)
CRED_SYSCALL(capset, VIGIL_CRED_CAPSET)

SEC("tracepoint/syscalls/sys_enter_execve")
int cred_enter_execve(void *ctx) { return cred_remember(VIGIL_CRED_EXEC); }
SEC("tracepoint/syscalls/sys_enter_execveat")
int cred_enter_execveat(void *ctx) { return cred_remember(VIGIL_CRED_EXEC); }

/* A failed exec leaves its stash: dropped at the exit (which a successful exec reaches too,
 * with nothing left to drop). */
SEC("tracepoint/syscalls/sys_exit_execve")
int cred_exit_execve(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&cred_stashed, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int cred_exit_execveat(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&cred_stashed, &tid);
	return 0;
}

/* The string a tracepoint record's __data_loc field points at: the record's start plus the low
 * 16 bits. The verifier allows no variable offset from ctx: its address is taken as a number. */
static __always_inline const char *tp_string(void *ctx, __u32 loc)
{
	__u64 base = 0;

	bpf_probe_read_kernel(&base, sizeof(base), &ctx);
	return (const char *)(base + (loc & 0xffff));
}

/* The new program runs: its credentials against those of the thread that called exec (old_pid:
 * a thread other than the leader takes the leader's pid). */
SEC("tracepoint/sched/sched_process_exec")
int cred_exec_tp(struct trace_event_raw_sched_process_exec *ctx)
{
	cred_compare(KREAD(ctx, old_pid), tp_string(ctx, KREAD(ctx, __data_loc_filename)));
	return flush(ctx);
}

#endif /* VIGIL_CRED_BPF_H */
