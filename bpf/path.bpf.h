/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Where: paths from kernel objects. vigil_walk_path() walks (dentry, vfsmount) up to the root of
 * the task's mount namespace; path_of_dentry() and path_of() copy such a path, path_of_arg() and
 * path_of_karg() build one from a path argument (a user or kernel string, relative to a dirfd,
 * the cwd or the root), into the per-CPU path buffer; is_watched() looks it up in the watch
 * list. Also fd_file(): the current task's struct file of an fd.
 */
#ifndef VIGIL_PATH_BPF_H
#define VIGIL_PATH_BPF_H

#include "maps.bpf.h"

#define AT_FDCWD -100
#define MAX_DEPTH 64			/* path components walked; deeper paths are flagged */
#define SCAN_MAX 256			/* bytes of a path argument checked for . and .. */
#define SCAN_MASK (2 * VIGIL_PATH_MAX - 1)
/* path_of_str(): the string could not be read (at a syscall's entry, a page not yet in memory).
 * Internal to the kernel side, never sent. */
#define F_UNREADABLE 0x8000

/* min(len, LEN_MAX) in a form the verifier keeps track of whatever register clang picks */
static __always_inline __u32 clamp_len(__u32 len)
{
	if (len > LEN_MAX)
		len = LEN_MAX;
	asm volatile("" : "+r"(len));	/* keep clang from dropping the mask as redundant */
	return len & LEN_MAX;
}

#define WALK_TRUNC (1 << 16)		/* vigil_walk_path(): the path was cut */

/* Writes the path of (dentry, vfsmnt) right-aligned in the per-CPU walk buffer, ending at
 * WALK_END, crossing mount points up to the root of the task's mount namespace. Returns the start
 * offset, | WALK_TRUNC when the path was deeper or longer than we walk.
 *
 * A global function: the verifier checks it once, not once per caller (older verifiers, 5.10's,
 * otherwise exceed their million-instruction budget on the exit handler). Its arguments are
 * therefore plain numbers (5.10 allows nothing else) and it finds its buffer itself.
 *
 * The write offset lives in map memory, not in a register, on purpose: the verifier then sees it
 * as an unknown value bounded by masks, so the "crossed a mount" and "wrote a name" paths of an
 * iteration reach the next one in the same abstract state and are verified once, not 2^depth
 * times. */
__noinline int vigil_walk_path(__u64 dentry_p, __u64 vfsmnt_p)
{
	struct dentry *dentry = (struct dentry *)dentry_p;
	struct vfsmount *vfsmnt = (struct vfsmount *)vfsmnt_p;
	/* container_of with a relocated offset: struct mount's layout varies by kernel */
	struct mount *mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	__u32 zero = 0, trunc = 0;
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	int i;

	if (!wb)
		return WALK_END | WALK_TRUNC;
	wb->off = WALK_END;
	for (i = 0; i < MAX_DEPTH; i++) {
		struct dentry *mnt_root = KREAD(vfsmnt, mnt_root);
		struct dentry *parent = KREAD(dentry, d_parent);

		if (dentry == mnt_root) {
			struct mount *mparent = KREAD(mnt, mnt_parent);

			if (mparent == mnt)
				break;		/* root of the namespace */
			dentry = KREAD(mnt, mnt_mountpoint);
			mnt = mparent;
			vfsmnt = &mparent->mnt;
			continue;
		}
		if (dentry == parent)
			break;			/* a detached tree's root */

		__u32 len = KREAD(dentry, d_name.len) & NAME_MASK;
		const unsigned char *name = KREAD(dentry, d_name.name);
		__u32 off = wb->off;

		/* ">=": the path ends at most LEN_MAX bytes long; one of WALK_END bytes would lose
		 * its last byte to clamp_len() below without being flagged */
		if (len + 1 >= off || off > WALK_END) {
			trunc = WALK_TRUNC;
			break;
		}
		off -= len;
		/* Masked again out of clang's sight: Debian's 6.12 verifier (6.12.118) loses len's
		 * unsigned bound through the linked copy the test above compiles to (len + 1) and
		 * would refuse the read as unbounded */
		asm volatile("" : "+r"(len));
		bpf_probe_read_kernel(&wb->d[off & WALK_MASK], len & NAME_MASK, name);
		off -= 1;
		wb->d[off & WALK_MASK] = '/';
		wb->off = off;
		dentry = parent;
	}
	if (i == MAX_DEPTH)
		trunc = WALK_TRUNC;
	if (wb->off >= WALK_END) {
		wb->off = WALK_END - 1;
		wb->d[WALK_END - 1] = '/';
	}
	return (wb->off & WALK_MASK) | trunc;
}

