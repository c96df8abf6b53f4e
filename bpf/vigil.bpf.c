// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Vigil's kernel side, one object: file changes in watched trees, execs and exits, network
 * activity. Four backends
 * see the file changes (syscall tracepoints; lsm, fentry or kprobe hooks on the VFS) and share
 * one set of maps, one path walk, one watch list and one record format; user space loads the
 * programs of one backend (vigil/kernel/hooks.py), and always those of the processes.
 *
 * Settings are const volatile globals written by user space between open and load.
 *
 * Records go to user space through a ring buffer, or, built as vigil_perf.bpf.c for kernels
 * without one, through a perf event array: then every program that can send a record ends with
 * flush(ctx) (see submit() in send.bpf.h).
 *
 * Each concern is a part of its own, a header included below in dependency order (each part
 * includes the parts it uses; all of them need the headers included here):
 *   maps.bpf.h           settings; the shared maps and per-CPU scratch; the counters
 *   proc.bpf.h           who: the acting task (fill_proc)
 *   path.bpf.h           where: the path walk, paths of objects and of path arguments, the
 *                        watch list lookup (is_watched)
 *   send.bpf.h           records out: new_event, submit, flush (ring buffer or perf buffer)
 *   file_event.bpf.h     file events built, filtered and sent; write tracking
 *   syscalls_file.bpf.h  the syscall-tracepoint backend: the enter/exit pair of each file
 *                        syscall, the tail-called handlers
 *   uring.bpf.h          io_uring's tracepoints, for the same backend
 *   vfs.bpf.h            the lsm, fentry and kprobe backends: capture and commit
 *   process.bpf.h        exec and exit, for every backend
 *   net.bpf.h            network events: TCP state changes (every backend), the socket
 *                        syscalls (the tracepoint backend, and the others' fallback)
 *   net_vfs.bpf.h        network events through the socket layer's kernel functions, for
 *                        the lsm, fentry and kprobe backends
 *   cred.bpf.h          privilege changes: set*id, capset, setuid exec (before and after), and
 *                        escalations that no such call explains (commit_creds)
 *   sec.bpf.h           kernel and security tampering: module loads, bpf() by others, ptrace,
 *                        process_vm_writev, mounts, pivot_root, signals to the agent
 *   shell.bpf.h          interactive shell commands: a uretprobe on readline, attached by user
 *                        space per binary
 */
#include <linux/bpf.h>
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "kread.h"
#include <bpf/bpf_tracing.h>
#include "vigil_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What every part builds on. */
#include "maps.bpf.h"
#include "proc.bpf.h"
#include "path.bpf.h"
#include "send.bpf.h"
#include "file_event.bpf.h"

/* The programs. */
#include "syscalls_file.bpf.h"
#include "uring.bpf.h"
/* The LSM, fentry and kprobe backends: hooks on the VFS. */
#include "vfs.bpf.h"
#include "process.bpf.h"
#include "net.bpf.h"
#include "net_vfs.bpf.h"
#include "cred.bpf.h"
#include "sec.bpf.h"
#include "shell.bpf.h"

/* Anchors: put every record type into the object's BTF, so user space can check its mirror of
 * the layout against what was compiled (tests/unit/test_layout.py). Never read. */
struct vigil_file_event *const volatile anchor_file_event;
struct vigil_exec_event *const volatile anchor_exec_event;
struct vigil_exit_event *const volatile anchor_exit_event;
struct vigil_net_event *const volatile anchor_net_event;
struct vigil_cred_event *const volatile anchor_cred_event;
struct vigil_sec_event *const volatile anchor_sec_event;
struct vigil_shell_event *const volatile anchor_shell_event;
struct vigil_watch_key *const volatile anchor_watch_key;
struct vigil_watch_val *const volatile anchor_watch_val;
