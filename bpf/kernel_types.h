/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The few kernel types Vigil's BPF programs read, declared by hand.
 *
 * Every struct carries preserve_access_index, so clang records each field access as a CO-RE
 * relocation and libbpf resolves it against the running kernel's BTF (or a tailored BTF) at load:
 * the offsets written here do not matter, only the names. Only the fields we read are declared.
 * This replaces a generated vmlinux.h: smaller, reviewable, and the same on every architecture.
 */
#ifndef VIGIL_KERNEL_TYPES_H
#define VIGIL_KERNEL_TYPES_H

#include <linux/types.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;

#define CORE __attribute__((preserve_access_index))

typedef struct { int counter; } CORE atomic_t;
typedef struct { s64 counter; } CORE atomic_long_t;
typedef struct { unsigned int val; } CORE kuid_t;
typedef struct { unsigned int val; } CORE kgid_t;

struct qstr {
	union {
		struct {
			u32 hash;
			u32 len;
		};
		u64 hash_len;
	};
	const unsigned char *name;
} CORE;

struct super_block {
	u32 s_dev;
} CORE;

struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
	struct super_block *i_sb;
} CORE;

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
} CORE;

struct vfsmount {
	struct dentry *mnt_root;
} CORE;

/* fs/mount.h: not exported to modules, but present in the kernel's BTF. */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} CORE;

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} CORE;

/* Since 6.13 (commit "fs: add file_ref") the reference count is a file_ref_t. */
typedef struct { atomic_long_t refcnt; } CORE file_ref_t;

struct file {
	struct path f_path;
	struct inode *f_inode;
	unsigned int f_mode;
	unsigned int f_flags;
	atomic_long_t f_count;
	file_ref_t f_ref;
} CORE;

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} CORE;

struct files_struct {
	struct fdtable *fdt;
} CORE;

struct fs_struct {
	int umask;
	struct path root;
	struct path pwd;
} CORE;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
} CORE;

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t euid;
	kgid_t egid;
} CORE;

struct signal_struct {
	atomic_t live;
} CORE;

struct ns_common {
	unsigned int inum;
} CORE;

struct mnt_namespace {
	struct ns_common ns;
} CORE;

struct nsproxy {
	struct mnt_namespace *mnt_ns;
} CORE;

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	u64 start_time;
	u64 start_boottime;
	unsigned int sessionid;
	kuid_t loginuid;
	char comm[16];
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	const struct cred *cred;
	struct files_struct *files;
	struct fs_struct *fs;
	struct mm_struct *mm;
	struct signal_struct *signal;
	struct nsproxy *nsproxy;
} CORE;

/* Before 5.5 the boot-based start time was called real_start_time. */
struct task_struct___pre55 {
	u64 real_start_time;
} CORE;

/* Raw layouts of the syscall tracepoints (trace_event_raw_sys_enter/exit in the kernel's BTF):
 * relocated too, so 32-bit kernels with 4-byte arguments resolve correctly. */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
} CORE;

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
} CORE;

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
} CORE;

/* include/uapi/linux/openat2.h */
struct open_how {
	u64 flags;
	u64 mode;
	u64 resolve;
};

#endif /* VIGIL_KERNEL_TYPES_H */
