// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * io_uring requests held in flight, for tests/kernel/test_counted_losses.py.
 *
 *   uring_hold DIR N
 *
 * Makes N FIFOs DIR/p0 .. DIR/p<N-1> and submits N IORING_OP_OPENAT of them for writing with
 * O_CREAT (io_uring runs such opens on its workers, where each blocks until the FIFO has a
 * reader): N requests are in flight at once. Then it opens every FIFO for reading, which lets
 * the writers' opens complete, reaps the N completions and closes the files they opened with
 * close(2). Prints "opened <n>" (completions that opened a file) and exits 0, or 1 on an error.
 */
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	char path[4096];
	int n, i, opened = 0, *readers;

	if (argc != 3 || (n = atoi(argv[2])) <= 0) {
		fprintf(stderr, "usage: %s DIR N\n", argv[0]);
		return 1;
	}
	readers = calloc(n, sizeof(*readers));
	if (!readers || io_uring_queue_init(n, &ring, 0) < 0) {
		perror("io_uring_queue_init");
		return 1;
	}
	for (i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		snprintf(path, sizeof(path), "%s/p%d", argv[1], i);
		if (!sqe || mkfifo(path, 0644) < 0) {
			perror("mkfifo");
			return 1;
		}
		/* the name is copied at submission: one buffer does, submitted one at a time */
		io_uring_prep_openat(sqe, AT_FDCWD, path, O_WRONLY | O_CREAT, 0644);
		if (io_uring_submit(&ring) != 1) {
			perror("io_uring_submit");
			return 1;
		}
	}
	usleep(200 * 1000);	/* the workers reach their blocking opens */
	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/p%d", argv[1], i);
		readers[i] = open(path, O_RDONLY | O_NONBLOCK);
	}
	for (i = 0; i < n; i++) {
		if (io_uring_wait_cqe(&ring, &cqe) < 0) {
			perror("io_uring_wait_cqe");
			return 1;
		}
		if (cqe->res >= 0) {
			opened++;
			close(cqe->res);
		}
		io_uring_cqe_seen(&ring, cqe);
	}
	for (i = 0; i < n; i++)
		if (readers[i] >= 0)
			close(readers[i]);
	io_uring_queue_exit(&ring);
	printf("opened %d\n", opened);
	return 0;
}
