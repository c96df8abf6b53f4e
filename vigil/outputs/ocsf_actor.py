"""Who did it, in OCSF: the ECS who-data (``process``, ``user``, ``group``, ``container``,
``vigil.process``) as OCSF's ``actor`` (process, user, session) and ``process`` objects.

Owns the mapping of a process: pid, tid, ``uid`` (Vigil's entity id "PID-START", stable
across pid reuse), name, cmd_line, path and file, parent_process, the real user as
``process.user`` and the effective ids as ``euid``/``egid`` (the Linux users profile), the
login uid as ``auid``, the session id as ``session.uid``, the container. What OCSF has no
attribute for (the arguments as a list, the effective user's name, a name's exact bytes)
goes to ``unmapped.process``.

The ECS renderer shares one process/user/group object between the events of one who-data
(vigil.outputs.ecs); so does this module: an actor is built once per set of those objects
and shared (never changed in place).
"""

from __future__ import annotations

import re
from typing import Any, Final

from vigil.outputs.ocsf_base import put

Who = tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]   # actor, process, unmapped
# OCSF requires an actor where Vigil may not know one (a change a FIM scan found): said so
UNKNOWN_ACTOR: Final[dict[str, Any]] = {"invoked_by": "unknown"}


def _base_name(path: str) -> str:
    return path.rsplit("/", 1)[-1] or path


def exe_file(path: str, sha256: str | None = None) -> dict[str, Any]:
    """The executable's ``file``: a regular file (exec opens nothing else)."""
    f: dict[str, Any] = {"name": _base_name(path), "path": path, "type_id": 1,
                         "type": "Regular File"}
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        f["parent_folder"] = parent
    if sha256:
        f["hashes"] = [{"algorithm_id": 3, "algorithm": "SHA-256", "value": sha256}]
    return f


def process_of(doc: dict[str, Any], um: dict[str, Any]) -> dict[str, Any] | None:
    """OCSF ``process`` from the ECS document's who-data; leftovers into ``um``."""
    p = doc.get("process")
    if not p:
        return None
    out: dict[str, Any] = {}
    if "pid" in p:
        out["pid"] = p["pid"]
    if "entity_id" in p:
        out["uid"] = p["entity_id"]
    if "name" in p:
        out["name"] = p["name"]
    if "thread" in p:
        out["tid"] = p["thread"]["id"]
    if p.get("command_line") is not None:   # null: no arguments (an exiting process's)
        out["cmd_line"] = p["command_line"]
    if "args" in p:
        put(um, ("process", "args"), p["args"])
    if "executable" in p:
        out["path"] = p["executable"]
        out["file"] = exe_file(p["executable"], (p.get("hash") or {}).get("sha256"))
        if "executable_bytes_b64" in p:
            put(um, ("process", "executable_bytes_b64"), p["executable_bytes_b64"])
    if "working_directory" in p:
        out["working_directory"] = p["working_directory"]
        if "working_directory_bytes_b64" in p:
            put(um, ("process", "working_directory_bytes_b64"),
                p["working_directory_bytes_b64"])
    parent = p.get("parent")
    if parent:
        pp = _parent(parent, um)
        if pp:
            out["parent_process"] = pp
    real = p.get("real_user") or doc.get("user")
    if real:
        out["user"] = _user(real)
    eff = p.get("user")
    if eff and "id" in eff:
        out["euid"] = int(eff["id"])
        if eff.get("name"):
            put(um, ("process", "user", "name"), eff["name"])
    egroup = p.get("group")
    if egroup and "id" in egroup:
        out["egid"] = int(egroup["id"])
    group = doc.get("group") or p.get("real_group")
    if group and "id" in group:
        g: dict[str, Any] = {"uid": group["id"]}
        if group.get("name"):
            g["name"] = group["name"]
        out["group"] = g
    vp = (doc.get("vigil") or {}).get("process") or {}
    if vp.get("login_uid") is not None:
        out["auid"] = vp["login_uid"]
    if vp.get("session_id") is not None:
        out["session"] = {"uid": str(vp["session_id"])}
    cont = doc.get("container")
    if cont and cont.get("id"):
        out["container"] = _container(cont, doc.get("orchestrator"), um)
    if not out.keys() & {"pid", "uid"}:
        return None
    return out


