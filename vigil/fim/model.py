"""FIM data: what the baseline holds about one file (`FileRecord`), what a change looks like
(`FimEvent`), and how two records are compared.

Owns the vocabulary of FIM actions and attribute names. Does not own storage (vigil.fim.store),
reading files (vigil.fim.hashing) or rendering (vigil.outputs.ecs_fim).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Any

from vigil.enrich.users import group_name, user_name
from vigil.events.model import Process

ACTIONS = ("added", "modified", "deleted", "renamed", "attributes-changed")
SOURCES = ("realtime", "initial-scan", "startup-scan", "rescan", "scheduled-scan", "manual-scan")

# check name in the configuration -> record attributes it compares
_CHECK_FIELDS = {
    "size": ("size",),
    "mode": ("mode",),
    "owner": ("uid",),
    "group": ("gid",),
    "mtime": ("mtime_ns",),
    "inode": ("inode",),
}
# attribute names as they appear in `changed_attributes` (Wazuh's vocabulary, mtime without _ns)
_ATTR_NAMES = {"size": "size", "mode": "mode", "uid": "uid", "gid": "gid", "mtime_ns": "mtime",
               "inode": "inode"}


_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
          stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
          stat.S_IFBLK: "blockdev"}


def kind_of(mode: int) -> str:
    """The file type word stored in the baseline for an ``st_mode``."""
    return _KINDS.get(stat.S_IFMT(mode), "unknown")


@dataclass(slots=True)
class FileRecord:
    """One baseline row: the attributes and hashes of one path at one moment."""

    path: bytes
    kind: str
    size: int
    mode: int  # full st_mode (type bits included)
    uid: int
    gid: int
    mtime_ns: int
    inode: int
    device: int
    hashes: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # why the content could not be read (permission, too large, ...)

    def to_dict(self) -> dict[str, Any]:
        """The before/after view put into events (owner and group names resolved)."""
        d: dict[str, Any] = {
            "type": self.kind,
            "size": self.size,
            "mode": f"{stat.S_IMODE(self.mode):04o}",
            "uid": self.uid,
            "gid": self.gid,
            "owner": user_name(self.uid),
            "group": group_name(self.gid),
            "mtime_ns": self.mtime_ns,
            "inode": self.inode,
            "device": self.device,
        }
        d.update(self.hashes)
        if self.error:
            d["error"] = self.error
        return d


@dataclass(slots=True)
class FimEvent:
    """One file-integrity change, ready for an output."""

    action: str  # one of ACTIONS
    path: bytes
    source: str  # one of SOURCES
    timestamp_ns: int = 0
    old_path: bytes | None = None  # renamed: where it was
    changed_attributes: list[str] = field(default_factory=list)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    diff: str | None = None  # unified diff, or "binary" for binary content
    process: Process | None = None  # who-data; None when unknown (scans)
    tags: tuple[str, ...] = ()


# The scanner's name for the same records (a scan change has no who-data).
FimChange = FimEvent


def compare(old: FileRecord, new: FileRecord, checks: frozenset[str],
            hashes: tuple[str, ...]) -> list[str]:
    """Names of the checked attributes that differ. Hashes compare only when both sides have one
    (an unreadable or over-size file has none, and that alone is not a content change)."""
    changed: list[str] = []
    if old.kind != new.kind:
        changed.append("type")
    for check, fields in _CHECK_FIELDS.items():
        if check in checks:
            changed += [_ATTR_NAMES[f] for f in fields if getattr(old, f) != getattr(new, f)]
    if "hashes" in checks:
        for algo in hashes:
            a, b = old.hashes.get(algo), new.hashes.get(algo)
            if a is not None and b is not None and a != b:
                changed.append(algo)
    return changed


def classify(changed: list[str], hashes: tuple[str, ...]) -> str:
    """'modified' when the content (or type) changed, else 'attributes-changed'."""
    if "type" in changed or any(h in changed for h in hashes):
        return "modified"
    if "size" in changed:
        return "modified"
    return "attributes-changed"
