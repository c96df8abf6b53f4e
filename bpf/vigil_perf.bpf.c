// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vigil.bpf.c with a perf event array instead of the ring buffer, for kernels without BPF ring
 * buffers (< 5.8): the same programs, maps and records; only how a record reaches user space
 * differs (see submit() and flush() in send.bpf.h). User space picks the object
 * (vigil.kernel.backend).
 */
#define VIGIL_PERFBUF 1
#include "vigil.bpf.c"
