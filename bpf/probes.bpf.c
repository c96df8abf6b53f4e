// SPDX-License-Identifier: GPL-2.0
/*
 * Feature probes ("probe features, don't parse versions"): one trivial program per hook
 * type Vigil may use. vigil/kernel/probes.py loads exactly one program at a time and reports
 * whether it loads and attaches. Each program is the smallest thing the verifier accepts; the
 * only logic worth having is what the feature itself needs (a helper call, a CO-RE access).
 *
 * No vmlinux.h: the few kernel types are declared here with preserve_access_index so CO-RE
 * relocates them against whatever kernel runs us. The file is also the test object for
 * tests/unit (BTF layouts, .rodata offsets), hence the `const volatile` knobs.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL"; /* lsm, bpf_d_path and fentry need a GPL license */

struct path {
	void *mnt;
	void *dentry;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
} __attribute__((preserve_access_index));

/* A fixed-layout record: unit tests read it back from this object's BTF. */
struct probe_record {
	__u64 ts;
	__u32 pid;
	__u32 flags;
	char comm[16];
	__u8 kind;
	__u8 pad[7];
};

/* Set before load by the loader (set_rodata); tests check the DATASEC offsets. */
const volatile __u32 probe_magic = 0;
const volatile __u64 probe_cookie = 0;
const volatile char probe_tag[8] = {};
/* Keeps struct probe_record in the BTF (local-variable types are not emitted). */
const volatile struct probe_record probe_template = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096); /* the loader sets it to the page size */
} probe_events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int probe_tracepoint(void *ctx)
{
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int probe_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

SEC("tp_btf/sched_process_exec")
int probe_tp_btf(__u64 *ctx)
{
	return 0;
}

SEC("kprobe/do_unlinkat")
int probe_kprobe(void *ctx)
{
	return 0;
}

SEC("fentry/do_unlinkat")
int probe_fentry(__u64 *ctx)
{
	return 0;
}

SEC("lsm/path_unlink")
int probe_lsm(__u64 *ctx)
{
	return 0; /* 0 = allow: a probe must never change what the system does */
}

/* Ring buffer support, exercised from the most widely available hook type. */
SEC("tracepoint/syscalls/sys_enter_getpid")
int probe_ringbuf(void *ctx)
{
	struct probe_record rec = {};

	rec.pid = bpf_get_current_pid_tgid() >> 32;
	rec.flags = probe_magic;
	bpf_ringbuf_output(&probe_events, &rec, sizeof(rec), 0);
	return 0;
}

/* Perf event arrays, the event buffer of kernels without ring buffers (vigil_perf.bpf.c). */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));	/* max_entries 0: libbpf sets the CPU count */
} probe_perf SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int probe_perfbuf(void *ctx)
{
	struct probe_record rec = {};

	rec.pid = bpf_get_current_pid_tgid() >> 32;
	rec.flags = probe_magic;
	bpf_perf_event_output(ctx, &probe_perf, BPF_F_CURRENT_CPU, &rec, sizeof(rec));
	return 0;
}

/* bpf_d_path is allowed only from a kernel allowlist of functions; security_file_open is on
 * it from 5.10 on. */
SEC("fentry/security_file_open")
int BPF_PROG(probe_d_path, struct file *file)
{
	char buf[64];

	bpf_d_path(&file->f_path, buf, sizeof(buf));
	return 0;
}
