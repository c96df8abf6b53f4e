/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Interactive shell commands: a uretprobe on the shell's line reader (bash's `readline`, its
 * own or libreadline's) sends each non-empty line it returns, with the shell's who-data, its
 * controlling terminal and its session leader. User space attaches it per binary
 * (vigil/kernel/uprobes.py): the program is never attached by section.
 */
#ifndef VIGIL_SHELL_BPF_H
#define VIGIL_SHELL_BPF_H

#include "send.bpf.h"

_Static_assert(sizeof(struct vigil_shell_event) + VIGIL_SHELL_MAX + 1 <= RECBUF_SIZE,
	       "the scratch record must hold a command line");

/* The terminal (major, minor, name) and the session leader of the current task. */
static __always_inline void shell_tty(struct vigil_shell_event *e)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct signal_struct *sig = KREAD(t, signal);
	struct tty_struct *tty = KREAD(sig, tty);

	e->tty_major = 0;
	e->tty_minor = 0;
	e->tty_name[0] = 0;
	e->session_leader = 0;
	if (tty) {
		struct tty_driver *drv = KREAD(tty, driver);

		e->tty_major = KREAD(drv, major);
		e->tty_minor = KREAD(drv, minor_start) + KREAD(tty, index);
		bpf_probe_read_kernel_str(e->tty_name, sizeof(e->tty_name), KADDR(tty, name));
	}
	/* PIDTYPE_SID is 3 wherever signal_struct has pids[] (both came in 4.19); a CO-RE enum
	 * relocation as the index crashes clang 14. */
	if (bpf_core_field_exists(sig->pids)) {
		struct pid *sid = (struct pid *)KELEM(sig, pids[PIDTYPE_SID]);

		if (sid)
			e->session_leader = KREAD(sid, numbers[0].nr);
	}
}

SEC("uretprobe")
int shell_readline(struct pt_regs *ctx)
{
	const char *line = (const char *)KP_RET(ctx);
	struct vigil_shell_event *e;
	char first = 0;
	long n;

	/* NULL (end of input) and empty lines are not commands */
	if (!line || bpf_probe_read_user(&first, 1, line) || !first)
		return 0;
	e = new_event(VIGIL_EV_SHELL);
	if (!e)
		return 0;
	n = bpf_probe_read_user_str(e->data, VIGIL_SHELL_MAX + 1, line);
	if (n <= 1)
		return 0;
	n -= 1;				/* its NUL */
	if (n >= VIGIL_SHELL_MAX) {
		n = VIGIL_SHELL_MAX;
		/* cut, unless the line is exactly that long */
		if (bpf_probe_read_user(&first, 1, line + VIGIL_SHELL_MAX) || first)
			e->hdr.flags = VIGIL_F_ARGS_TRUNC;
	}
	shell_tty(e);
	e->len = n;
	e->hdr.size = sizeof(struct vigil_shell_event) + n;
	submit_max(e, e->hdr.size, RECBUF_SIZE, VIGIL_STAT_DROP_SHELL);
	return flush(ctx);
}

#endif /* VIGIL_SHELL_BPF_H */
