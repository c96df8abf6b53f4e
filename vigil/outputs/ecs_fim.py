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
from vigil.fim.model import FimEvent
from vigil.outputs.ecs import ECS_VERSION, iso, path_fields, process_to_ecs

_TYPES = {
    "added": ["creation"],
    "modified": ["change"],
    "deleted": ["deletion"],
    "renamed": ["change"],
    "attributes-changed": ["change"],
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
        "@timestamp": iso(ev.timestamp_ns),
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "event", "category": ["file"], "type": _TYPES[ev.action],
                  "action": ev.action, "dataset": "vigil.fim", "module": "vigil"},
        "host": host,
        "file": _file_fields(ev),
        "tags": list(ev.tags),
    }
    who = process_to_ecs(ev.process)
    doc["vigil"] = {"fim": fim, "schema_version": SCHEMA_VERSION, **who.pop("vigil", {})}
    doc.update(who)
    return doc
