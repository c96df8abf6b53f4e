// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * File changes made only through io_uring, for tests/kernel/test_io_uring.py.
 *
 *   uring_ops DIR
 *
 * In DIR: create "u1" (IORING_OP_OPENAT), write to it (IORING_OP_WRITE), close it
 * (IORING_OP_CLOSE), rename it to "u2" (IORING_OP_RENAMEAT), delete "u2" (IORING_OP_UNLINKAT).
 * No file syscall touches DIR: only io_uring_setup/io_uring_enter. Prints one line per step,
 * "<op> ok", "<op> unsupported" (the kernel's io_uring lacks the opcode) or "<op> error <errno>",
 * and exits 0 unless a supported step failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>

#include "uring_step.h"

int main(int argc, char **argv)
{
	static const char data[] = "written through io_uring\n";
	char p1[4096], p2[4096];
	int dirfd, fd, failed = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	snprintf(p1, sizeof(p1), "%s/u1", argv[1]);
	snprintf(p2, sizeof(p2), "%s/u2", argv[1]);
	dirfd = AT_FDCWD;
	if (io_uring_queue_init(4, &ring, 0) < 0) {
		perror("io_uring_queue_init");
		return 2;
	}
	probe = io_uring_get_probe_ring(&ring);
	if (!probe) {
		fprintf(stderr, "io_uring probe not supported\n");
		return 2;
	}

	io_uring_prep_openat(io_uring_get_sqe(&ring), dirfd, p1, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	fd = run("openat", IORING_OP_OPENAT);
	if (fd < 0)
		return 1;
	io_uring_prep_write(io_uring_get_sqe(&ring), fd, data, strlen(data), 0);
	failed |= run("write", IORING_OP_WRITE) < 0;
	io_uring_prep_close(io_uring_get_sqe(&ring), fd);
	failed |= run("close", IORING_OP_CLOSE) < 0;

	if (io_uring_opcode_supported(probe, IORING_OP_RENAMEAT)) {
		io_uring_prep_renameat(io_uring_get_sqe(&ring), dirfd, p1, dirfd, p2, 0);
		failed |= run("renameat", IORING_OP_RENAMEAT) < 0;
	} else {
		printf("renameat unsupported\n");
	}
	if (io_uring_opcode_supported(probe, IORING_OP_UNLINKAT)) {
		const char *victim = io_uring_opcode_supported(probe, IORING_OP_RENAMEAT) ? p2 : p1;

		io_uring_prep_unlinkat(io_uring_get_sqe(&ring), dirfd, victim, 0);
		failed |= run("unlinkat", IORING_OP_UNLINKAT) < 0;
	} else {
		printf("unlinkat unsupported\n");
	}
	fflush(stdout);
	io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
	return failed;
}
