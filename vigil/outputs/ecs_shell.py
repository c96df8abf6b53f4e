"""Shell commands as ECS JSON documents.

Owns the ECS mapping of vigil.events.model.ShellEvent: ``event.action: shell-command``
(category process, dataset ``vigil.shell``), the typed line in ``vigil.shell.command`` (with
``command_bytes_b64`` when it is not valid UTF-8, ``command_truncated`` when the kernel side
cut it), the shell's terminal as ECS's ``process.tty.char_device.major/minor`` (its name, as
ps says it, in ``vigil.shell.tty``: ``pts/3``) and ``process.session_leader.pid``.
``process.*`` is the shell's who-data, as for every event: ``process.command_line`` is the
shell's own (``bash``, ``-bash``), never the typed line, which ECS has no field for. Does not
own the who-data (vigil.outputs.ecs) nor the pretty line.
"""

from __future__ import annotations

from typing import Any

from vigil.events.model import ShellEvent
from vigil.outputs.ecs import _base, _with_who, path_fields


def shell_to_ecs(ev: ShellEvent, host: dict[str, Any]) -> dict[str, Any]:
    doc = _base(ev.timestamp_ns, host)
    doc["event"] = {"kind": "event", "category": ["process"], "type": ["info"],
                    "action": "shell-command", "outcome": "success", "module": "vigil",
                    "dataset": "vigil.shell"}
    shell: dict[str, Any] = path_fields(ev.command, "command")
    if ev.truncated:
        shell["command_truncated"] = True
    if ev.tty_name:
        shell["tty"] = ev.tty
    _with_who(doc, ev.process, {"shell": shell})
    proc: dict[str, Any] = dict(doc["process"])   # the who-data is shared: copied, not changed
    if ev.tty_major or ev.tty_minor or ev.tty_name:
        proc["tty"] = {"char_device": {"major": ev.tty_major, "minor": ev.tty_minor}}
    if ev.session_leader:
        proc["session_leader"] = {"pid": ev.session_leader}
    doc["process"] = proc
    return doc