/* Copies the walk's result `r` (vigil_walk_path) into pb->d[0..), returns its length. */
static __always_inline __u32 walked(struct pathbuf *pb, struct walkbuf *wb, int r, __u16 *flags)
{
	__u32 off = r & WALK_MASK;
	__u32 len = WALK_END - off;

	if (r & WALK_TRUNC)
		*flags |= VIGIL_F_PATH_TRUNC;

	len = clamp_len(len);
	bpf_probe_read_kernel(pb->d, len, &wb->d[off & WALK_MASK]);
	return len;
}

/* Copies the path of (dentry, mnt) into pb->d[0..), returns its length. */
static __always_inline __u32 path_of_dentry(struct pathbuf *pb, struct walkbuf *wb,
					    struct dentry *dentry, struct vfsmount *mnt,
					    __u16 *flags)
{
	__u64 args[2] = {};

	/* Typed pointers (an fentry or LSM program's arguments) may not be passed to a global
	 * function as numbers on older kernels; copied through a helper they are plain numbers. */
	bpf_probe_read_kernel(&args[0], sizeof(args[0]), &dentry);
	bpf_probe_read_kernel(&args[1], sizeof(args[1]), &mnt);
	return walked(pb, wb, vigil_walk_path(args[0], args[1]), flags);
}

/* Copies the path of a struct path in kernel memory into pb->d[0..), returns its length. What
 * KREAD reads is a plain number already: no copy through a helper. */
static __always_inline __u32 path_of(struct pathbuf *pb, struct walkbuf *wb, const struct path *p,
				     __u16 *flags)
{
	return walked(pb, wb, vigil_walk_path((__u64)KREAD(p, dentry), (__u64)KREAD(p, mnt)),
		      flags);
}

static __always_inline struct file *fd_file(int fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = KREAD(t, files, fdt);
	struct file **fds = KREAD(fdt, fd);

	if (fd < 0 || (unsigned int)fd >= KREAD(fdt, max_fds))
		return NULL;
	/* fds[fd], with the kernel's pointer width (4 bytes on a 32-bit kernel) */
	return (struct file *)KPTR_ELEM(fds, fd, fdt->fd);
}

/* True when the path argument at start..start+len of the per-CPU path buffer is not canonical
 * within its first SCAN_MAX bytes ("//", a "." or ".." component, a relative path starting
 * with "."), or is longer than that: then an LPM miss proves nothing and user space decides.
 * Conservative by design: "/.." anywhere counts. Global, like vigil_walk_path, to be verified
 * once. */
__noinline int vigil_needs_normalizing(__u32 start, __u32 len)
{
	__u32 zero = 0;
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	int i;

	if (!pb)
		return 1;
	if (len > SCAN_MAX)
		return 1;
	if (pb->d[start & SCAN_MASK] == '.')
		return 1;
	for (i = 0; i < SCAN_MAX; i++) {
		if (i >= len)
			break;
		__u32 o = (start + i) & SCAN_MASK;

		if (pb->d[o] != '/')
			continue;
		char c1 = pb->d[o + 1];

		if (c1 == '/')
			return 1;
		if (c1 == '.') {
			char c2 = pb->d[o + 2];

			if (c2 == '/' || c2 == '.' || c2 == 0)
				return 1;
		}
	}
	return 0;
}

/* "/proc/<pid>/root/...", "/proc/self/cwd/...", "/dev/fd/N/...": links the kernel follows to
 * anywhere, so the string says nothing about where the operation lands. */
static __always_inline int through_magic_link(struct pathbuf *pb, __u32 start, char first)
{
	const char *head = &pb->d[start & LEN_MAX];	/* + 8 stays inside pb->d */

	if (first != '/')
		return 0;
	return (head[1] == 'p' && head[2] == 'r' && head[3] == 'o' && head[4] == 'c' &&
		head[5] == '/') ||
	       (head[1] == 'd' && head[2] == 'e' && head[3] == 'v' && head[4] == '/' &&
		head[5] == 'f' && head[6] == 'd' && head[7] == '/');
}

