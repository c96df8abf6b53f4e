"""Events as Elastic Common Schema documents.

Owns the mapping of kernel events (file, exec, exit, lost) to ECS fields, the shared process/user
fields (also used by the FIM mapping in ``vigil.outputs.ecs_fim``) and the rendering of byte
paths. Fields ECS does not define live under ``vigil.*``. Does not own where documents go.

Names are bytes: a text field is always valid UTF-8 (undecodable bytes become U+FFFD) and, when
the bytes were not UTF-8, ``<field>_bytes_b64`` carries them exactly.
"""

from __future__ import annotations

import base64
import errno as errno_mod
import os
import socket
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from vigil.enrich.containers import ecs_fields as container_fields
from vigil.events.model import (
    SCHEMA_VERSION,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileOp,
    LostEvents,
    NetEvent,
    NetOp,
    Process,
    ShellEvent,
)
from vigil.events.security import CredEvent, SecEvent

ECS_VERSION: Final = "8.11.0"
_TRUNCATED: Final = 1 | 2  # vigil.events.layout.Flag.PATH_TRUNC | PATH2_TRUNC
_CWD_TRUNCATED: Final = 256  # vigil.events.layout.Flag.CWD_TRUNC
UNSET_ID: Final = 0xFFFFFFFF

_FILE_TYPES: Final = {
    FileOp.CREATE: ["creation"],
    FileOp.MKDIR: ["creation"],
    FileOp.MKNOD: ["creation"],
    FileOp.LINK: ["creation"],
    FileOp.SYMLINK: ["creation"],
    FileOp.DELETE: ["deletion"],
    FileOp.RMDIR: ["deletion"],
    FileOp.OPEN: ["access"],
}


_second: list[object] = [None, ""]


