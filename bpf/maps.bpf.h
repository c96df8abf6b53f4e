/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The state the parts of vigil.bpf.c share: the settings user space writes between open and
 * load; the maps user space sizes, fills or reads and the ones several parts use (the event
 * buffer, the watch list, the counters, syscalls between enter and exit, files open for
 * writing); the per-CPU scratch buffers and the sizes they are built from; and the helpers that
 * keep the counters (count, lru_insert, lru_delete). A map that is one part's own (the perf
 * outbox, the tail-call table, io_uring's requests, the VFS captures) is defined in that part.
 */
#ifndef VIGIL_MAPS_BPF_H
#define VIGIL_MAPS_BPF_H

#define WALK_END 4096			/* the walk writes right-aligned, ending here */
#define WALK_MASK (WALK_END - 1)
#define NAME_MASK 255
#define LEN_MAX (VIGIL_PATH_MAX - 1)	/* longest path string kept; also a mask */

const volatile __u64 cfg_failed_errnos = (1ULL << 1) | (1ULL << 13) | (1ULL << 30); /* EPERM EACCES EROFS */
const volatile __u64 cfg_wakeup_bytes = 1 << 20; /* wake the reader once this much is pending */
const volatile __u32 cfg_self_tgid = 0;		/* the agent: its own file operations are ignored */
const volatile __u32 cfg_fmode_write = 0x2;	/* FMODE_WRITE */
const volatile __u32 cfg_fmode_created = 0x100000; /* FMODE_CREATED, since 4.19 */
/* 1 when a VFS backend sees the last reference of a file go (__fput): exits then carry no
 * "pending writes" and the close syscalls are not hooked. */
const volatile __u32 cfg_close_at_fput = 0;

#ifdef VIGIL_PERFBUF
/* Kernels without ring buffers (< 5.8): one perf buffer per CPU (vigil_perf.bpf.c). */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));	/* max_entries 0: libbpf sets the CPU count */
} events SEC(".maps");
#else
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);	/* resized by user space before load */
} events SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct vigil_watch_key);
	__type(value, struct vigil_watch_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VIGIL_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* What a syscall's enter program leaves for its exit program. */
enum sc_kind { SC_OPEN = 1, SC_PATH, SC_PATH2, SC_SYMLINK, SC_FD };

struct inflight {
	__u32 kind;
	__u32 op;
	__u32 nr;			/* the syscall's number: an exit takes only its own */
	__u32 _reserved;
	__s32 dfd1;
	__s32 dfd2;
	__u64 path1;
	__u64 path2;
	__u32 flags;
	__u32 mode;
	__u32 uid;
	__u32 gid;
};

/* A plain hash, not an LRU: an LRU would silently evict a syscall in progress; a full hash
 * fails the update, and that is counted. Every syscall exit (interrupted ones too) deletes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} inflight SEC(".maps");

/* Open files of watched paths that were opened for writing: closing them means "modified".
 * An LRU: on the tracepoint backend some last closes are never seen (close_range, the closes of
 * an exec's O_CLOEXEC files), so no path can promise the delete; a plain hash would fill with
 * them for good. Evictions are counted exactly
 * instead (lru_insert), and each one is reported as a lost "modified". */
struct wfile {
	__u64 inode;
	__u32 tgid;
	__u32 _reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);		/* struct file * */
	__type(value, struct wfile);
} wfiles SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);		/* tgid */
	__type(value, __u32);		/* tracked files opened by it */
} wpending SEC(".maps");

/* Scratch space, one per CPU (programs on one CPU do not nest). */
struct walkbuf {
	__u32 off;
	char d[WALK_END + NAME_MASK + 1];
};

struct pathbuf {
	__u32 prefixlen;		/* so that the buffer is also an LPM key */
	char d[2 * VIGIL_PATH_MAX + 8];	/* + room for the scan's look-ahead */
};

/* One file event, built or parked until its result is known (pending, uring_parked): its two
 * paths. */
#define EVBUF_SIZE (sizeof(struct vigil_file_event) + 2 * VIGIL_PATH_MAX + 64)
struct evbuf {
	char b[EVBUF_SIZE];
};

/* The record being built on this CPU (ev_scratch): a file event, or an exec's executable, argv
 * and working directory, the largest record. Only the per-CPU scratch is this big; the maps that
 * park file events keep theirs at EVBUF_SIZE. */
#define RECBUF_SIZE (sizeof(struct vigil_exec_event) + 3 * VIGIL_PATH_MAX + 64)
_Static_assert(RECBUF_SIZE >= EVBUF_SIZE, "the scratch record must hold a file event");
struct recbuf {
	char b[RECBUF_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walkbuf);
} walk_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pathbuf);
} path_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct recbuf);
} ev_scratch SEC(".maps");

/* Atomic although per CPU: a trampoline program can be preempted by another on the same CPU, and
 * the eviction counts (inserts - deletes - live entries) must be exact. */
static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* The agent itself: its own operations are not reported. */
static __always_inline int is_self(void)
{
	return cfg_self_tgid && (bpf_get_current_pid_tgid() >> 32) == cfg_self_tgid;
}

#define E_NOENT 2
#define E_EXIST 17

/* The LRU maps (wfiles, uring_reqs) evict without telling anyone. Each of their entries is
 * inserted once, then deleted or evicted or still there; so new keys and deletes are counted
 * here and user space, which counts the live entries when an eviction was possible, knows
 * exactly how many were evicted (vigil/kernel/lru.py). A replaced value is no new key: BPF_NOEXIST first, then BPF_EXIST. Where
 * an entry can be cleaned up on every path, a plain hash with a counted "full" is used instead
 * (inflight, pending). */
static __always_inline long lru_insert(void *map, void *key, void *val, __u32 stat_new)
{
	long err = bpf_map_update_elem(map, key, val, BPF_NOEXIST);

	if (err == -E_EXIST) {
		err = bpf_map_update_elem(map, key, val, BPF_EXIST);
		if (err != -E_NOENT)
			return err;
		err = bpf_map_update_elem(map, key, val, BPF_NOEXIST);	/* evicted in between */
	}
	if (!err)
		count(stat_new);
	return err;
}

static __always_inline void lru_delete(void *map, void *key, __u32 stat_del)
{
	if (!bpf_map_delete_elem(map, key))
		count(stat_del);
}

#endif /* VIGIL_MAPS_BPF_H */