/* Builds the absolute path named by (dfd, string) into pb->d[0..), returns its length. The
 * base directory comes from kernel objects (the dfd's file, the cwd, the root). The string is
 * in user memory (a syscall argument) or, with kstr, in the kernel's (io_uring's struct
 * filename). */
static __always_inline __u32 path_of_str(struct pathbuf *pb, struct walkbuf *wb, int dfd,
					 const char *upath, __u16 *flags, const int kstr)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	const struct path *base;
	char first = 0;
	__u32 pos;
	long n;

	*flags |= VIGIL_F_FROM_ARG;
	if (kstr ? bpf_probe_read_kernel(&first, 1, upath) : bpf_probe_read_user(&first, 1, upath))
		*flags |= F_UNREADABLE;
	struct fs_struct *fs = KREAD(t, fs);

	if (first == '/') {
		base = KADDR(fs, root);
	} else if (dfd == AT_FDCWD) {
		base = KADDR(fs, pwd);
	} else {
		struct file *f = fd_file(dfd);

		if (!f) {
			*flags |= VIGIL_F_UNNORMALIZED;	/* bad fd: the syscall failed anyway */
			base = KADDR(fs, pwd);
		} else {
			base = KADDR(f, f_path);
		}
	}
	pos = path_of(pb, wb, base, flags);
	if (pos == 1)			/* base is "/": do not double the slash */
		pos = 0;
	if (first == 0)			/* AT_EMPTY_PATH: the dfd itself */
		return pos ? pos : 1;
	pos = clamp_len(pos);
	if (first != '/' && pos < LEN_MAX) {
		pb->d[pos] = '/';
		pos++;
	}
	if (pos >= LEN_MAX) {
		*flags |= VIGIL_F_PATH_TRUNC;
		return LEN_MAX;
	}
	pos = clamp_len(pos);
	if (kstr)
		n = bpf_probe_read_kernel_str(&pb->d[pos], VIGIL_PATH_MAX, upath);
	else
		n = bpf_probe_read_user_str(&pb->d[pos], VIGIL_PATH_MAX, upath);
	if (n < 0)
		*flags |= F_UNREADABLE;
	if (n <= 1)
		return pos;
	if (vigil_needs_normalizing(pos, n - 1) || through_magic_link(pb, pos, first))
		*flags |= VIGIL_F_UNNORMALIZED;
	pos += n - 1;
	if (pos > LEN_MAX) {
		*flags |= VIGIL_F_PATH_TRUNC;
		pos = LEN_MAX;
	}
	return pos;
}

static __noinline __u32 path_of_arg(struct pathbuf *pb, struct walkbuf *wb, int dfd,
				    const char *upath, __u16 *flags)
{
	return path_of_str(pb, wb, dfd, upath, flags, 0);
}

static __noinline __u32 path_of_karg(struct pathbuf *pb, struct walkbuf *wb, int dfd,
				     const char *kpath, __u16 *flags)
{
	return path_of_str(pb, wb, dfd, kpath, flags, 1);
}

/* Looks "<path>/" (the path in pb->d[0..len)) up in an LPM trie of watched paths (the watch
 * list, or the network's Unix socket paths). 1: watched, 0: not. */
static __always_inline int lpm_watched(void *map, struct pathbuf *pb, __u32 len)
{
	struct vigil_watch_val *v;
	__u32 keylen;

	len = clamp_len(len);
	pb->d[len] = '/';
	keylen = len + 1;
	if (keylen > VIGIL_WATCH_KEY_LEN)
		keylen = VIGIL_WATCH_KEY_LEN;
	pb->prefixlen = keylen * 8;
	v = bpf_map_lookup_elem(map, pb);
	return v && (v->flags & VIGIL_WATCH_INCLUDE);
}

/* Looks "<path>/" up in the watch list. */
static __noinline int is_watched(struct pathbuf *pb, __u32 len)
{
	return lpm_watched(&watched, pb, len);
}

#endif /* VIGIL_PATH_BPF_H */