_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
                         r"-[0-9a-fA-F]{12}$")


def _container(cont: dict[str, Any], orch: dict[str, Any] | None, um: dict[str, Any]
               ) -> dict[str, Any]:
    """OCSF ``container`` from ECS ``container`` and ``orchestrator`` (a Kubernetes pod): id,
    name, runtime, the orchestrator's type and the pod's uid. The image (OCSF wants its id,
    which Vigil does not have), the pod's name and namespace go to ``unmapped``."""
    out: dict[str, Any] = {"uid": cont["id"]}
    rest: dict[str, Any] = {}
    for k, v in cont.items():
        if k in ("name", "runtime"):
            out[k] = v
        elif k != "id":
            rest[k] = v
    if rest:
        um["container"] = rest
    if orch:
        if orch.get("type"):
            out["orchestrator"] = orch["type"]
        pod = (orch.get("resource") or {}).get("id")
        if isinstance(pod, str) and _UUID.match(pod):
            out["pod_uuid"] = pod
        um["orchestrator"] = orch
    return out


def _parent(parent: dict[str, Any], um: dict[str, Any]) -> dict[str, Any]:
    pp: dict[str, Any] = {}
    if "pid" in parent:
        pp["pid"] = parent["pid"]
    if "entity_id" in parent:
        pp["uid"] = parent["entity_id"]
    if "executable" in parent:
        pp["path"] = parent["executable"]
        pp["name"] = _base_name(parent["executable"])
        pp["file"] = exe_file(parent["executable"])
        if "executable_bytes_b64" in parent:
            put(um, ("process", "parent", "executable_bytes_b64"),
                parent["executable_bytes_b64"])
    if parent.get("command_line") is not None:
        pp["cmd_line"] = parent["command_line"]
    return pp if pp.keys() & {"pid", "uid"} else {}


def _user(u: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": u["id"]} if "id" in u else {}
    if u.get("name"):
        out["name"] = u["name"]
    return out


_CACHE: dict[tuple[int, ...], tuple[tuple[object, ...], Who]] = {}
_CACHE_MAX = 4096


def who(doc: dict[str, Any]) -> Who:
    """(``actor``, the acting ``process``, unmapped who-data) of an ECS document: the actor
    is the process that did it, its real user and its session. Built once per set of
    who-data objects (identity: the ECS renderer's cache hands the same objects to one
    process's events; they are kept here so their ids stay theirs)."""
    p, u, g, c = doc.get("process"), doc.get("user"), doc.get("group"), doc.get("container")
    o, vp = doc.get("orchestrator"), (doc.get("vigil") or {}).get("process")
    key = (id(p), id(u), id(g), id(c), id(o), id(vp))
    hit = _CACHE.get(key)
    if hit is not None:
        h = hit[0]
        if h[0] is p and h[1] is u and h[2] is g and h[3] is c and h[4] is o and h[5] is vp:
            return hit[1]
    parts = (p, u, g, c, o, vp)
    value = _build(doc)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = (parts, value)
    return value


def _build(doc: dict[str, Any]) -> Who:
    um: dict[str, Any] = {}
    proc = process_of(doc, um)
    actor: dict[str, Any] = {}
    if proc is not None:
        actor["process"] = proc
        if "user" in proc:
            actor["user"] = proc["user"]
        if "session" in proc:
            actor["session"] = proc["session"]
    elif doc.get("user") and "id" in doc["user"]:
        actor["user"] = _user(doc["user"])
    return actor or UNKNOWN_ACTOR, proc, um


def parent_actor(proc: dict[str, Any]) -> dict[str, Any]:
    """The actor of a launch: the parent that started the program, the child's user and
    session (exec keeps the real user and the session)."""
    actor: dict[str, Any] = {}
    if proc.get("parent_process"):
        actor["process"] = proc["parent_process"]
    for key in ("user", "session"):
        if key in proc:
            actor[key] = proc[key]
    if not actor:
        actor["process"] = proc
    return actor

