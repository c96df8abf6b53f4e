// SPDX-License-Identifier: GPL-2.0
/*
 * Test-only object for tests/kernel/test_loader.py: a syscall-triggered program whose
 * behaviour depends on `const volatile` settings, so a test can prove that set_rodata()
 * reaches the kernel, plus maps for key/value round trips. Not loaded by the product.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_tgid = 0; /* 0 = count every process */
const volatile __u64 bump = 1;        /* added per getppid() call */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} percpu_hits SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 key = 1, zero = 0;
	__u64 init = bump, *v;
	__u32 *hits;

	if (target_tgid && tgid != target_tgid)
		return 0;
	v = bpf_map_lookup_elem(&counts, &key);
	if (v)
		__sync_fetch_and_add(v, bump);
	else
		bpf_map_update_elem(&counts, &key, &init, BPF_NOEXIST);
	hits = bpf_map_lookup_elem(&percpu_hits, &zero);
	if (hits)
		*hits += 1;
	return 0;
}
