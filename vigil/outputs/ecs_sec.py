"""Privilege changes and tampering as ECS JSON documents.

Owns the ECS mapping of vigil.events.security: credential changes (dataset
``vigil.privilege``: ``event.action`` setuid ... capset, ``setid-exec``,
``privilege-escalation``; the identities before and after in ``vigil.privilege.before/after``,
capabilities as names; the new user in ECS's ``user.changes``) and tampering (dataset
``vigil.tampering``: module loads, bpf(), ptrace, process_vm_writev, mounts, pivot_root,
signals to the agent; the process acted on in ``vigil.target.process``). ``process.*`` is the
acting process's who-data, as for every event: for a credential change, as it was before.
"""

from __future__ import annotations

import signal
from typing import Any, Final

from vigil.events.security import CredEvent, Creds, SecEvent, SecOp
from vigil.outputs.ecs import _base, _error, _with_who, path_fields, text

# capability(7) numbers -> names, as in linux/capability.h
CAPABILITIES: Final = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)


def cap_names(mask: int) -> list[str]:
    """The names of the capabilities in ``mask`` (unknown bits as CAP_<n>)."""
    return [CAPABILITIES[b] if b < len(CAPABILITIES) else f"CAP_{b}"
            for b in range(64) if mask >> b & 1]


def _identity(c: Creds, full: bool) -> dict[str, Any]:
    ids = {"uid": c.uid, "euid": c.euid, "gid": c.gid, "egid": c.egid}
    if not full:   # inferred: only what every record carries is known
        return ids
    return {**ids, "suid": c.suid, "sgid": c.sgid, "fsuid": c.fsuid, "fsgid": c.fsgid,
            "capabilities": {"effective": cap_names(c.cap_effective),
                             "permitted": cap_names(c.cap_permitted),
                             "inheritable": cap_names(c.cap_inheritable)},
            "user_ns": c.user_ns}


def cred_to_ecs(ev: CredEvent, host: dict[str, Any]) -> dict[str, Any]:
    doc = _base(ev.timestamp_ns, host)
    doc["event"] = {"kind": "event", "category": ["process"], "type": ["change"],
                    "action": ev.op.action, "outcome": "success", "module": "vigil",
                    "dataset": "vigil.privilege"}
    full = not ev.inferred
    gained = ev.new.gains_over(ev.old) if full else True
    priv: dict[str, Any] = {"operation": ev.op.name.lower(),
                            "before": _identity(ev.old, full), "after": _identity(ev.new, full),
                            "gained": gained, "inferred": ev.inferred}
    if full:
        new_caps = ev.new.cap_effective & ~ev.old.cap_effective
        if new_caps:
            priv["capabilities_gained"] = cap_names(new_caps)
    if ev.path is not None:
        priv.update(path_fields(ev.path, "program"))
    _with_who(doc, ev.process, {"privilege": priv})
    user = dict(doc.get("user", {}))   # the who-data is shared: copied, not changed
    user["changes"] = {"id": str(ev.new.uid)}
    doc["user"] = user
    return doc


_SEC_CATEGORY: Final = {
    SecOp.MODULE_LOAD: (["driver"], ["start"]),
    SecOp.BPF_PROG_LOAD: (["configuration"], ["change"]),
    SecOp.BPF_ATTACH: (["configuration"], ["change"]),
    SecOp.PTRACE: (["process"], ["access"]),
    SecOp.VM_WRITE: (["process"], ["access"]),
    SecOp.MOUNT: (["configuration"], ["change"]),
    SecOp.UMOUNT: (["configuration"], ["change"]),
    SecOp.PIVOT_ROOT: (["configuration"], ["change"]),
    SecOp.SIGNAL: (["process"], ["access"]),
    SecOp.BPF_OWN: (["configuration"], ["access"]),
}
_BPF_COMMANDS: Final = {5: "BPF_PROG_LOAD", 8: "BPF_PROG_ATTACH", 13: "BPF_PROG_GET_FD_BY_ID",
                        14: "BPF_MAP_GET_FD_BY_ID", 17: "BPF_RAW_TRACEPOINT_OPEN",
                        28: "BPF_LINK_CREATE", 30: "BPF_LINK_GET_FD_BY_ID"}
