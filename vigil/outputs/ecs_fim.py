"""FIM events as ECS JSON documents.

Owns the ECS mapping of vigil.fim.model.FimEvent (event.*, file.*, vigil.fim.*). Does not own the
process/user fields (vigil.outputs.ecs.process_to_ecs, shared with every other event type), the
pretty line (vigil.outputs.pretty) nor writing anything anywhere.

File names are bytes. ``file.path`` is always valid UTF-8 text (undecodable bytes become U+FFFD);
when the name is not valid UTF-8 the exact bytes travel in ``file.path_bytes_b64`` so a consumer can
get the real name back.
"""

from __future__ import annotations

from typing import Any

from vigil.events.model import SCHEMA_VERSION
from vigil.fim.model import SCAN_ACTIONS, FimEvent
from vigil.outputs.ecs import ECS_VERSION, iso, path_fields, process_to_ecs

_TYPES = {
    "added": ["creation"],
    "modified": ["change"],
    "deleted": ["deletion"],
    "renamed": ["change"],
    "attributes-changed": ["change"],
    "baseline-established": ["info"],
    "scan-incomplete": ["info"],
    "scan-failed": ["info"],
}


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
        f["mtime"] = iso(attrs["mtime_ns"])
    if attrs.get("ctime_ns") is not None:
        f["ctime"] = iso(attrs["ctime_ns"])
    hashes = {a: attrs[a] for a in ("sha256", "sha1", "md5", "blake3") if a in attrs}
    if hashes:
        f["hash"] = hashes
    return f


def fim_to_ecs(ev: FimEvent, host: dict[str, Any]) -> dict[str, Any]:
    """One ECS document for one FIM event."""
    if ev.action in SCAN_ACTIONS:
        return _scan_to_ecs(ev, host)
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
    if ev.diff_unavailable is not None:
        fim["diff_unavailable"] = ev.diff_unavailable
    doc = _envelope(ev, host)
    doc["file"] = _file_fields(ev)
    who = process_to_ecs(ev.process)
    doc["vigil"] = {"fim": fim, "schema_version": SCHEMA_VERSION, **who.pop("vigil", {})}
    doc.update(who)
    return doc


def _envelope(ev: FimEvent, host: dict[str, Any]) -> dict[str, Any]:
    """What every FIM document has: time, ECS version, the event's kind and action, host, tags."""
    return {
        "@timestamp": iso(ev.timestamp_ns),
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "event", "category": ["file"], "type": _TYPES[ev.action],
                  "action": ev.action, "dataset": "vigil.fim", "module": "vigil"},
        "host": host,
        "tags": list(ev.tags),
    }


def _scan_to_ecs(ev: FimEvent, host: dict[str, Any]) -> dict[str, Any]:
    """A fact about a scan (vigil.fim.model.SCAN_ACTIONS): a directory's first baseline (with
    ``file.path`` = the directory), or a scan that could not see everything or failed; the
    counts and the reason under ``vigil.fim.scan``."""
    doc = _envelope(ev, host)
    doc["vigil"] = {"fim": {"source": ev.source, "scan": dict(ev.scan or {})},
                    "schema_version": SCHEMA_VERSION}
    if ev.action == "scan-failed":
        doc["event"]["outcome"] = "failure"
    if ev.path:
        doc["file"] = path_fields(ev.path)
    return doc
