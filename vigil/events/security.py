"""Typed privilege and tampering events: a process's credentials changed (CredEvent), and
something touched the kernel or another process (SecEvent). Values of the enums are shared
with the BPF side (bpf/vigil_events.h)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vigil.events.model import Process


class CredOp(enum.IntEnum):
    """What changed a process's credentials."""

    SETUID = 1
    SETREUID = 2
    SETRESUID = 3
    SETFSUID = 4
    SETGID = 5
    SETREGID = 6
    SETRESGID = 7
    SETFSGID = 8
    CAPSET = 9
    EXEC = 10  # a setuid/setgid or file-capability program
    ESCALATION = 11  # more privilege that no set*id call or exec explains

    @property
    def action(self) -> str:
        """The ECS ``event.action`` word."""
        if self is CredOp.ESCALATION:
            return "privilege-escalation"
        if self is CredOp.EXEC:
            return "setid-exec"
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Creds:
    """A process's identity: ids in the initial user namespace, 64-bit capability sets, and the
    user namespace they count in (its inode number)."""

    uid: int
    gid: int
    suid: int
    sgid: int
    euid: int
    egid: int
    fsuid: int
    fsgid: int
    cap_effective: int
    cap_permitted: int
    cap_inheritable: int
    user_ns: int

    def gains_over(self, old: Creds) -> bool:
        """More privilege than ``old``: a root id it did not have, or capabilities beyond its
        permitted set in the same user namespace (bpf/cred.bpf.h, escalates())."""
        ids = ("uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid")
        if any(getattr(self, f) == 0 and getattr(old, f) != 0 for f in ids):
            return True
        return self.user_ns == old.user_ns and bool(
            (self.cap_effective | self.cap_permitted) & ~old.cap_permitted)


@dataclass(slots=True)
class CredEvent:
    """``process`` changed its credentials from ``old`` to ``new``. ``path``: the program of a
    setuid/setgid exec, as exec was given it. ``inferred``: no hook saw the change; a later event
    of the process showed more privilege than Vigil last saw (vigil.events.creds)."""

    timestamp_ns: int
    op: CredOp
    process: Process
    old: Creds
    new: Creds
    path: bytes | None = None
    flags: int = 0
    inferred: bool = False


class SecOp(enum.IntEnum):
    """Kernel and security tampering."""

    MODULE_LOAD = 1
    BPF_PROG_LOAD = 2
    BPF_ATTACH = 3
    PTRACE = 4
    VM_WRITE = 5
    MOUNT = 6
    UMOUNT = 7
    PIVOT_ROOT = 8
    SIGNAL = 9
    BPF_OWN = 10  # a handle taken on one of Vigil's own BPF programs, maps or links

    @property
    def action(self) -> str:
        return _SEC_ACTIONS[self]


_SEC_ACTIONS = {SecOp.MODULE_LOAD: "module-load", SecOp.BPF_PROG_LOAD: "bpf-program-load",
                SecOp.BPF_ATTACH: "bpf-attach", SecOp.PTRACE: "ptrace-attach",
                SecOp.VM_WRITE: "process-vm-write", SecOp.MOUNT: "mount",
                SecOp.UMOUNT: "umount", SecOp.PIVOT_ROOT: "pivot-root",
                SecOp.SIGNAL: "signal-agent", SecOp.BPF_OWN: "bpf-vigil-object"}


@dataclass(slots=True)
class Target:
    """The process acted on (ptrace, process_vm_writev, a signal)."""

    pid: int
    start_time: int | None = None  # clock ticks since boot, as Process.start_time
    comm: bytes | None = None
    executable: bytes | None = None
    uid: int | None = None


@dataclass(slots=True)
class SecEvent:
    """Something that touched the kernel, another process or the agent. Which fields mean
    something depends on ``op`` (bpf/vigil_events.h, struct vigil_sec_event): ``name`` is a
    module's or bpf program's name, a mount's filesystem type or a raw tracepoint; ``path`` a
    mount point or pivot_root's new root; ``path2`` a mount's source or where the old root
    went; ``arg1..3`` the request, command, signal, types and flags."""

    timestamp_ns: int
    op: SecOp
    process: Process
    errno: int = 0
    target: Target | None = None
    arg1: int = 0
    arg2: int = 0
    arg3: int = 0
    name: bytes = b""
    path: bytes | None = None
    path2: bytes | None = None
    flags: int = 0

    @property
    def failed(self) -> bool:
        return self.errno != 0