_OWN_KINDS: Final = {13: "program", 14: "map", 30: "link"}
_PTRACE: Final = {16: "PTRACE_ATTACH", 0x4206: "PTRACE_SEIZE"}


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"SIG{n}"


def _details(ev: SecEvent) -> dict[str, Any]:
    """vigil.<what> of one tampering event."""
    name = text(ev.name) if ev.name else None
    if ev.op is SecOp.MODULE_LOAD:
        return {"kernel_module": {"name": name, "taints": ev.arg1} if name else {}}
    if ev.op is SecOp.BPF_OWN:
        return {"bpf": {"command": _BPF_COMMANDS.get(ev.arg1, str(ev.arg1)),
                        "vigil_object": {"kind": _OWN_KINDS.get(ev.arg1, "?"), "id": ev.arg2}}}
    if ev.op in (SecOp.BPF_PROG_LOAD, SecOp.BPF_ATTACH):
        bpf: dict[str, Any] = {"command": _BPF_COMMANDS.get(ev.arg1, str(ev.arg1))}
        if ev.op is SecOp.BPF_PROG_LOAD:
            bpf["program"] = {"type": ev.arg2, "expected_attach_type": ev.arg3}
            if name:
                bpf["program"]["name"] = name
        else:
            bpf["attach_type"] = ev.arg3
            if name:
                bpf["tracepoint"] = name
        return {"bpf": bpf}
    if ev.op is SecOp.PTRACE:
        return {"ptrace": {"request": _PTRACE.get(ev.arg1, str(ev.arg1))}}
    if ev.op is SecOp.VM_WRITE:
        return {"process_vm_write": {"bytes": ev.arg2}}
    if ev.op is SecOp.SIGNAL:
        return {"signal": {"number": ev.arg1, "name": _signal_name(ev.arg1),
                           "result": ev.arg2}}
    mount: dict[str, Any] = {}
    if ev.path is not None:
        mount.update(path_fields(ev.path, "new_root" if ev.op is SecOp.PIVOT_ROOT
                                 else "mount_point"))
    if ev.path2 is not None:
        mount.update(path_fields(ev.path2, "put_old" if ev.op is SecOp.PIVOT_ROOT
                                 else "source"))
    if name:
        mount["fstype"] = name
    if ev.op is not SecOp.PIVOT_ROOT:
        mount["flags"] = ev.arg2
    return {"mount": mount}


def sec_to_ecs(ev: SecEvent, host: dict[str, Any]) -> dict[str, Any]:
    doc = _base(ev.timestamp_ns, host)
    category, types = _SEC_CATEGORY[ev.op]
    doc["event"] = {"kind": "event", "category": category, "type": types,
                    "action": ev.op.action, "outcome": "failure" if ev.failed else "success",
                    "module": "vigil", "dataset": "vigil.tampering"}
    vigil = _details(ev)
    if ev.target is not None:
        t = ev.target
        proc: dict[str, Any] = {"pid": t.pid}
        if t.comm:
            proc["name"] = text(t.comm)
        if t.executable is not None:
            proc.update(path_fields(t.executable, "executable"))
        if t.uid is not None:
            proc["user"] = {"id": str(t.uid)}
        vigil["target"] = {"process": proc}
    if ev.failed:
        doc["error"] = _error(ev.errno)
    return _with_who(doc, ev.process, vigil)


def security_to_ecs(ev: CredEvent | SecEvent, host: dict[str, Any]) -> dict[str, Any]:
    return cred_to_ecs(ev, host) if isinstance(ev, CredEvent) else sec_to_ecs(ev, host)

