/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Network events, for every backend: TCP connects with their outcome, accepts, listens, binds,
 * the first datagram of each UDP flow in either direction, and connects to watched Unix socket
 * paths. Each carries the acting task's who-data and both endpoints.
 *
 * Where each is seen:
 *   - sock:inet_sock_set_state, TCP's state changes: CLOSE -> SYN_SENT runs in the task that
 *     calls connect() (or io_uring's worker for it), so the who-data is captured there, keyed by
 *     the socket; SYN_SENT -> ESTABLISHED or -> CLOSE (the outcome, often in softirq, on any
 *     task) sends the connect with that who-data, the ports the kernel chose and, on failure,
 *     the socket's error (refused, timed out). A non-blocking connect is thus reported when
 *     it completes, whoever waits for it. CLOSE -> LISTEN runs in the task calling listen().
 *   - connect(2)'s exit: a TCP connect that failed before a SYN was sent (unreachable network,
 *     a refusing firewall or LSM) and Unix socket connects.
 *   - bind(2), accept(2)/accept4(2) exits; sendto/sendmsg/sendmmsg and recvfrom/recvmsg/recvmmsg
 *     exits on UDP sockets, deduplicated in the kernel by (process, local port, remote address,
 *     remote port) in an LRU map (net_flows): a flow idle longer than cfg_net_flow_ttl_ns, or
 *     evicted, is reported again.
 *
 * Filters (the config's network section): kinds (cfg_net_ops), excluded ports (either port of
 * the event) and networks (the remote address; the local one of listen and bind), counted as
 * VIGIL_STAT_NET_FILTERED; a per-process rate cap (cfg_net_interval_ns, cfg_net_tau_ns: the
 * generic cell rate algorithm), whose overflow is lost and counted (VIGIL_STAT_NET_RATE).
 */
#ifndef VIGIL_NET_BPF_H
#define VIGIL_NET_BPF_H

#include <bpf/bpf_endian.h>
#include "path.bpf.h"
#include "send.bpf.h"

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define E_INTR 4
#define E_ISCONN 106
#define E_CONNABORTED 103
#define E_ALREADY 114
#define E_INPROGRESS 115
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define SS_CONNECTING 2

const volatile __u32 cfg_net_ops = 0;		/* bit 1 << op: the kinds reported; 0: none */
const volatile __u32 cfg_net_filter_ports = 0;	/* 1: net_ports holds excluded ports */
const volatile __u32 cfg_net_filter_cidrs = 0;	/* 1: net_cidrs holds excluded networks */
const volatile __u64 cfg_net_interval_ns = 0;	/* rate cap: 1e9 / events per second; 0: none */
const volatile __u64 cfg_net_tau_ns = 0;	/* rate cap: the burst, (burst - 1) intervals */
const volatile __u64 cfg_net_flow_ttl_ns = 60ULL * 1000000000;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} net_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct vigil_net_cidr_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} net_cidrs SEC(".maps");

/* Unix socket paths whose connects are reported (config network.unix_paths), like the watch
 * list: "<path>/" looked up. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct vigil_watch_key);
	__type(value, struct vigil_watch_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} unix_watched SEC(".maps");

/* TCP connects between their SYN and their outcome: who called connect(). A plain hash: every
 * SYN_SENT ends in ESTABLISHED or CLOSE, which deletes; a full map is counted. */
struct net_conn {
	struct vigil_proc proc;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);		/* struct sock * */
	__type(value, struct net_conn);
} net_conns SEC(".maps");

/* A socket call between its start and its end (keyed by thread): a syscall's enter and exit,
 * or a kernel function's entry and return (net_vfs.bpf.h). */
enum net_call_flags {
	NC_MSG = 1,		/* addr is a msghdr: the sockaddr is its msg_name */
	NC_KADDR = 2,		/* addr is in kernel memory (else the caller's) */
	NC_SOCKET = 4,		/* sock is the struct socket * (else found from fd) */
	NC_SK = 8,		/* sock is the struct sock * of a UDP socket */
};

