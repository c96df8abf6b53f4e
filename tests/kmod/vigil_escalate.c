// SPDX-License-Identifier: GPL-2.0
/*
 * vigil_escalate: a TEST module for Vigil's kernel matrix, never for a real system.
 *
 * It does what a kernel exploit's payload does, so that Vigil's detections can be tested for
 * real inside the test VMs: loading it is a module load (tracepoint module:module_load), and a
 * write of anything to /proc/vigil_escalate (mode 0222: any user may write) replaces the
 * writer's credentials with root's through commit_creds(prepare_kernel_cred(...)), with no
 * set*id syscall and no setuid exec involved. Unloading it removes the proc file.
 *
 * Built on the host against Debian's kernel headers by tests/vm/kmod_build.py; loaded and
 * unloaded by the tests in the guest (tests/kernel/kmod.py finds it).
 */
#include <linux/cred.h>
#include <linux/errno.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/sched/task.h>
#include <linux/version.h>

#define PROC_NAME "vigil_escalate"

static struct proc_dir_entry *entry;

/* Any write: the writing task becomes uid/gid 0 with full capabilities. */
static ssize_t escalate_write(struct file *file, const char __user *buf, size_t len,
			      loff_t *pos)
{
	struct cred *root;

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	/* Since 6.2 a NULL argument is refused: copy the init task's credentials. */
	root = prepare_kernel_cred(&init_task);
#else
	/* Before 6.2, NULL means the init task's credentials (root, all capabilities). */
	root = prepare_kernel_cred(NULL);
#endif
	if (!root)
		return -ENOMEM;
	commit_creds(root); /* takes our reference; never fails */
	return len;
}

static const struct proc_ops escalate_ops = {
	.proc_write = escalate_write,
};

/*
 * Not __init/__exit: those imply __cold, and the 6.12 module is built with the host's gcc-12
 * for a gcc-14 kernel, which would leave cold functions without the 16-byte alignment the
 * kernel's configuration (CONFIG_FUNCTION_ALIGNMENT) promises; plain functions keep it.
 */
static int escalate_init(void)
{
	entry = proc_create(PROC_NAME, 0222, NULL, &escalate_ops);
	return entry ? 0 : -ENOMEM;
}

static void escalate_exit(void)
{
	proc_remove(entry);
}

module_init(escalate_init);
module_exit(escalate_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Vigil test module: /proc/vigil_escalate gives its writer root credentials");
