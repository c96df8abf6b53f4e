/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Network events through kernel functions, for the lsm, fentry and kprobe backends: where the
 * socket layer does the work, so io_uring's connects, binds, accepts and datagrams, 32-bit
 * processes' calls and UDP through write()/read() are seen like the socket syscalls.
 *
 *   connect   __sys_connect_file(file, address, ...): connect(2) and io_uring's connect; its
 *             failures before a SYN, and Unix socket connects (TCP outcomes: net_state)
 *   bind      inet_bind, inet6_bind (socket, address, ...)
 *   accept    inet_csk_accept: its result is the new connection's struct sock *
 *   UDP       udp_sendmsg, udpv6_sendmsg, udp_recvmsg, udpv6_recvmsg (sk, msg, ...): the
 *             kernel's msghdr, whose msg_name is the kernel's copy of the address
 *
 * Each call is stashed at the function's entry (fentry or kprobe: what net_exit needs, keyed
 * by thread, as the syscall enter programs do) and finished at its return (fexit or
 * kretprobe) by the same net_exit. udpv6_sendmsg hands an IPv4-mapped destination to
 * udp_sendmsg: the inner call replaces the stash and reports the flow once, as IPv4.
 *
 * Argument positions come from the prototypes in the BTF in use (vigil/kernel/hooks.py,
 * net_positions); a kernel where one is unknown or a function is missing gets the syscall
 * tracepoints (net.bpf.h) instead, and says so.
 */
#ifndef VIGIL_NET_VFS_BPF_H
#define VIGIL_NET_VFS_BPF_H

#include "net.bpf.h"
#include "vfs.bpf.h"		/* ctx_arg, kp_arg, result */

/* pos_net_<fn>_<arg>: the argument's index; ret_net_<fn>: the return value's slot (fexit) */
const volatile __u32 pos_net_connect_file = 0, pos_net_connect_addr = 1, ret_net_connect = 4;
const volatile __u32 pos_net_inet_bind_sock = 0, pos_net_inet_bind_addr = 1, ret_net_inet_bind = 3;
const volatile __u32 pos_net_inet6_bind_sock = 0, pos_net_inet6_bind_addr = 1,
		     ret_net_inet6_bind = 3;
const volatile __u32 ret_net_accept = 2;
const volatile __u32 pos_net_udp_sendmsg_sk = 0, pos_net_udp_sendmsg_msg = 1,
		     ret_net_udp_sendmsg = 3;
const volatile __u32 pos_net_udpv6_sendmsg_sk = 0, pos_net_udpv6_sendmsg_msg = 1,
		     ret_net_udpv6_sendmsg = 3;
const volatile __u32 pos_net_udp_recvmsg_sk = 0, pos_net_udp_recvmsg_msg = 1,
		     ret_net_udp_recvmsg = 5;
const volatile __u32 pos_net_udpv6_recvmsg_sk = 0, pos_net_udpv6_recvmsg_msg = 1,
		     ret_net_udpv6_recvmsg = 5;

static __always_inline int stash_connect(__u64 file, __u64 addr)
{
	struct socket *sock = file_socket((struct file *)file);

	if (!sock)
		return 0;
	return net_stash(VIGIL_NET_CONNECT, -1, addr, (__u64)sock, NC_KADDR | NC_SOCKET);
}

static __always_inline int stash_bind(__u64 sock, __u64 addr)
{
	return net_stash(VIGIL_NET_BIND, -1, addr, sock, NC_KADDR | NC_SOCKET);
}

static __always_inline int stash_udp(__u32 op, __u64 sk, __u64 msg)
{
	return net_stash(op, -1, msg, sk, NC_KADDR | NC_MSG | NC_SK);
}

/* A function returning a struct sock *: the pointer, or 0 for NULL and ERR_PTR. fexit's ctx
 * slot is a typed pointer, which the verifier lets no arithmetic touch: it is read back as a
 * plain number first. */
static __always_inline __u64 sock_result(__u64 raw)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), &raw);
	return result(v, 1) ? 0 : v;
}

/* Each hooked function once: its stash, with ARG(i) reading the i-th argument. */
#define NET_FUNCS(HOOK, ARG)								\
	HOOK(__sys_connect_file, connect,						\
	     stash_connect(ARG(pos_net_connect_file), ARG(pos_net_connect_addr)))		\
	HOOK(inet_bind, inet_bind,							\
	     stash_bind(ARG(pos_net_inet_bind_sock), ARG(pos_net_inet_bind_addr)))		\
	HOOK(inet6_bind, inet6_bind,							\
	     stash_bind(ARG(pos_net_inet6_bind_sock), ARG(pos_net_inet6_bind_addr)))	\
	HOOK(udp_sendmsg, udp_sendmsg,							\
	     stash_udp(VIGIL_NET_UDP_SEND, ARG(pos_net_udp_sendmsg_sk),			\
		       ARG(pos_net_udp_sendmsg_msg)))					\
	HOOK(udpv6_sendmsg, udpv6_sendmsg,						\
	     stash_udp(VIGIL_NET_UDP_SEND, ARG(pos_net_udpv6_sendmsg_sk),		\
		       ARG(pos_net_udpv6_sendmsg_msg)))					\
	HOOK(udp_recvmsg, udp_recvmsg,							\
	     stash_udp(VIGIL_NET_UDP_RECV, ARG(pos_net_udp_recvmsg_sk),			\
		       ARG(pos_net_udp_recvmsg_msg)))					\
	HOOK(udpv6_recvmsg, udpv6_recvmsg,						\
	     stash_udp(VIGIL_NET_UDP_RECV, ARG(pos_net_udpv6_recvmsg_sk),		\
		       ARG(pos_net_udpv6_recvmsg_msg)))

/* ---- fentry / fexit (the lsm and fentry backends) ---------------------------------------- */

#define NET_FENTRY(fn, name, stash)							\
	SEC("fentry/" #fn)								\
	int net_fe_##name(__u64 *ctx) { return stash; }					\
	SEC("fexit/" #fn)								\
	int net_fx_##name(__u64 *ctx)							\
	{ net_exit(result(ctx_arg(ctx, ret_net_##name), 0)); return flush(ctx); }
#define FE_ARG(i) ctx_arg(ctx, i)

NET_FUNCS(NET_FENTRY, FE_ARG)

SEC("fexit/inet_csk_accept")
int net_fx_accept(__u64 *ctx)
{
	accepted((struct sock *)sock_result(ctx_arg(ctx, ret_net_accept)));
	return flush(ctx);
}

/* ---- kprobe / kretprobe (the kprobe backend) --------------------------------------------- */

#define NET_KPROBE(fn, name, stash)							\
	SEC("kprobe/" #fn)								\
	int net_kp_##name(struct pt_regs *r) { return stash; }				\
	SEC("kretprobe/" #fn)								\
	int net_kr_##name(struct pt_regs *r)						\
	{ net_exit(result(KP_RET(r), 0)); return flush(r); }
#define KP_NTH(i) kp_arg(r, i)

NET_FUNCS(NET_KPROBE, KP_NTH)

SEC("kretprobe/inet_csk_accept")
int net_kr_accept(struct pt_regs *r)
{
	accepted((struct sock *)sock_result(KP_RET(r)));
	return flush(r);
}

#endif /* VIGIL_NET_VFS_BPF_H */
