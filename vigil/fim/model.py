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
# Not changes of one file but facts about a scan: a watched directory got its first baseline
# (silently: its files are not "added"), a scan could not see everything, a scan failed.
SCAN_ACTIONS = ("baseline-established", "scan-incomplete", "scan-failed")
SOURCES = ("realtime", "initial-scan", "startup-scan", "rescan", "scheduled-scan", "manual-scan")

# check name in the configuration -> record attributes it compares
_CHECK_FIELDS = {
    "size": ("size",),
    "mode": ("mode",),
    "owner": ("uid",),
    "group": ("gid",),
    "mtime": ("mtime_ns",),
    "inode": ("inode",),
    "ctime": ("ctime_ns",),
}
# attribute names as they appear in `changed_attributes` (Wazuh's vocabulary, mtime without _ns)
_ATTR_NAMES = {"size": "size", "mode": "mode", "uid": "uid", "gid": "gid", "mtime_ns": "mtime",
               "inode": "inode", "ctime_ns": "ctime"}


_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
          stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
          stat.S_IFBLK: "blockdev"}


def kind_of(mode: int) -> str:
    """The file type word stored in the baseline for an ``st_mode``."""
    return _KINDS.get(stat.S_IFMT(mode), "unknown")


def xattr_shown(hexval: str) -> str:
    """An extended attribute's value for people: the text of a label (SELinux, SMACK: printable,
    NUL-terminated), else ``0x`` and the hex bytes (security.capability, IMA/EVM hashes)."""
    raw = bytes.fromhex(hexval)
    body = raw[:-1] if raw.endswith(b"\0") else raw
    try:
        s = body.decode("utf-8")
    except UnicodeDecodeError:
        s = ""
    return s if s and s.isprintable() else "0x" + hexval


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
    # Rows written before schema 3 have neither: None means "not known", never "changed".
    ctime_ns: int | None = None
    xattrs: dict[str, str] | None = None  # security.* name -> value as hex; {} = none

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
        if self.ctime_ns is not None:
            d["ctime_ns"] = self.ctime_ns
        if self.xattrs is not None:
            d["xattrs"] = {k: xattr_shown(v) for k, v in sorted(self.xattrs.items())}
        d.update(self.hashes)
        if self.error:
            d["error"] = self.error
        return d


@dataclass(slots=True)
class FimEvent:
    """One file-integrity change, ready for an output."""

    action: str  # one of ACTIONS, or SCAN_ACTIONS for a fact about a scan
    path: bytes
    source: str  # one of SOURCES
    timestamp_ns: int = 0
    old_path: bytes | None = None  # renamed: where it was
    changed_attributes: list[str] = field(default_factory=list)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    diff: str | None = None  # unified diff, or "binary" for binary content
    # why a modified report_changes file has no diff: "quota" (its previous content was dropped
    # to keep diff.quota_mb), "too-large", "unreadable", "no-previous-content"
    diff_unavailable: str | None = None
    scan: dict[str, Any] | None = None  # SCAN_ACTIONS: counts, duration, reason
    process: Process | None = None  # who-data; None when unknown (scans)
    tags: tuple[str, ...] = ()


# The scanner's name for the same records (a scan change has no who-data).
FimChange = FimEvent


def compare(old: FileRecord, new: FileRecord, checks: frozenset[str],
            hashes: tuple[str, ...]) -> list[str]:
    """Names of the checked attributes that differ. Hashes, xattrs and ctime compare only when
    both sides know them (an unreadable or over-size file has no hash, a row from before schema 3
    no ctime, and that alone is not a change).

    ctime moves with every other change (content, chmod, chown, xattrs, rename, link count), so it
    is named only when nothing else explains it: then something changed the inode that no other
    check sees (a hard link made or removed, a utime restoring the mtime, a chmod to the same
    mode, a non-security xattr)."""
    changed: list[str] = []
    if old.kind != new.kind:
        changed.append("type")
    for check, fields in _CHECK_FIELDS.items():
        if check in checks:
            changed += [_ATTR_NAMES[f] for f in fields
                        if getattr(old, f) is not None and getattr(new, f) is not None
                        and getattr(old, f) != getattr(new, f)]
    if "xattrs" in checks and old.xattrs is not None and new.xattrs is not None \
            and old.xattrs != new.xattrs:
        changed.append("xattrs")
    if "hashes" in checks:
        for algo in hashes:
            a, b = old.hashes.get(algo), new.hashes.get(algo)
            if a is not None and b is not None and a != b:
                changed.append(algo)
    if "ctime" in changed and len(changed) > 1:
        changed.remove("ctime")
    return changed


def lacks_new_fields(old: FileRecord, new: FileRecord) -> bool:
    """A row written before this Vigil recorded ctime and xattrs: worth rewriting silently."""
    return (old.ctime_ns is None and new.ctime_ns is not None) or (
        old.xattrs is None and new.xattrs is not None)


def classify(changed: list[str], hashes: tuple[str, ...]) -> str:
    """'modified' when the content (or type) changed, else 'attributes-changed'."""
    if "type" in changed or any(h in changed for h in hashes):
        return "modified"
    if "size" in changed:
        return "modified"
    return "attributes-changed"
