"""Rendering FIM events: ECS JSON documents and one readable line per change.

Owns the ECS mapping of vigil.fim.model.FimEvent (event.*, file.*, vigil.fim.*) and the pretty
line. Does not own the process/user ECS fields (vigil.outputs.ecs.process_to_ecs, shared with every
other event type) nor writing anything anywhere.

File names are bytes. ``file.path`` is always valid UTF-8 text (undecodable bytes become U+FFFD);
when the name is not valid UTF-8 the exact bytes travel in ``file.path_bytes_b64`` so a consumer can
get the real name back.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from typing import Any

from vigil.events.model import Process
from vigil.fim.model import FimEvent

_TYPES = {
    "added": ["creation"],
    "modified": ["change"],
    "deleted": ["deletion"],
    "renamed": ["change"],
    "attributes-changed": ["change"],
}


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def path_fields(path: bytes, prefix: str = "path") -> dict[str, str]:
    """``{prefix: text}`` plus ``{prefix}_bytes_b64`` when the bytes are not valid UTF-8."""
    try:
        return {prefix: path.decode("utf-8")}
    except UnicodeDecodeError:
        return {prefix: path.decode("utf-8", "replace"),
                f"{prefix}_bytes_b64": base64.b64encode(path).decode("ascii")}


def _process_fields(p: Process | None) -> dict[str, Any]:
    if p is None:
        return {}
    try:
        from vigil.outputs.ecs import process_to_ecs  # the lead's module; may land later
    except ImportError:
        return {"process": {"pid": p.pid, "entity_id": p.entity_id,
                            "name": p.comm.decode("utf-8", "replace")},
                "user": {"id": str(p.uid)}}
    ecs: dict[str, Any] = process_to_ecs(p)
    return ecs


def _file_fields(ev: FimEvent) -> dict[str, Any]:
    f: dict[str, Any] = path_fields(ev.path)
    name = ev.path.rsplit(b"/", 1)[-1]
    f.update({"name": name.decode("utf-8", "replace"),
              "directory": (ev.path.rsplit(b"/", 1)[0] or b"/").decode("utf-8", "replace")})
    attrs = ev.after or ev.before or {}
    if "type" in attrs:
        f["type"] = {"file": "file", "dir": "dir", "symlink": "symlink"}.get(attrs["type"],
                                                                            attrs["type"])
    for key in ("size", "mode", "owner", "group"):
        if attrs.get(key) is not None:
            f[key] = attrs[key]
    for key in ("uid", "gid", "inode"):  # ECS keeps these as keywords
        if attrs.get(key) is not None:
            f[key] = str(attrs[key])
    if attrs.get("mtime_ns") is not None:
        f["mtime"] = _iso(attrs["mtime_ns"])
    hashes = {a: attrs[a] for a in ("sha256", "sha1", "md5", "blake3") if a in attrs}
    if hashes:
        f["hash"] = hashes
    return f


def fim_to_ecs(ev: FimEvent, host: dict[str, Any]) -> dict[str, Any]:
    """One ECS document for one FIM event."""
    fim: dict[str, Any] = {
        "source": ev.source,
        "changed_attributes": list(ev.changed_attributes),
        "before": ev.before,
        "after": ev.after,
        "diff": ev.diff,
        "who_data": "known" if ev.process is not None else "unknown",
    }
    if ev.old_path is not None:
        fim.update(path_fields(ev.old_path, "old_path"))
    doc: dict[str, Any] = {
        "@timestamp": _iso(ev.timestamp_ns),
        "event": {"kind": "event", "category": ["file"], "type": _TYPES[ev.action],
                  "action": ev.action, "dataset": "vigil.fim", "module": "vigil"},
        "host": host,
        "file": _file_fields(ev),
        "vigil": {"fim": fim},
        "tags": list(ev.tags),
    }
    doc.update(_process_fields(ev.process))
    return doc


def printable(path: bytes) -> str:
    """A path for a terminal: invalid UTF-8 as \\xNN, control characters escaped."""
    text = path.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fim_to_line(ev: FimEvent) -> str:
    """One readable line per change."""
    parts = [_iso(ev.timestamp_ns), f"{ev.action:<18}", printable(ev.path)]
    if ev.old_path is not None:
        parts.append(f"(from {printable(ev.old_path)})")
    if ev.changed_attributes:
        parts.append("[" + ", ".join(ev.changed_attributes) + "]")
    if ev.process is not None:
        p = ev.process
        who = p.user_name or str(p.uid)
        exe = os.fsdecode(p.executable) if p.executable else p.comm.decode("utf-8", "replace")
        parts.append(f"by {printable(os.fsencode(exe))} pid {p.pid} user {who}")
    else:
        parts.append(f"by unknown ({ev.source})")
    if ev.diff == "binary":
        parts.append("(binary content changed)")
    return "  ".join(parts)
