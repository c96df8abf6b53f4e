"""Pseudo-filesystems eBPF tooling needs: tracefs, bpffs and securityfs.

A fresh boot of a minimal system mounts none of them; libbpf needs tracefs to attach
tracepoints, bpffs to pin, and securityfs is where the kernel lists its active LSMs and the
lockdown mode. Owns finding and mounting them (mount(2) through vigil.kernel.libbpf, the one
ctypes module). Does not decide whether a missing one is fatal beyond tracefs: callers choose
what to ask for.
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass
from pathlib import Path

from vigil.kernel import libbpf
from vigil.kernel.errors import BpfPermissionError, NotSupportedError, VigilError

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")  # where tracefs lived before 4.1
BPFFS = Path("/sys/fs/bpf")
SECURITYFS = Path("/sys/kernel/security")
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8


@dataclass(frozen=True)
class _Fs:
    fstype: str
    target: Path
    config: str  # the kernel option that provides it, for the error message


_FILESYSTEMS = {
    "tracefs": _Fs("tracefs", TRACEFS, "CONFIG_TRACING"),
    "bpffs": _Fs("bpf", BPFFS, "CONFIG_BPF_SYSCALL"),
    "securityfs": _Fs("securityfs", SECURITYFS, "CONFIG_SECURITYFS"),
}


def mounted(proc_mounts: str = "/proc/self/mounts") -> dict[Path, str]:
    """{mount point: filesystem type} of the current mount namespace."""
    out: dict[Path, str] = {}
    with open(proc_mounts) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                # /proc/mounts escapes spaces as \\040; none of our targets contain one.
                out[Path(parts[1])] = parts[2]
    return out


def tracefs_root() -> Path | None:
    """Where tracefs can be used right now, or None if it is not mounted anywhere we look."""
    mounts = mounted()
    if mounts.get(TRACEFS) == "tracefs":
        return TRACEFS
    # Older systems reach tracefs through debugfs (auto-mounted below it).
    if (DEBUGFS_TRACING / "events").is_dir():
        return DEBUGFS_TRACING
    return None


def tracepoint_exists(category: str, name: str) -> bool:
    # the usual place first: a start asks for ~130 tracepoints, each mount table read costs
    if (TRACEFS / "events" / category / name).is_dir():
        return True
    root = tracefs_root()
    return root is not None and (root / "events" / category / name).is_dir()


def _kernel_has(fstype: str) -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())
    except OSError:
        return True  # cannot tell; let mount(2) answer


def _mount(name: str) -> bool:
    """Mount one filesystem if absent; True when this call mounted it."""
    fs = _FILESYSTEMS[name]
    if mounted().get(fs.target) == fs.fstype:
        return False
    if name == "tracefs" and tracefs_root() is not None:
        return False
    if not _kernel_has(fs.fstype):
        raise NotSupportedError(name, fs.config, f"no {fs.fstype} in /proc/filesystems")
    try:
        libbpf.libc_mount(fs.fstype, str(fs.target), fs.fstype, MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        err = e.errno or _errno.EIO
        if err in (_errno.EPERM, _errno.EACCES):
            raise BpfPermissionError(f"mounting {name} at {fs.target}", err,
                                     "run as root (needs CAP_SYS_ADMIN)" if os.geteuid()
                                     else "the container or sandbox forbids mounts") from None
        if err == _errno.ENODEV:
            raise NotSupportedError(name, fs.config, "no such filesystem type", err) from None
        raise VigilError(f"cannot mount {name} at {fs.target}: {e.strerror}") from None
    return True


def ensure_mounted(*, tracefs: bool = True, bpffs: bool = True,
                   securityfs: bool = True) -> list[Path]:
    """Mount the requested filesystems where missing; returns the mount points it created.

    Idempotent. Raises NotSupportedError / BpfPermissionError / VigilError with one sentence
    when a requested filesystem cannot be made available.
    """
    done: list[Path] = []
    for name, wanted in (("tracefs", tracefs), ("bpffs", bpffs), ("securityfs", securityfs)):
        if wanted and _mount(name):
            done.append(_FILESYSTEMS[name].target)
    return done
