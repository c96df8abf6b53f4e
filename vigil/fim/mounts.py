"""Filesystems mounted below watched directories, and which of them the baseline walk skips.

Owns reading the mount table (/proc/self/mountinfo) and the rule a directory's ``mounts`` setting
means: ``include`` walks into every filesystem mounted below it (/boot/efi, a separate /var...)
except pseudo filesystems (proc, sysfs, devtmpfs, cgroup, ...: their content is the kernel's
state, not files an attacker plants); ``skip`` stays on the directory's own filesystem. Does not
walk anything (vigil.fim.walk asks ``pseudo_devices``) nor print (``vigil doctor`` renders
``skipped_mounts``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vigil import mountinfo
from vigil.config import Config, DirectoryConfig
from vigil.mountinfo import MOUNTINFO

# Kernel-state filesystems: never walked, wherever they are mounted.
PSEUDO_TYPES = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs",
    "tracefs", "bpf", "pstore", "efivarfs", "configfs", "fusectl", "mqueue", "hugetlbfs",
    "autofs", "binfmt_misc", "rpc_pipefs", "nsfs", "selinuxfs",
})


@dataclass(frozen=True, slots=True)
class Mount:
    point: bytes
    fstype: str
    device: int  # st_dev of what is mounted there

    @property
    def pseudo(self) -> bool:
        return self.fstype in PSEUDO_TYPES


def read_mounts(path: Path = MOUNTINFO) -> list[Mount]:
    """The mount table; empty when it cannot be read (then nothing counts as pseudo but the
    /proc, /sys and /dev paths vigil.fim.policy never enters anyway)."""
    return [Mount(m.point, m.fstype, os.makedev(m.major, m.minor))
            for m in mountinfo.read(path) if m.fstype]


def pseudo_devices(mounts: list[Mount] | None = None) -> frozenset[int]:
    """Devices of the pseudo filesystems mounted now: the walk never enters them."""
    return frozenset(m.device for m in (read_mounts() if mounts is None else mounts) if m.pseudo)


def _below(root: bytes, point: bytes) -> bool:
    prefix = root if root.endswith(b"/") else root + b"/"
    return point.startswith(prefix)


def skipped_mounts(config: Config, mounts: list[Mount] | None = None
                   ) -> list[tuple[DirectoryConfig, Mount, str]]:
    """(directory, mount, why) for each filesystem mounted below a watched directory that its
    walk does not enter: all of them under ``mounts: skip``, pseudo filesystems always. A mount
    below a nested watched directory belongs to that one; the last mount on a point wins."""
    table = read_mounts() if mounts is None else mounts
    last: dict[bytes, Mount] = {m.point: m for m in table}
    dirs = sorted(config.directories, key=lambda d: len(d.path), reverse=True)
    out: list[tuple[DirectoryConfig, Mount, str]] = []
    for m in sorted(last.values(), key=lambda m: m.point):
        owner = next((d for d in dirs if _below(d.path, m.point)), None)
        if owner is None or any(_below(o.point, m.point) for _, o, _ in out):
            continue  # unwatched, or inside a mount already skipped
        if m.pseudo:
            out.append((owner, m, f"pseudo filesystem ({m.fstype})"))
        elif owner.mounts == "skip" and m.device != _device(owner.path):
            out.append((owner, m, f"{m.fstype}, mounts: skip"))
    return out


def _device(path: bytes) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def describe_skipped(config: Config) -> list[str]:
    """One line per skipped mount, for ``vigil doctor``."""
    return [f"{os.fsdecode(m.point)} under {os.fsdecode(d.path)}: {why}"
            for d, m, why in skipped_mounts(config)]
