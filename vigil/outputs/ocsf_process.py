"""Programs started and ended, privilege changes (OCSF Process Activity, 1007) and shell
commands (Script Activity, 1009).

Owns the choice of activity and of who is the actor: a launch (exec) is done by the parent
that started the program (``actor.process``; ``process`` is the new program, its file with
the executed image's sha256 in ``file.hashes``, launch_type Exec); an exit is reflexive
(actor and process are the exiting process). A credential change of the uid kind is "Set
User ID" (the process with its new ids as ``process``, as it was as ``actor``); setgid,
capset and the rest are "Other" with their name, the before and after under
``unmapped.vigil.privilege``. A command line an interactive shell read is Script Activity
"Execute" with a Unix Shell script: the line is the script's content, the terminal is the
actor's ``session.terminal``.
"""

from __future__ import annotations

from typing import Any, Final

from vigil.outputs.ocsf_actor import parent_actor, who
from vigil.outputs.ocsf_base import OTHER, envelope, finish, put

PROCESS_ACTIVITY: Final = 1007
SCRIPT_ACTIVITY: Final = 1009
_UID_OPS: Final = frozenset({"setuid", "setreuid", "setresuid", "setfsuid"})
_CRED_NAMES: Final = {"setgid": "Set Group ID", "setregid": "Set Group ID",
                      "setresgid": "Set Group ID", "setfsgid": "Set Group ID",
                      "capset": "Set Capabilities", "setid-exec": "Set-ID Exec",
                      "privilege-escalation": "Privilege Escalation"}


def exec_event(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None
               ) -> dict[str, Any]:
    out = envelope(PROCESS_ACTIVITY, 1, "Launch", doc, time_ns)
    _, proc, um = who(doc)
    if proc is None:
        proc = {"pid": 0}
    out["actor"] = parent_actor(proc)
    out["process"] = proc
    out["launch_type_id"], out["launch_type"] = 3, "Exec"
    return finish(out, doc, host, um)


def exit_event(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None
               ) -> dict[str, Any]:
    out = envelope(PROCESS_ACTIVITY, 2, "Terminate", doc, time_ns)
    actor, proc, um = who(doc)
    out["actor"] = actor
    if proc is not None:
        out["process"] = {**proc, "terminated_time": time_ns // 1_000_000}
    code = (doc.get("process") or {}).get("exit_code")
    if code is not None:
        out["exit_code"] = code
    return finish(out, doc, host, um)


def cred_event(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None
               ) -> dict[str, Any]:
    action = doc["event"].get("action", "")
    priv = doc["vigil"].get("privilege") or {}
    before, after = priv.get("before") or {}, priv.get("after") or {}
    uid_changed = any(before.get(k) != after.get(k) for k in ("uid", "euid", "suid", "fsuid")
                      if k in after)
    if action in _UID_OPS or (action in ("setid-exec", "privilege-escalation")
                              and uid_changed):
        activity, name = 5, "Set User ID"
    else:
        activity, name = OTHER, _CRED_NAMES.get(action, action or "Other")
    out = envelope(PROCESS_ACTIVITY, activity, name, doc, time_ns)
    actor, proc, um = who(doc)
    if proc is not None:
        # the who-data may have been read on either side of the change: the identities the
        # event carries decide (the actor as it was, the process as it is)
        was = _with_creds(proc, before)
        out["actor"] = {**actor, "process": was, "user": was["user"]} if "user" in was \
            else {**actor, "process": was}
        out["process"] = _with_creds(proc, after)
    else:
        out["actor"] = actor
    return finish(out, doc, host, um)


def _with_creds(proc: dict[str, Any], ids: dict[str, Any]) -> dict[str, Any]:
    """The process with the identity ``ids`` (vigil.privilege.before or after); a name stays
    only where the id is the one it names."""
    p = dict(proc)
    if "uid" in ids:
        uid = str(ids["uid"])
        old = proc.get("user") or {}
        p["user"] = old if old.get("uid") == uid else {"uid": uid}
    if "euid" in ids:
        p["euid"] = ids["euid"]
    if "egid" in ids:
        p["egid"] = ids["egid"]
    if "gid" in ids:
        gid = str(ids["gid"])
        old = proc.get("group") or {}
        p["group"] = old if old.get("uid") == gid else {"uid": gid}
    return p


def shell_event(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None
                ) -> dict[str, Any]:
    out = envelope(SCRIPT_ACTIVITY, 1, "Execute", doc, time_ns)
    actor, _, um = who(doc)
    um = dict(um)
    shell = doc["vigil"].get("shell") or {}
    content: dict[str, Any] = {"value": shell.get("command", "")}
    if shell.get("command_truncated"):
        content["is_truncated"] = True
    out["script"] = {"type_id": 6, "type": "Unix Shell", "script_content": content}
    if shell.get("tty"):
        session = dict(actor.get("session") or {})
        session["terminal"] = shell["tty"]
        actor = {**actor, "session": session}
    out["actor"] = actor
    p = doc.get("process") or {}
    if "tty" in p:
        put(um, ("process", "tty"), p["tty"])
    if "session_leader" in p:
        put(um, ("process", "session_leader"), p["session_leader"])
    return finish(out, doc, host, um)