def iso(ns: int) -> str:
    """RFC 3339 UTC with microseconds; the date-and-seconds part is formatted once a second."""
    sec, frac = divmod(ns, 1_000_000_000)
    if _second[0] != sec:
        _second[0] = sec
        _second[1] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{frac // 1000:06d}Z"


def text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def path_fields(path: bytes, prefix: str = "path") -> dict[str, str]:
    """``{prefix: text}`` plus ``{prefix}_bytes_b64`` when the bytes are not valid UTF-8."""
    try:
        return {prefix: path.decode("utf-8")}
    except UnicodeDecodeError:
        return {prefix: path.decode("utf-8", "replace"),
                f"{prefix}_bytes_b64": base64.b64encode(path).decode("ascii")}


def host_fields() -> dict[str, Any]:
    name = socket.gethostname()
    return {"name": name, "hostname": name, "os": {"kernel": os.uname().release},
            "architecture": os.uname().machine}


def _command_line(args: list[bytes] | None) -> str | None:
    if not args:
        return None
    return " ".join(text(a) for a in args)


def _who_key(p: Process) -> tuple[object, ...]:
    return (p.pid, p.start_time, p.tid, p.ppid, p.parent_start_time, p.uid, p.euid, p.gid,
            p.egid, p.auid, p.session_id, p.comm, p.cgroup_id, p.mnt_ns, p.executable,
            tuple(p.args) if p.args is not None else None, p.parent_executable,
            tuple(p.parent_args) if p.parent_args is not None else None, p.user_name,
            p.euser_name, p.group_name, p.container)


Who = tuple[dict[str, Any], dict[str, Any]]
_WHO_CACHE: dict[tuple[object, ...], Who] = {}
_WHO_CACHE_MAX: Final = 4096
# The JSON of the parts documents share (the who-data's process/user/group/container objects,
# the host's), made once: id of the shared object -> (the object, kept alive so that its id is
# not reused, its orjson.Fragment). Bounded; a part not found is serialised as usual.
_FRAGMENTS: dict[int, tuple[object, orjson.Fragment]] = {}
_FRAGMENTS_MAX: Final = 16384


def _who(p: Process) -> Who:
    """(top-level process/user/group/container fields, vigil.process fields), built once per
    distinct who-data: a burst from one process renders its who-data once. Shared: never
    mutate what this returns. An enriched process (the pipeline's, which no stage changes
    after) keeps its own on the object; others are looked up by their fields."""
    if p.enriched:
        hit = p.rendered
        if hit is None:
            hit = p.rendered = _shared(_build_who(p))
        return hit  # type: ignore[return-value]
    key = _who_key(p)
    got = _WHO_CACHE.get(key)
    if got is None:
        if len(_WHO_CACHE) >= _WHO_CACHE_MAX:
            _WHO_CACHE.clear()
        got = _WHO_CACHE[key] = _shared(_build_who(p))
    return got


def _shared(who: Who) -> Who:
    """Registers the who-data's top-level parts as shared, with their JSON."""
    for part in who[0].values():
        share(part)
    return who


def share(part: object) -> None:
    """``part`` (a dict or list that no one changes from now on) is shared between documents:
    its JSON is made once, here, and ``dumps`` reuses it."""
    if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
        _FRAGMENTS.clear()
    _FRAGMENTS[id(part)] = (part, orjson.Fragment(orjson.dumps(part)))


def is_shared(part: object) -> bool:
    hit = _FRAGMENTS.get(id(part))
    return hit is not None and hit[0] is part


def dumps(doc: dict[str, Any]) -> bytes:
    """``orjson.dumps(doc)``, byte for byte, with the shared parts' JSON reused."""
    frags = _FRAGMENTS
    out: dict[str, Any] | None = None
    for k, v in doc.items():
        hit = frags.get(id(v))
        if hit is not None and hit[0] is v:
            if out is None:
                out = dict(doc)
            out[k] = hit[1]
    return orjson.dumps(out if out is not None else doc)


def process_to_ecs(p: Process | None) -> dict[str, Any]:
    """``process.*`` (effective user under process.user, real under process.real_user) and the
    acting ``user.*``/``group.*``; the login uid and the rest under ``vigil.process``. A fresh
    dict the caller may change."""
    if p is None:
        return {}
    top, vp = _build_who(p)
    return {**top, "vigil": {"process": vp}}


def _build_who(p: Process) -> tuple[dict[str, Any], dict[str, Any]]:
    proc: dict[str, Any] = {
        "pid": p.pid,
        "entity_id": p.entity_id,
        "name": text(p.comm),
        "thread": {"id": p.tid},
        "parent": {"pid": p.ppid, "entity_id": p.parent_entity_id},
        "user": {"id": str(p.euid)},
        "real_user": {"id": str(p.uid)},
        "group": {"id": str(p.egid)},
        "real_group": {"id": str(p.gid)},
    }
    if p.euser_name:
        proc["user"]["name"] = p.euser_name
    if p.user_name:
        proc["real_user"]["name"] = p.user_name
    if p.executable is not None:
        proc.update(path_fields(p.executable, "executable"))
    if p.args is not None:
        proc["args"] = [text(a) for a in p.args]
        proc["args_count"] = len(p.args)
        proc["command_line"] = _command_line(p.args)
    if p.parent_executable is not None:
        proc["parent"].update(path_fields(p.parent_executable, "executable"))
    if p.parent_args is not None:
        proc["parent"]["command_line"] = _command_line(p.parent_args)
    user: dict[str, Any] = {"id": str(p.uid)}
    if p.user_name:
        user["name"] = p.user_name
    group: dict[str, Any] = {"id": str(p.gid)}
    if p.group_name:
        group["name"] = p.group_name
    out: dict[str, Any] = {"process": proc, "user": user, "group": group}
    vp: dict[str, Any] = {
        "login_uid": None if p.auid == UNSET_ID else p.auid,
        "session_id": None if p.session_id == UNSET_ID else p.session_id,
        "cgroup_id": p.cgroup_id,
        "mnt_ns": p.mnt_ns,
        "start_ticks": p.start_time,
    }
    if p.container is not None:
        out.update(container_fields(p.container))
    return out, vp


_ECS: Final[dict[str, Any]] = {"version": ECS_VERSION}   # shared by every document


def _base(ts: int, host: dict[str, Any]) -> dict[str, Any]:
    return {"@timestamp": iso(ts), "ecs": _ECS, "host": host}


def _with_who(doc: dict[str, Any], p: Process, vigil: dict[str, Any]) -> dict[str, Any]:
    top, vp = _who(p)
    doc.update(top)
    doc["vigil"] = {"process": vp, "schema_version": SCHEMA_VERSION, **vigil}
    return doc


_FILE_EVENTS: dict[tuple[FileOp, bool], dict[str, Any]] = {}


def _file_event(op: FileOp, failed: bool) -> dict[str, Any]:
    """The ``event`` object of a file event: one per operation and outcome, shared."""
    got = _FILE_EVENTS.get((op, failed))
    if got is None:
        got = _FILE_EVENTS[op, failed] = {
            "kind": "event", "category": ["file"], "type": _FILE_TYPES.get(op, ["change"]),
            "action": op.action, "outcome": "failure" if failed else "success",
            "module": "vigil", "dataset": "vigil.file"}
    if not is_shared(got):   # first met, or forgotten when the registry was full
        share(got)
    return got


_OP_NAMES: Final = {op: op.name.lower() for op in FileOp}
_NEW_NAME_OPS: Final = frozenset({FileOp.RENAME, FileOp.LINK})
_XATTR_OPS: Final = frozenset({FileOp.SETXATTR, FileOp.REMOVEXATTR})


def file_to_ecs(ev: FileEvent, host: dict[str, Any]) -> dict[str, Any]:
    op, errno, target = ev.op, ev.errno, ev.target_path
    vfile: dict[str, Any] = {"operation": _OP_NAMES[op]}
    if target is not None and op in _NEW_NAME_OPS:
        # ECS puts the name the file has now in file.path; the old name goes to vigil.file
        f = path_fields(target)
        vfile.update(path_fields(ev.path, "original_path"))
    else:
        f = path_fields(ev.path)
        if target is not None:
            if op is FileOp.SYMLINK:
                f.update(path_fields(target, "target_path"))
            elif op in _XATTR_OPS:
                vfile["xattr"] = text(target)
    shown = f["path"]
    head, sep, f["name"] = shown.rpartition("/")
    f["directory"] = (head or "/") if sep else shown
    if ev.inode:
        f["inode"] = str(ev.inode)
    if ev.mode is not None:
        f["mode"] = f"{ev.mode & 0o7777:04o}"
    if ev.owner_uid is not None:
        f["uid"] = str(ev.owner_uid)
    if ev.owner_gid is not None:
        f["gid"] = str(ev.owner_gid)
    doc: dict[str, Any] = {"@timestamp": iso(ev.timestamp_ns), "ecs": _ECS, "host": host,
                           "event": _file_event(op, errno != 0), "file": f}
    if errno:
        doc["error"] = _error(errno)
    vfile["source"] = ev.source
    if ev.flags:
        vfile["flags"] = ev.flags
        if ev.flags & _TRUNCATED:
            # the kernel could not walk the path to its end: the path is the part it knows
            # (the last components of a deep path), not a real path; a rescan follows
            vfile["path_truncated"] = True
    top, vp = _who(ev.process)
    doc.update(top)
    vigil: dict[str, Any] = {"process": vp, "schema_version": SCHEMA_VERSION, "file": vfile}
    if ev.protected is not None:
        vigil["protected"] = ev.protected   # vigil.ownfiles
    if ev.sysctl is not None:
        vigil["sysctl"] = ev.sysctl   # vigil.sysctl
    doc["vigil"] = vigil
    return doc


def exec_to_ecs(ev: ExecEvent, host: dict[str, Any]) -> dict[str, Any]:
    doc = _base(ev.timestamp_ns, host)
    doc["event"] = {"kind": "event", "category": ["process"], "type": ["start"],
                    "action": "exec", "outcome": "success", "module": "vigil",
                    "dataset": "vigil.process"}
    _with_who(doc, ev.process, {})
    if ev.cwd is not None:
        # the exec's own: not in the who-data cache, which file events of the process share
        # (it may change directory after the exec)
        doc["process"] = {**doc["process"], **path_fields(ev.cwd, "working_directory")}
        if ev.flags & _CWD_TRUNCATED:
            # like vigil.file.path_truncated: the last components the kernel walked, not a
            # whole path
            doc["vigil"]["process"] = {**doc["vigil"]["process"],
                                       "working_directory_truncated": True}
    if ev.sha256 is not None:   # the exec's own too (the image may change at the next exec)
        doc["process"] = {**doc["process"], "hash": {"sha256": ev.sha256}}
    elif ev.hash_skipped is not None:
        doc["vigil"]["process"] = {**doc["vigil"]["process"], "hash_skipped": ev.hash_skipped}
    return doc


def exit_to_ecs(ev: ExitEvent, host: dict[str, Any]) -> dict[str, Any]:
    doc = _base(ev.timestamp_ns, host)
    doc["event"] = {"kind": "event", "category": ["process"], "type": ["end"],
                    "action": "exit", "module": "vigil", "dataset": "vigil.process"}
    _with_who(doc, ev.process, {"exit": {"signal": ev.signal}} if ev.signal else {})
    doc["process"] = {**doc["process"],
                      "exit_code": ev.status if not ev.signal else 128 + ev.signal}
    return doc


_TRANSPORT: Final = {6: "tcp", 17: "udp"}
_NET_TYPES: Final = {NetOp.CONNECT: ["connection", "start"], NetOp.ACCEPT: ["connection", "start"],
                     NetOp.LISTEN: ["start"], NetOp.BIND: ["info"],
                     NetOp.UDP_SEND: ["connection", "start"],
                     NetOp.UDP_RECV: ["connection", "start"],
                     NetOp.UNIX_CONNECT: ["connection", "start"]}


def _endpoint(ip: str | None, port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ip is not None:
        out["ip"] = out["address"] = ip
    if port:
        out["port"] = port
    return out


def _error(errno: int) -> dict[str, str]:
    """ECS's error.code (the errno's name) and message. Errnos are below 4096; a record
    damaged into another number still renders (as the number)."""
    if not 0 < errno < 4096:
        return {"code": str(errno), "message": f"error {errno}"}
    return {"code": errno_mod.errorcode.get(errno, str(errno)), "message": os.strerror(errno)}


def net_to_ecs(ev: NetEvent, host: dict[str, Any]) -> dict[str, Any]:
    """ECS's source is who initiated: this host's end of a connect or of a datagram sent,
    the peer of an accepted connection or of a datagram received; listen and bind have only
    this host's end, as source."""
    doc = _base(ev.timestamp_ns, host)
    doc["event"] = {"kind": "event", "category": ["network"], "type": _NET_TYPES[ev.op],
                    "action": ev.op.action, "outcome": "failure" if ev.failed else "success",
                    "module": "vigil", "dataset": "vigil.network"}
    egress = ev.op.egress
    vnet: dict[str, Any] = {"operation": ev.op.name.lower()}
    if ev.path is not None:       # a Unix socket
        doc["network"] = {"transport": "unix", "direction": "egress"}
        vnet.update(path_fields(ev.path))
        doc["destination"] = {"address": vnet["path"]}
    else:
        net: dict[str, Any] = {"transport": _TRANSPORT.get(ev.protocol, str(ev.protocol))}
        if ev.protocol in _TRANSPORT:
            net["iana_number"] = str(ev.protocol)
        version = ev.ip_version
        if version:
            net["type"] = version
        local = _endpoint(ev.local_ip, ev.local_port)
        remote = _endpoint(ev.remote_ip, ev.remote_port)
        if egress is None:
            doc["source"] = local
        else:
            net["direction"] = "egress" if egress else "ingress"
            doc["source"], doc["destination"] = (local, remote) if egress else (remote, local)
        doc["network"] = net
    if ev.failed:
        doc["error"] = _error(ev.errno)
    return _with_who(doc, ev.process, {"network": vnet})


def lost_to_ecs(ev: LostEvents, host: dict[str, Any]) -> dict[str, Any]:
    doc = _base(ev.timestamp_ns, host)
    doc["event"] = {"kind": "metric", "category": ["host"], "type": ["info"],
                    "action": "events-lost", "module": "vigil", "dataset": "vigil.agent"}
    doc["vigil"] = {"drops": {"kind": ev.kind, "count": ev.count, **ev.extra},
                    "schema_version": SCHEMA_VERSION}
    return doc


def to_ecs(ev: Event, host: dict[str, Any]) -> dict[str, Any]:
    if isinstance(ev, FileEvent):
        return file_to_ecs(ev, host)
    if isinstance(ev, ExecEvent):
        return exec_to_ecs(ev, host)
    if isinstance(ev, ExitEvent):
        return exit_to_ecs(ev, host)
    if isinstance(ev, NetEvent):
        return net_to_ecs(ev, host)
    if isinstance(ev, (CredEvent, SecEvent)):
        from vigil.outputs.ecs_sec import security_to_ecs  # it builds on this module

        return security_to_ecs(ev, host)
    if isinstance(ev, ShellEvent):
        from vigil.outputs.ecs_shell import shell_to_ecs  # it builds on this module

        return shell_to_ecs(ev, host)
    return lost_to_ecs(ev, host)
