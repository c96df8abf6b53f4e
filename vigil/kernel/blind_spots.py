"""What each backend cannot see, as `vigil doctor` says it: the file hooks', the network's
(through the socket syscalls or the socket layer's functions) and the privilege and tampering
part's. Data only; vigil.kernel.hooks.Plan puts a backend's lines together.
"""

from __future__ import annotations

COMMON_BLIND_SPOTS = (
    "failed opens (EACCES/EPERM at open) are not reported; other failed changes are",
    "a change another LSM denies before Vigil's hook runs is not reported (it did not happen)",
    "mknod(2) of a regular file (created empty); xattr changes submitted through io_uring",
    "who-data of io_uring operations run by io-wq workers is the worker's on kernels where "
    "those are kernel threads (before 5.12)",
    "file changes in a container (another mount namespace or a chroot) are named as the "
    "container sees them: a watched host directory bind-mounted at another path inside it is "
    "not matched (the same path inside and outside is; execs in containers are reported)",
)

BLIND_SPOTS: dict[str, tuple[str, ...]] = {
    "tracepoint": (
        "io_uring operations other than openat/openat2 (for writing), close, unlinkat, "
        "renameat, mkdirat, symlinkat and linkat, which are seen through the io_uring "
        "tracepoints: write, writev, fallocate, ftruncate, splice into a file show only as "
        "\"modified\" at the close of a file whose open Vigil saw; xattr operations, "
        "IORING_OP_URING_CMD and opens/closes of fixed-file slots are not seen; a close "
        "while another io_uring request still holds the file leaves its \"modified\" unsent",
        "io_uring requests submitted with IOSQE_CQE_SKIP_SUCCESS: their successes have no "
        "completion and are not reported",
        "io_uring on kernels whose io_uring_complete tracepoint does not name the request "
        "(5.10): nothing of io_uring is seen there",
        "operations through a bind mount of a watched tree, or through a symlink into one "
        "that Vigil does not know of: outside the watched trees and their ancestor "
        "directories, made before Vigil started (and not in a scanned tree) or used before "
        "Vigil saw it created (path arguments are matched by their text; the known symlinks "
        "are listed under 'watch list')",
        "close_range(), writes through mmap after close, files inherited by a child that "
        "outlives the opener (scheduled scans and rescans after drops catch the result)",
    ),
    "lsm": COMMON_BLIND_SPOTS,
    "fentry": COMMON_BLIND_SPOTS,
    "kprobe": COMMON_BLIND_SPOTS,
}


# What the network part cannot see: through the socket syscalls' tracepoints (the tracepoint
# backend, and the others' fallback), or through the socket layer's functions.
_NET_COMMON = (
    "network: raw and packet sockets (ping, DHCP clients, sniffers), SCTP and other protocols "
    "than TCP and UDP; abstract Unix socket names; Unix datagram sockets",
    "network: data on an existing connection (sendfile over it, ...): connections are events, "
    "not their data; names are not tied to connections (no DNS view: Sigma's "
    "DestinationHostname is not provided)",
)
NET_BLIND_SPOTS_SYSCALLS = (
    "network: accepts and UDP datagrams through io_uring (IORING_OP_ACCEPT, SEND, RECV...); "
    "io_uring's TCP connects and listens are seen (the socket's state change)",
    "network: UDP datagrams written with write(), read with read(), or moved with splice or "
    "sendfile (only sendto, sendmsg, sendmmsg, recvfrom, recvmsg and recvmmsg are hooked)",
    "network: the socket syscalls of 32-bit processes on a 64-bit kernel (the syscall "
    "tracepoints skip compat calls): their TCP connects and listens are seen, their accepts, "
    "binds, UDP flows and Unix connects are not",
    *_NET_COMMON,
)
NET_BLIND_SPOTS_FUNCS = _NET_COMMON


# What the privilege and tampering part cannot see, per backend.
_SEC_COMMON = (
    "privilege: changes of supplementary groups (setgroups), of securebits and of ambient "
    "capabilities are not reported; capabilities gained in a new user namespace count there, "
    "not as an escalation",
    "tampering: a kernel module's file is not named (its name is); bpf() calls are reported "
    "when asked, before the verifier's verdict; signals sent to one thread of the agent "
    "(tgkill) are not reported, signals to the agent process are; mounts made with the new "
    "mount API (fsopen, fsmount, move_mount) are not reported",
)
# process_vm_rw has seven arguments: trampolines that take six (x86-64 before 6.6) refuse it
_SEC_TRAMPOLINE = ("tampering: process_vm_writev, on kernels whose BPF trampolines take at most "
                   "six arguments (x86-64 before 6.6; the agent says so when it starts)")
SEC_BLIND_SPOTS = {
    "tracepoint": (
        "privilege: commit_creds is not hooked, so an escalation without a set*id call or exec "
        "(a kernel exploit) is caught only when a later event of the process shows more "
        "privilege than Vigil last saw for it (event.action privilege-escalation, "
        "vigil.privilege.inferred: true); the 16-bit and 32-bit-compat set*id calls are not "
        "hooked",
        "tampering: process_vm_writev, ptrace, mounts and pivot_root through their syscalls "
        "only (io_uring has none of them); the target of ptrace is the pid as its caller "
        "named it",
        *_SEC_COMMON,
    ),
    "lsm": (_SEC_TRAMPOLINE, *_SEC_COMMON),
    "fentry": (_SEC_TRAMPOLINE, *_SEC_COMMON),
    "kprobe": (
        "tampering: process_vm_writev (its seventh argument is beyond a kprobe's reach)",
        *_SEC_COMMON,
    ),
}
