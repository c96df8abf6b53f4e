/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Records out: new_event() starts a record in the per-CPU scratch (its header and the acting
 * process); submit() sends it through the ring buffer or, in vigil_perf.bpf.o, parks it in a
 * per-CPU outbox that the program's flush(ctx) sends through the perf event array. A failed
 * send is counted by the record's kind.
 */
#ifndef VIGIL_SEND_BPF_H
#define VIGIL_SEND_BPF_H

#include "maps.bpf.h"
#include "proc.bpf.h"

#ifdef VIGIL_PERFBUF
/* bpf_perf_event_output needs the program's context, which the helpers that build events do
 * not have (a BPF function takes at most 5 arguments). So submit() parks the record in a per-CPU
 * outbox and every program that can submit ends with flush(ctx), which sends it. A program
 * submits at most one record; programs on one CPU do not nest. */
#define PERF_ENOSPC 28
#define OUTBOX_SIZE 16384		/* a power of two >= RECBUF_SIZE: a mask bounds sizes */
_Static_assert(OUTBOX_SIZE >= RECBUF_SIZE, "the outbox must hold any record");

struct outbox {
	__u32 size;			/* 0: empty */
	__u32 drop_stat;		/* the counter of a failed send */
	char b[OUTBOX_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct outbox);
} outbox SEC(".maps");

static __always_inline void submit_max(void *ev, __u32 size, const __u32 max, __u32 drop_stat)
{
	__u32 zero = 0;
	struct outbox *o = bpf_map_lookup_elem(&outbox, &zero);

	if (!o)
		return;
	if (o->size)
		count(o->drop_stat);	/* never flushed: counted, not silently replaced */
	o->size = 0;
	if (size > max)
		return;
	asm volatile("" : "+r"(size));	/* keep clang from dropping the mask as redundant */
	size &= OUTBOX_SIZE - 1;
	if (bpf_probe_read_kernel(o->b, size, ev)) {
		count(drop_stat);
		return;
	}
	o->size = size;
	o->drop_stat = drop_stat;
}

/* Sends the outbox's record, if any. A failure is counted by kind like a failed ring reserve;
 * a full buffer (-ENOSPC) also in VIGIL_STAT_PERF_FULL, so that user space can tell which of
 * the losses perf reports itself it has already counted (4.x kernels return 0 then). */
static __always_inline int flush(void *ctx)
{
	__u32 zero = 0;
	struct outbox *o = bpf_map_lookup_elem(&outbox, &zero);
	__u32 size;
	long err;

	if (!o || !o->size)
		return 0;
	size = o->size & (OUTBOX_SIZE - 1);
	o->size = 0;
	err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, o->b, size);
	if (err) {
		count(o->drop_stat);
		if (err == -PERF_ENOSPC)
			count(VIGIL_STAT_PERF_FULL);
	}
	return 0;
}
#else
static __always_inline void submit_max(void *ev, __u32 size, const __u32 max, __u32 drop_stat)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size >= cfg_wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (size > max)
		return;
	if (bpf_ringbuf_output(&events, ev, size, flags))
		count(drop_stat);
}

/* Ring buffer records are sent by submit_max() itself. */
static __always_inline int flush(void *ctx)
{
	return 0;
}
#endif

/* submit_max(ev, size, max, ...) sends at most `max` bytes, the size of the memory `ev` is in
 * (the verifier checks it): EVBUF_SIZE for file events, which may sit in a parking map;
 * RECBUF_SIZE for an exec record, built in ev_scratch only. */
static __always_inline void submit(void *ev, __u32 size, __u32 drop_stat)
{
	submit_max(ev, size, EVBUF_SIZE, drop_stat);
}

/* Every record starts with a header and the acting process. */
struct ev_common {
	struct vigil_hdr hdr;
	struct vigil_proc proc;
};

static __always_inline void *new_event(__u16 kind)
{
	__u32 zero = 0;
	struct ev_common *e = bpf_map_lookup_elem(&ev_scratch, &zero);

	if (!e)
		return NULL;
	e->hdr.kind = kind;
	e->hdr.flags = 0;
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	fill_proc(&e->proc);
	return e;
}

#endif /* VIGIL_SEND_BPF_H */
