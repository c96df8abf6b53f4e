// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Network activity made through io_uring, for tests/kernel/test_net_events.py.
 *
 *   uring_net
 *
 * A TCP listener on 127.0.0.1 (socket, bind, listen: syscalls), then through io_uring only: a
 * client's connect to it (IORING_OP_CONNECT), its accept (IORING_OP_ACCEPT), and a UDP
 * datagram sent (IORING_OP_SENDMSG) to a UDP socket on 127.0.0.1 and received there
 * (IORING_OP_RECVMSG). Prints "<op> ok|unsupported|error <errno>" per step, then
 * "ports <tcp listener> <tcp client> <udp receiver> <udp sender>"; exits 0 unless a supported
 * step failed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "uring_step.h"

static int port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t n = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &n))
		return -1;
	return ntohs(a.sin_port);
}

static int bound(int type)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, type, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	return fd;
}

int main(void)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char buf[16] = "datagram";
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr out = { .msg_name = &to, .msg_namelen = sizeof(to), .msg_iov = &iov,
			      .msg_iovlen = 1 };
	struct sockaddr_in from;
	struct msghdr in = { .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &iov,
			     .msg_iovlen = 1 };
	int srv, cli, urecv, usend, failed = 0, r;

	if (io_uring_queue_init(8, &ring, 0) < 0 || !(probe = io_uring_get_probe_ring(&ring))) {
		printf("io_uring unavailable\n");
		return 1;
	}
	srv = bound(SOCK_STREAM);
	cli = socket(AF_INET, SOCK_STREAM, 0);
	urecv = bound(SOCK_DGRAM);
	usend = socket(AF_INET, SOCK_DGRAM, 0);
	if (srv < 0 || cli < 0 || urecv < 0 || usend < 0 || listen(srv, 4)) {
		perror("sockets");
		return 1;
	}
	to.sin_port = htons(port_of(srv));
	io_uring_prep_connect(io_uring_get_sqe(&ring), cli, (struct sockaddr *)&to, sizeof(to));
	r = run("connect", IORING_OP_CONNECT);
	failed |= r < 0 && r != -EOPNOTSUPP;
	io_uring_prep_accept(io_uring_get_sqe(&ring), srv, NULL, NULL, 0);
	r = run("accept", IORING_OP_ACCEPT);
	failed |= r < 0 && r != -EOPNOTSUPP;
	to.sin_port = htons(port_of(urecv));
	io_uring_prep_sendmsg(io_uring_get_sqe(&ring), usend, &out, 0);
	r = run("sendmsg", IORING_OP_SENDMSG);
	failed |= r < 0 && r != -EOPNOTSUPP;
	io_uring_prep_recvmsg(io_uring_get_sqe(&ring), urecv, &in, 0);
	r = run("recvmsg", IORING_OP_RECVMSG);
	failed |= r < 0 && r != -EOPNOTSUPP;
	printf("ports %d %d %d %d\n", port_of(srv), port_of(cli), port_of(urecv), port_of(usend));
	io_uring_queue_exit(&ring);
	return failed;
}