struct net_call {
	__u64 addr;		/* the sockaddr (bind, connect, sendto, recvfrom) or the msghdr
				 * (sendmsg, recvmsg, sendmmsg, recvmmsg; NC_MSG) */
	__u64 sock;		/* NC_SOCKET, NC_SK */
	__s32 fd;
	__u32 op;
	__u32 flags;		/* enum net_call_flags */
	__u32 started;		/* connect: a SYN went out during this call */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct net_call);
} net_calls SEC(".maps");

struct flow_key {
	__u32 tgid;
	__u16 lport;
	__u16 rport;
	__u8 raddr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, __u64);		/* when the flow was last seen (ktime) */
} net_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);		/* tgid */
	__type(value, __u64);		/* the rate cap's theoretical arrival time */
} net_rate SEC(".maps");

static __always_inline int net_on(__u32 op)
{
	return (cfg_net_ops >> op) & 1;
}

/* The struct socket of a file, or NULL when it is no socket. */
static __always_inline struct socket *file_socket(struct file *f)
{
	if (!f || (KREAD(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	return (struct socket *)KREAD(f, private_data);
}

/* The same for an fd of the current task. */
static __always_inline struct socket *fd_socket(int fd)
{
	return file_socket(fd_file(fd));
}

/* A user-space pointer stored at user address `at`, at the kernel's pointer width. */
static __always_inline __u64 user_ptr(__u64 at)
{
	struct file *like = 0;
	__u32 n = bpf_core_field_size(like->private_data);
	__u64 v = 0;

	if (n > 8)
		n = 8;
	bpf_probe_read_user((char *)&v + KREAD_AT(n), n, (void *)at);
	return v;
}

static __always_inline struct vigil_net_event *net_event(__u32 op)
{
	struct vigil_net_event *e = new_event(VIGIL_EV_NET);

	if (!e)
		return NULL;
	e->op = op;
	e->ret = 0;
	e->family = 0;
	e->protocol = 0;
	e->lport = 0;
	e->rport = 0;
	__builtin_memset(e->laddr, 0, sizeof(e->laddr));
	__builtin_memset(e->raddr, 0, sizeof(e->raddr));
	e->sock_id = 0;
	e->path_len = 0;
	e->_reserved = 0;
	return e;
}

/* Both endpoints of a socket, as the kernel holds them now. */
static __always_inline void sock_addrs(struct vigil_net_event *e, struct sock *sk)
{
	__u16 family = KREAD(sk, __sk_common.skc_family);

	e->family = family;
	e->sock_id = (__u64)sk;
	e->lport = KREAD(sk, __sk_common.skc_num);
	e->rport = bpf_ntohs(KREAD(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		__u32 l = KREAD(sk, __sk_common.skc_rcv_saddr);
		__u32 r = KREAD(sk, __sk_common.skc_daddr);

		__builtin_memcpy(e->laddr, &l, 4);
		__builtin_memcpy(e->raddr, &r, 4);
	} else if (family == AF_INET6 && bpf_core_field_exists(sk->__sk_common.skc_v6_daddr)) {
		bpf_probe_read_kernel(e->laddr, 16, KADDR(sk, __sk_common.skc_v6_rcv_saddr));
		bpf_probe_read_kernel(e->raddr, 16, KADDR(sk, __sk_common.skc_v6_daddr));
	}
}

/* Both endpoints as a TCP state change records them: a failed connect's socket has already
 * given its local port back (inet_num 0) when the change is traced, the record still has it. */
static __always_inline void state_addrs(struct vigil_net_event *e,
					struct trace_event_raw_inet_sock_set_state *ctx, __u64 sk)
{
	__u16 family = ctx->family;

	e->family = family;
	e->sock_id = sk;
	e->lport = ctx->sport;
	e->rport = ctx->dport;
	if (family == AF_INET) {
		bpf_probe_read_kernel(e->laddr, 4, KADDR(ctx, saddr));
		bpf_probe_read_kernel(e->raddr, 4, KADDR(ctx, daddr));
	} else if (family == AF_INET6) {
		bpf_probe_read_kernel(e->laddr, 16, KADDR(ctx, saddr_v6));
		bpf_probe_read_kernel(e->raddr, 16, KADDR(ctx, daddr_v6));
	}
}

/* Reads n bytes of a call's argument memory: the caller's, or the kernel's (NC_KADDR). */
static __always_inline long read_arg(void *dst, __u32 n, __u64 src, __u32 flags)
{
	if (flags & NC_KADDR)
		return bpf_probe_read_kernel(dst, n, (void *)src);
	return bpf_probe_read_user(dst, n, (void *)src);
}

/* The remote end from a sockaddr (connect, sendto, recvfrom, msg_name). 1: one read. */
static __always_inline int sockaddr_remote(struct vigil_net_event *e, __u64 addr, __u32 flags)
{
	struct {
		__u16 family;
		__u16 port;
		__u32 v4;		/* sockaddr_in6: flowinfo */
		__u8 v6[16];
	} sa = {};

	if (!addr || read_arg(&sa, sizeof(sa), addr, flags))
		return 0;
	if (sa.family == AF_INET) {
		__builtin_memset(e->raddr, 0, sizeof(e->raddr));
		__builtin_memcpy(e->raddr, &sa.v4, 4);
	} else if (sa.family == AF_INET6) {
		__builtin_memcpy(e->raddr, sa.v6, 16);
	} else {
		return 0;
	}
	e->family = sa.family;
	e->rport = bpf_ntohs(sa.port);
	return 1;
}

/* The configured filters: 1 when the event is to be sent. */
static __always_inline int net_wanted(struct vigil_net_event *e)
{
	if (cfg_net_filter_ports) {
		__u16 l = e->lport, r = e->rport;

		if ((l && bpf_map_lookup_elem(&net_ports, &l)) ||
		    (r && bpf_map_lookup_elem(&net_ports, &r))) {
			count(VIGIL_STAT_NET_FILTERED);
			return 0;
		}
	}
	if (cfg_net_filter_cidrs && e->family != AF_UNIX) {
		struct vigil_net_cidr_key k = { .prefixlen = 128 };
		int local = e->op == VIGIL_NET_LISTEN || e->op == VIGIL_NET_BIND;
		__u8 *a = local ? e->laddr : e->raddr;

		if (e->family == AF_INET) {
			k.addr[10] = 0xff;
			k.addr[11] = 0xff;
			__builtin_memcpy(&k.addr[12], a, 4);
		} else {
			__builtin_memcpy(k.addr, a, 16);
		}
		if (bpf_map_lookup_elem(&net_cidrs, &k)) {
			count(VIGIL_STAT_NET_FILTERED);
			return 0;
		}
	}
	if (cfg_net_interval_ns) {
		__u32 tgid = e->proc.pid;
		__u64 now = bpf_ktime_get_ns(), tat = now;
		__u64 *v = bpf_map_lookup_elem(&net_rate, &tgid);

		if (v && *v > now)
			tat = *v;
		if (tat - now > cfg_net_tau_ns) {
			count(VIGIL_STAT_NET_RATE);
			return 0;
		}
		tat += cfg_net_interval_ns;
		if (v)
			*v = tat;
		else
			bpf_map_update_elem(&net_rate, &tgid, &tat, BPF_ANY);
	}
	return 1;
}

static __always_inline void net_send(struct vigil_net_event *e)
{
	__u32 size = sizeof(struct vigil_net_event) + e->path_len;

	if (!net_wanted(e))
		return;
	e->hdr.size = size;
	submit(e, size, VIGIL_STAT_DROP_NET);
}

/* --- TCP: state changes ------------------------------------------------------------------- */

SEC("tracepoint/sock/inet_sock_set_state")
int net_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	int oldstate = ctx->oldstate, newstate = ctx->newstate;
	struct sock *sk;
	__u64 key, id;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	/* most changes (the handshakes of accepted connections, closes) are none of these */
	if (!(oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) && oldstate != TCP_SYN_SENT &&
	    newstate != TCP_LISTEN)
		return 0;
	sk = (struct sock *)KREAD(ctx, skaddr);
	key = (__u64)sk;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		struct net_call *call;
		struct net_conn c;

		if (!net_on(VIGIL_NET_CONNECT) || is_self())
			return 0;
		id = bpf_get_current_pid_tgid();
		call = bpf_map_lookup_elem(&net_calls, &id);
		if (call)
			call->started = 1;
		fill_proc(&c.proc);
		if (bpf_map_update_elem(&net_conns, &key, &c, BPF_ANY))
			count(VIGIL_STAT_NET_CONNS_FULL);
		return 0;
	}
	if (oldstate == TCP_SYN_SENT) {
		struct net_conn *c = bpf_map_lookup_elem(&net_conns, &key);
		struct vigil_net_event *e;

		if (!c)
			return 0;
		e = net_event(VIGIL_NET_CONNECT);
		if (e) {
			e->proc = c->proc;	/* the caller of connect(), not this task */
			e->protocol = IPPROTO_TCP;
			state_addrs(e, ctx, key);
			if (newstate != TCP_ESTABLISHED) {
				int err = KREAD(sk, sk_err);

				e->ret = err > 0 ? -err : -E_CONNABORTED;
			}
			net_send(e);
		}
		bpf_map_delete_elem(&net_conns, &key);
		return flush(ctx);
	}
	if (newstate == TCP_LISTEN && net_on(VIGIL_NET_LISTEN) && !is_self()) {
		struct vigil_net_event *e = net_event(VIGIL_NET_LISTEN);

		if (!e)
			return 0;
		e->protocol = IPPROTO_TCP;
		state_addrs(e, ctx, key);
		e->rport = 0;
		__builtin_memset(e->raddr, 0, sizeof(e->raddr));
		net_send(e);
		return flush(ctx);
	}
	return 0;
}

/* --- socket syscalls ---------------------------------------------------------------------- */

/* A call's start: what its end (net_exit) needs. A connect on a socket already connecting is
 * the caller asking for the outcome of an earlier one (a non-blocking connect called again,
 * io_uring's retry): the state change reported it, so the call counts as started. */
static __always_inline int net_stash(__u32 op, int fd, __u64 addr, __u64 sock, __u32 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct net_call c = { .addr = addr, .sock = sock, .fd = fd, .op = op, .flags = flags };

	if (!net_on(op) || is_self())
		return 0;
	if (op == VIGIL_NET_CONNECT) {
		struct socket *s = (flags & NC_SOCKET) ? (struct socket *)sock : fd_socket(fd);

		c.started = s && KREAD(s, state) == SS_CONNECTING;
	}
	if (bpf_map_update_elem(&net_calls, &id, &c, BPF_ANY))
		count(VIGIL_STAT_INFLIGHT_FULL);
	return 0;
}

static __always_inline int net_remember(__u32 op, int fd, __u64 uaddr, __u32 msg)
{
	return net_stash(op, fd, uaddr, 0, msg ? NC_MSG : 0);
}

/* The datagram calls remember only UDP sockets: most sends and receives are of others. */
static __always_inline int net_remember_udp(__u32 op, int fd, __u64 uaddr, __u32 msg)
{
	struct socket *sock;

	if (!net_on(op))
		return 0;
	sock = fd_socket(fd);
	if (!sock || KREAD(sock, type) != SOCK_DGRAM)
		return 0;
	__u16 family = KREAD(sock, sk, __sk_common.skc_family);

	if (family != AF_INET && family != AF_INET6)
		return 0;
	return net_remember(op, fd, uaddr, msg);
}

/* Connect to a Unix socket: the path, when the unix watch list has it (or when it could not be
 * matched exactly in the kernel: user space decides). Abstract names are not paths: skipped. */
static __always_inline void unix_connect(struct net_call *c, long ret)
{
	__u32 zero = 0;
	struct walkbuf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	struct pathbuf *pb = bpf_map_lookup_elem(&path_scratch, &zero);
	struct vigil_net_event *e;
	__u16 flags = 0;
	char first = 0;
	__u32 len;

	if (!wb || !pb || !net_on(VIGIL_NET_UNIX_CONNECT))
		return;
	if (read_arg(&first, 1, c->addr + 2, c->flags) || !first)
		return;
	if (c->flags & NC_KADDR)
		len = path_of_karg(pb, wb, AT_FDCWD, (const char *)(c->addr + 2), &flags);
	else
		len = path_of_arg(pb, wb, AT_FDCWD, (const char *)(c->addr + 2), &flags);
	len = clamp_len(len);
	if (!lpm_watched(&unix_watched, pb, len) && !(flags & VIGIL_F_UNNORMALIZED))
		return;
	e = net_event(VIGIL_NET_UNIX_CONNECT);
	if (!e)
		return;
	e->family = AF_UNIX;
	e->ret = ret < 0 ? ret : 0;
	e->hdr.flags = flags & (VIGIL_F_UNNORMALIZED | VIGIL_F_PATH_TRUNC);
	bpf_probe_read_kernel(e->data, len, pb->d);
	e->path_len = len;
	net_send(e);
}

/* A msghdr's msg_name: a pointer at the start of the caller's msghdr (at the kernel's pointer
 * width), or the kernel's struct msghdr's field. */
static __always_inline __u64 msg_name(__u64 msg, __u32 flags)
{
	if (flags & NC_KADDR)
		return (__u64)KREAD((struct msghdr *)msg, msg_name);
	return user_ptr(msg);
}

/* The end of bind, connect and the UDP calls. */
static __noinline int net_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct net_call *p = bpf_map_lookup_elem(&net_calls, &id);
	struct vigil_net_event *e;
	struct socket *sock = NULL;
	struct sock *sk;
	struct net_call c;
	__u16 family;
	short type;

	if (!p)
		return 0;
	c = *p;
	bpf_map_delete_elem(&net_calls, &id);
	if (c.flags & NC_MSG)
		c.addr = msg_name(c.addr, c.flags);
	if (c.op == VIGIL_NET_CONNECT) {
		if (read_arg(&family, 2, c.addr, c.flags))
			return 0;
		if (family == AF_UNIX) {
			unix_connect(&c, ret);
			return 0;
		}
		/* TCP: a SYN that went out is reported at its outcome (net_state) */
		if (ret >= 0 || c.started || ret == -E_INPROGRESS || ret == -E_ALREADY ||
		    ret == -E_ISCONN || ret == -E_INTR)
			return 0;
	} else if (c.op != VIGIL_NET_BIND && ret < 0) {
		return 0;		/* a failed send or receive: no flow */
	}
	if (c.flags & NC_SK) {
		sk = (struct sock *)c.sock;
		type = SOCK_DGRAM;
	} else {
		sock = (c.flags & NC_SOCKET) ? (struct socket *)c.sock : fd_socket(c.fd);
		if (!sock)
			return 0;
		type = KREAD(sock, type);
		sk = KREAD(sock, sk);
	}
	if (c.op == VIGIL_NET_CONNECT && type != SOCK_STREAM)
		return 0;		/* a UDP connect sends nothing: its first datagram will tell */
	e = net_event(c.op);
	if (!e)
		return 0;
	e->protocol = type == SOCK_STREAM ? IPPROTO_TCP : type == SOCK_DGRAM ? IPPROTO_UDP : 0;
	sock_addrs(e, sk);
	e->ret = ret < 0 ? ret : 0;
	if (c.op == VIGIL_NET_BIND) {
		/* a bound socket holds its address and port (the one the kernel chose for port
		 * 0); a failed bind is reported with the address that was asked for */
		if (e->family != AF_INET && e->family != AF_INET6)
			return 0;
		if (ret < 0) {
			if (!sockaddr_remote(e, c.addr, c.flags))
				return 0;
			__builtin_memcpy(e->laddr, e->raddr, 16);
			e->lport = e->rport;
		}
		__builtin_memset(e->raddr, 0, sizeof(e->raddr));
		e->rport = 0;
		net_send(e);
		return 0;
	}
	if (c.op == VIGIL_NET_CONNECT) {
		sockaddr_remote(e, c.addr, c.flags);
		net_send(e);
		return 0;
	}
	/* UDP: the remote end is the address given or received, else the connected peer */
	if (e->family != AF_INET && e->family != AF_INET6)
		return 0;
	sockaddr_remote(e, c.addr, c.flags);
	struct flow_key k = { .tgid = e->proc.pid, .lport = e->lport, .rport = e->rport };
	__u64 now = bpf_ktime_get_ns();
	__u64 *seen;

	__builtin_memcpy(k.raddr, e->raddr, 16);
	seen = bpf_map_lookup_elem(&net_flows, &k);
	if (seen) {
		__u64 idle = now - *seen;

		if (idle <= cfg_net_flow_ttl_ns) {
			if (idle > cfg_net_flow_ttl_ns / 8)
				*seen = now;	/* kept fresh, without a write per datagram */
			return 0;
		}
		*seen = now;
	} else {
		bpf_map_update_elem(&net_flows, &k, &now, BPF_ANY);
	}
	net_send(e);
	return 0;
}

#define NET_ENTER(sc) SEC("tracepoint/syscalls/sys_enter_" #sc) \
	int net_enter_##sc(struct trace_event_raw_sys_enter *ctx)
/* The exit of every network syscall remembered at its enter: one program, reached by tail
 * call from each syscall's exit program (syscalls_file.bpf.h: handlers), which costs one
 * look-up when its enter remembered nothing. */
SEC("tracepoint")
int handle_net_exit(void *ctx)
{
	net_exit(KREAD((struct trace_event_raw_sys_exit *)ctx, ret));
	return flush(ctx);
}

#define NET_EXIT(sc) SEC("tracepoint/syscalls/sys_exit_" #sc) \
	int net_exit_##sc(void *ctx) \
	{ \
		__u64 id = bpf_get_current_pid_tgid(); \
		if (bpf_map_lookup_elem(&net_calls, &id)) \
			handoff(ctx, H_NET_EXIT); \
		return 0; \
	}

NET_ENTER(connect) { return net_remember(VIGIL_NET_CONNECT, ARG(0), ARG(1), 0); }
NET_EXIT(connect)
NET_ENTER(bind) { return net_remember(VIGIL_NET_BIND, ARG(0), ARG(1), 0); }
NET_EXIT(bind)
NET_ENTER(sendto) { return net_remember_udp(VIGIL_NET_UDP_SEND, ARG(0), ARG(4), 0); }
NET_EXIT(sendto)
NET_ENTER(sendmsg) { return net_remember_udp(VIGIL_NET_UDP_SEND, ARG(0), ARG(1), 1); }
NET_EXIT(sendmsg)
NET_ENTER(sendmmsg) { return net_remember_udp(VIGIL_NET_UDP_SEND, ARG(0), ARG(1), 1); }
NET_EXIT(sendmmsg)
NET_ENTER(recvfrom) { return net_remember_udp(VIGIL_NET_UDP_RECV, ARG(0), ARG(4), 0); }
NET_EXIT(recvfrom)
NET_ENTER(recvmsg) { return net_remember_udp(VIGIL_NET_UDP_RECV, ARG(0), ARG(1), 1); }
NET_EXIT(recvmsg)
NET_ENTER(recvmmsg) { return net_remember_udp(VIGIL_NET_UDP_RECV, ARG(0), ARG(1), 1); }
NET_EXIT(recvmmsg)

/* An accepted connection's socket holds both ends. */
static __always_inline void accepted(struct sock *sk)
{
	struct vigil_net_event *e;
	__u16 family;

	if (!sk || !net_on(VIGIL_NET_ACCEPT) || is_self())
		return;
	family = KREAD(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	e = net_event(VIGIL_NET_ACCEPT);
	if (!e)
		return;
	e->protocol = IPPROTO_TCP;
	sock_addrs(e, sk);
	net_send(e);
}

/* accept(2): the new connection's fd is the result. */
static __always_inline int net_accepted(void *ctx, long fd)
{
	struct socket *sock;

	if (fd < 0 || !net_on(VIGIL_NET_ACCEPT))
		return 0;
	sock = fd_socket(fd);
	if (!sock || KREAD(sock, type) != SOCK_STREAM)
		return 0;
	accepted(KREAD(sock, sk));
	return flush(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int net_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return net_accepted(ctx, KREAD(ctx, ret));
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int net_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return net_accepted(ctx, KREAD(ctx, ret));
}

#endif /* VIGIL_NET_BPF_H */
