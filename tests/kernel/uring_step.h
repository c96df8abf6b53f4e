/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * One io_uring step for the test programs (uring_ops.c, uring_net.c): submit the prepared SQE,
 * wait for its completion and print "<name> ok", "<name> unsupported" (the kernel's io_uring
 * lacks the opcode) or "<name> error <errno>". Returns the completion's result.
 */
#ifndef VIGIL_TEST_URING_STEP_H
#define VIGIL_TEST_URING_STEP_H

#include <errno.h>
#include <liburing.h>
#include <stdio.h>

static struct io_uring ring;
static struct io_uring_probe *probe;

static int run(const char *name, int opcode)
{
	struct io_uring_cqe *cqe;
	int res;

	if (!io_uring_opcode_supported(probe, opcode)) {
		printf("%s unsupported\n", name);
		return -EOPNOTSUPP;
	}
	if (io_uring_submit(&ring) != 1 || io_uring_wait_cqe(&ring, &cqe) < 0) {
		printf("%s error submit\n", name);
		return -EIO;
	}
	res = cqe->res;
	io_uring_cqe_seen(&ring, cqe);
	if (res < 0)
		printf("%s error %d\n", name, -res);
	else
		printf("%s ok\n", name);
	return res;
}

#endif
