/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * KREAD(src, a, b, ...): read a kernel field (through a chain of pointers) at the width the
 * running kernel gives it.
 *
 * libbpf's BPF_CORE_READ relocates where a field is, but copies sizeof(the object's field)
 * bytes. A BPF program's pointers and longs are 8 bytes whatever the CPU; a 32-bit kernel's are
 * 4, so there BPF_CORE_READ would take the field and the 4 bytes after it. KREAD relocates the
 * size too (bpf_core_field_size) and widens the value as a C cast would: pointers and unsigned
 * integers zero-extended, signed integers sign-extended (the kernel's signedness, relocated).
 * Everywhere else the kernel's width is the object's, and KREAD reads what BPF_CORE_READ reads.
 *
 * An array element goes through KELEM (see there). Only scalars: a struct-valued field does not
 * compile (its layout differs on 32-bit kernels too), so read its members, or take its address
 * with KADDR and pass that along.
 *
 * `vigil btf check` proves the rule offline: every field read whose width differs in a kernel
 * must carry a size relocation (or be a direct load libbpf narrows itself).
 */
#ifndef VIGIL_KREAD_H
#define VIGIL_KREAD_H

/* Where an n-byte value sits in the 8 bytes it is widened into. */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define KREAD_AT(n) (8 - (n))
#else
#define KREAD_AT(n) 0
#endif

#define KREAD_INTEGER 1		/* __builtin_classify_type(): an integer (not a pointer) */

/* The n bytes (at most 8) at kernel address addr, zero-extended to 64 bits. */
#define KREAD_WIDE(addr, n) ({							\
	unsigned long long __kw_v = 0;						\
	unsigned int __kw_n = (n);						\
										\
	if (__kw_n > 8)								\
		__kw_n = 8;							\
	bpf_probe_read_kernel((char *)&__kw_v + KREAD_AT(__kw_n), __kw_n, (const void *)(addr)); \
	__kw_v;									\
})

/* One field, s->a (a may be a member path, b.c), widened; `sign` (an expression that may name
 * the field as __kf_s->a) says whether to sign-extend. */
#define KREAD_FIELD(s, a, sign) ({						\
	typeof(s) __kf_s = (s);							\
	unsigned int __kf_n = bpf_core_field_size(__kf_s->a);			\
	unsigned long long __kf_v =						\
		KREAD_WIDE(__builtin_preserve_access_index(&__kf_s->a), __kf_n);	\
										\
	if ((sign) && __kf_n < 8)						\
		__kf_v = (unsigned long long)((long long)(__kf_v << (64 - 8 * __kf_n)) >> \
					      (64 - 8 * __kf_n));			\
	(typeof(__kf_s->a))__kf_v;						\
})

/* The kernel's signedness of an integer field (relocated); pointers are never sign-extended. */
#define KFIELD(s, a) KREAD_FIELD(s, a, __builtin_classify_type(__kf_s->a) == KREAD_INTEGER && \
				 __builtin_preserve_field_info(__kf_s->a, BPF_FIELD_SIGNED))

/* An array element, s->a[n]: libbpf relocates its offset and size but not its signedness,
 * so it is zero-extended (the elements read this way, registers, are unsigned longs). */
#define KELEM(s, a) KREAD_FIELD(s, a, 0)

#define KREAD_1(s, a) KFIELD(s, a)
#define KREAD_2(s, a, b) KFIELD(KFIELD(s, a), b)
#define KREAD_3(s, a, b, c) KFIELD(KFIELD(KFIELD(s, a), b), c)
#define KREAD_4(s, a, b, c, d) KFIELD(KFIELD(KFIELD(KFIELD(s, a), b), c), d)
#define KREAD_PICK(_1, _2, _3, _4, name, ...) name
#define KREAD(s, ...) \
	KREAD_PICK(__VA_ARGS__, KREAD_4, KREAD_3, KREAD_2, KREAD_1, _)(s, __VA_ARGS__)

/* The kernel address of s->a (relocated), e.g. of an embedded struct path to read from. */
#define KADDR(s, a) ((typeof(&(s)->a))__builtin_preserve_access_index(&(s)->a))

/* base[i] of a kernel array of pointers, at the kernel's pointer width, which is the width of
 * any pointer field: `like` names one. */
#define KPTR_ELEM(base, i, like) ({						\
	unsigned int __ke_n = bpf_core_field_size(like);			\
										\
	KREAD_WIDE((void *)(base) + (unsigned long long)(i) * __ke_n, __ke_n);	\
})

#endif /* VIGIL_KREAD_H */
