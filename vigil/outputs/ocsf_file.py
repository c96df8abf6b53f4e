"""File events and FIM changes as OCSF File System Activity (1001); FIM scan facts as Scan
Activity (6007).

Owns which activity each file operation is (vigil.file's ``vigil.file.operation``, FIM's
action) and the ``file`` object: name, path, parent folder, type, inode as ``uid``, size,
owner, modification time, ``hashes`` (FIM's sha256/sha1/md5; blake3 as algorithm "Other"),
security xattrs as ``xattributes``. A rename's old name is ``file`` and the new one
``file_result``, as OCSF defines them. What OCSF has no attribute for (the mode, the group,
a symlink's target, a name's exact bytes) goes to ``unmapped.file``.
"""

from __future__ import annotations

from typing import Any, Final

from vigil.outputs.ocsf_actor import UNKNOWN_ACTOR, who
from vigil.outputs.ocsf_base import OTHER, envelope, finish, with_labels

FILE_ACTIVITY: Final = 1001
SCAN_ACTIVITY: Final = 6007
_ACTIVITIES: Final = {1: "Create", 3: "Update", 4: "Delete", 5: "Rename", 6: "Set Attributes",
                      7: "Set Security", 12: "Mount", 13: "Unmount", 14: "Open"}
# vigil.file.operation -> (activity, file type_id when the operation tells it)
_OPS: Final = {
    "create": (1, 1), "mkdir": (1, 2), "mknod": (1, 0), "link": (1, 0), "symlink": (1, 7),
    "modify": (3, 0), "truncate": (3, 0), "delete": (4, 0), "rmdir": (4, 2), "rename": (5, 0),
    "chmod": (7, 0), "chown": (7, 0), "setxattr": (6, 0), "removexattr": (6, 0),
    "open": (14, 0),
}
TYPES: Final = {0: "Unknown", 1: "Regular File", 2: "Folder", 3: "Character Device",
                4: "Block Device", 5: "Local Socket", 6: "Named Pipe", 7: "Symbolic Link"}
# the FIM baseline's kinds (vigil.fim.model.kind_of) and ECS file.type
_KINDS: Final = {"file": 1, "dir": 2, "chardev": 3, "blockdev": 4, "socket": 5, "fifo": 6,
                 "symlink": 7}
_HASHES: Final = {"md5": (1, "MD5"), "sha1": (2, "SHA-1"), "sha256": (3, "SHA-256")}
_FIM: Final = {"added": 1, "modified": 3, "deleted": 4, "renamed": 5}
_SECURITY_ATTRS: Final = frozenset({"mode", "uid", "gid", "xattrs"})


def file_object(f: dict[str, Any], um: dict[str, Any], type_id: int = 0,
                key: str = "file") -> dict[str, Any]:
    """OCSF ``file`` from an ECS ``file`` object; what does not map to ``um[key]``."""
    path: str = f.get("path", "")
    out: dict[str, Any] = {"name": f.get("name") or path.rsplit("/", 1)[-1] or path}
    if path:
        out["path"] = path
    if "directory" in f:
        out["parent_folder"] = f["directory"]
    kind = f.get("type")
    if kind in _KINDS:
        type_id = _KINDS[kind]
    out["type_id"] = type_id
    out["type"] = TYPES[type_id]
    if "inode" in f:
        out["uid"] = f["inode"]
    if "size" in f:
        out["size"] = f["size"]
    if "uid" in f:
        owner: dict[str, Any] = {"uid": f["uid"]}
        if f.get("owner"):
            owner["name"] = f["owner"]
        out["owner"] = owner
    hashes = f.get("hash")
    if hashes:
        out["hashes"] = [_fingerprint(a, v) for a, v in hashes.items()]
    rest = {k: v for k, v in f.items() if k not in _MAPPED}
    if kind is not None and kind not in _KINDS:
        rest["type"] = kind
    if rest:
        um[key] = rest
    return out


_MAPPED: Final = frozenset({"path", "name", "directory", "type", "inode", "size", "uid",
                            "owner", "hash"})


def _fingerprint(algo: str, value: str) -> dict[str, Any]:
    aid, name = _HASHES.get(algo, (OTHER, algo.upper()))
    return {"algorithm_id": aid, "algorithm": name, "value": value}


def _old_file(path: str) -> dict[str, Any]:
    """The ``file`` a rename started from: its path, nothing else known."""
    d, _, name = path.rpartition("/")
    out: dict[str, Any] = {"name": name or path, "path": path, "type_id": 0, "type": "Unknown"}
    if d or path.startswith("/"):
        out["parent_folder"] = d or "/"
    return out


