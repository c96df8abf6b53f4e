"""Tampering events (ECS dataset vigil.tampering) in the OCSF class each one is:

- a kernel module loaded: Kernel Extension Activity (1002) "Load", the module as ``driver``;
- a BPF program loaded, attached, or a handle taken on one of Vigil's own BPF objects:
  Kernel Activity (1003) "Create" (a program, a link) or "Read" (a handle on an existing
  object), the object as ``kernel``;
- ptrace attach: Process Activity (1007) "Open" (a handle to control another process), the
  traced process as ``process``;
- process_vm_writev: Memory Activity (1004) "Write" into the target ``process``, ``size``;
- a signal to the agent: Process Activity "Terminate" for the signals that end it, else
  "Other" (Signal), the agent as ``process``;
- mount, umount, pivot_root: File System Activity (1001) "Mount", "Unmount", "Other" (Pivot
  Root), the mount point or new root as ``file``.

The details of each (flags, the bpf command, taints, the signal's number) stay under
``unmapped.vigil`` as ECS names them.
"""

from __future__ import annotations

from typing import Any, Final

from vigil.outputs.ocsf_actor import exe_file, who
from vigil.outputs.ocsf_base import OTHER, envelope, finish

_ENDING_SIGNALS: Final = frozenset({"SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT", "SIGABRT"})
_OBJECT_TYPES: Final = {"program": "BPF Program", "map": "BPF Map", "link": "BPF Link"}


def _target(doc: dict[str, Any]) -> dict[str, Any] | None:
    t = ((doc.get("vigil") or {}).get("target") or {}).get("process")
    if not t:
        return None
    out: dict[str, Any] = {"pid": t["pid"]}
    if t.get("name"):
        out["name"] = t["name"]
    if t.get("executable"):
        out["path"] = t["executable"]
        out["file"] = exe_file(t["executable"])
    if (t.get("user") or {}).get("id") is not None:
        out["user"] = {"uid": t["user"]["id"]}
    return out


def _folder(path: str) -> dict[str, Any]:
    d, _, name = path.rstrip("/").rpartition("/")
    out: dict[str, Any] = {"name": name or path, "path": path, "type_id": 2, "type": "Folder"}
    if d:
        out["parent_folder"] = d
    return out


def sec_event(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None
              ) -> dict[str, Any]:
    action = doc["event"].get("action", "")
    vig = doc.get("vigil") or {}
    extra: dict[str, Any] = {}
    if action == "module-load":
        name = (vig.get("kernel_module") or {}).get("name") or "unknown"
        cls, activity, aname = 1002, 1, "Load"
        extra["driver"] = {"file": {"name": name, "type_id": 0, "type": "Unknown"}}
    elif action in ("bpf-program-load", "bpf-attach", "bpf-vigil-object"):
        cls = 1003
        extra["kernel"], activity, aname = _bpf(action, vig.get("bpf") or {})
    elif action in ("ptrace-attach", "signal-agent", "process-vm-write"):
        target = _target(doc) or {"pid": 0}
        extra["process"] = target
        if action == "ptrace-attach":
            cls, activity, aname = 1007, 3, "Open"
        elif action == "process-vm-write":
            cls, activity, aname = 1004, 8, "Write"
            size = (vig.get("process_vm_write") or {}).get("bytes")
            if isinstance(size, int):
                extra["size"] = size
        else:
            sig = (vig.get("signal") or {}).get("name")
            cls = 1007
            activity, aname = (2, "Terminate") if sig in _ENDING_SIGNALS else (OTHER, "Signal")
    else:   # mount, umount, pivot-root
        mount = vig.get("mount") or {}
        path = mount.get("mount_point") or mount.get("new_root") or ""
        cls = 1001
        activity, aname = {"mount": (12, "Mount"), "umount": (13, "Unmount")}.get(
            action, (OTHER, "Pivot Root" if action == "pivot-root" else action or "Other"))
        extra["file"] = _folder(path) if path else {"name": "unknown", "type_id": 0,
                                                     "type": "Unknown"}
    out = envelope(cls, activity, aname, doc, time_ns)
    actor, _, um = who(doc)
    out["actor"] = actor
    out.update(extra)
    return finish(out, doc, host, um)


def _bpf(action: str, bpf: dict[str, Any]) -> tuple[dict[str, Any], int, str]:
    """(``kernel`` object, activity, name) of a bpf() call."""
    command = bpf.get("command", "bpf")
    kernel: dict[str, Any] = {"type_id": OTHER, "system_call": f"bpf({command})"}
    if action == "bpf-vigil-object":
        obj = bpf.get("vigil_object") or {}
        kernel["type"] = _OBJECT_TYPES.get(obj.get("kind", ""), "BPF Object")
        kernel["name"] = f"vigil {obj.get('kind', 'object')} {obj.get('id', '?')}"
        return kernel, 2, "Read"
    if action == "bpf-program-load":
        prog = bpf.get("program") or {}
        kernel["type"] = "BPF Program"
        kernel["name"] = prog.get("name") or "unnamed"
    else:
        kernel["type"] = "BPF Link"
        kernel["name"] = bpf.get("tracepoint") or command
    return kernel, 1, "Create"
