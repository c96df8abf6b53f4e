/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Who: the acting task, as every record carries it (struct vigil_proc): pid and thread, the
 * start times that make the process's identity with its pid, the parent, credentials, login uid
 * and session, cgroup, mount namespace and comm.
 */
#ifndef VIGIL_PROC_BPF_H
#define VIGIL_PROC_BPF_H

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

#endif /* VIGIL_PROC_BPF_H */