def file_event(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None
               ) -> dict[str, Any]:
    """A kernel file event (ECS dataset vigil.file)."""
    vf = doc["vigil"].get("file") or {}
    op = vf.get("operation", "")
    activity, type_id = _OPS.get(op, (OTHER, 0))
    if op in ("setxattr", "removexattr") and str(vf.get("xattr", "")).startswith(
            ("security.", "system.posix_acl")):
        activity = 7   # an ACL or a security label: security, not a plain attribute
    name = _ACTIVITIES.get(activity) or doc["event"].get("action", "other")
    out = envelope(FILE_ACTIVITY, activity, name, doc, time_ns)
    actor, _, um = who(doc)
    out["actor"] = actor
    um = dict(um)
    ecs_file = doc.get("file") or {}
    if op == "rename" and "original_path" in vf:
        out["file"] = _old_file(vf["original_path"])
        out["file_result"] = file_object(ecs_file, um, type_id, "file_result")
    else:
        out["file"] = file_object(ecs_file, um, type_id)
    return finish(out, doc, host, um)


def fim_event(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None
              ) -> dict[str, Any]:
    """A FIM change or scan fact (ECS dataset vigil.fim)."""
    action = doc["event"].get("action", "")
    fim = doc["vigil"].get("fim") or {}
    if "scan" in fim or action not in (*_FIM, "attributes-changed"):
        return scan_event(doc, time_ns, host, action, fim)
    if action == "attributes-changed":
        changed = set(fim.get("changed_attributes") or ())
        activity = 7 if changed & _SECURITY_ATTRS else 6
    else:
        activity = _FIM[action]
    out = envelope(FILE_ACTIVITY, activity, _ACTIVITIES[activity], doc, time_ns)
    if doc.get("tags"):   # the directory's tags from the FIM configuration
        out["metadata"] = with_labels(out["metadata"], doc["tags"])
    if doc.get("process"):
        actor, _, um = who(doc)
        um = dict(um)
    else:   # found by a scan: nobody knows who
        actor, um = UNKNOWN_ACTOR, {}
    out["actor"] = actor
    f = file_object(doc.get("file") or {}, um)
    attrs = fim.get("after") or fim.get("before") or {}
    if attrs.get("mtime_ns") is not None:
        f["modified_time"] = attrs["mtime_ns"] // 1_000_000
    if attrs.get("xattrs"):
        f["xattributes"] = attrs["xattrs"]
    if action == "renamed" and "old_path" in fim:
        out["file"] = _old_file(fim["old_path"])
        out["file_result"] = f
    else:
        out["file"] = f
    diff = fim.get("diff")
    if isinstance(diff, str) and diff and diff != "binary":
        out["file_diff"] = diff
    return finish(out, doc, host, um)


_SCAN_TYPES: Final = {"manual-scan": (1, "Manual"), "scheduled-scan": (2, "Scheduled")}


def scan_event(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None, action: str,
               fim: dict[str, Any]) -> dict[str, Any]:
    """baseline-established and scan-incomplete: a scan Completed (incomplete: status
    Failure, the reason in status_detail); scan-failed: Error."""
    activity, name = (6, "Error") if action == "scan-failed" else (2, "Completed")
    out = envelope(SCAN_ACTIVITY, activity, name, doc, time_ns)
    source = fim.get("source", "scan")
    type_id, type_name = _SCAN_TYPES.get(source, (OTHER, source))
    path = (doc.get("file") or {}).get("path")
    out["scan"] = {"type_id": type_id, "type": type_name,
                   "name": f"{source} of {path}" if path else source}
    scan = fim.get("scan") or {}
    if isinstance(scan.get("files"), int):
        out["num_files"] = scan["files"]
    skipped = sum(v for k, v in scan.items()
                  if k in ("unreadable_files", "unreadable_dirs") and isinstance(v, int))
    if skipped:
        out["num_skipped_items"] = skipped
    if isinstance(scan.get("duration_s"), (int, float)):
        out["duration"] = int(scan["duration_s"] * 1000)
    if action != "baseline-established":
        out["status_id"], out["status"] = 2, "Failure"
        reason = scan.get("reason") or scan.get("error")
        if reason:
            out["status_detail"] = str(reason)
    else:
        out["status_id"], out["status"] = 1, "Success"
    um: dict[str, Any] = {}
    if doc.get("file"):
        um["file"] = doc["file"]
    return finish(out, doc, host, um)
