"""The marks the agent puts on file events of the paths it always watches.

Owns one step between the pipeline and the outputs: an event on one of Vigil's own files
(vigil.ownfiles) gets ``protected = "self"``, a write to a security knob (vigil.sysctl) its
old and new values, a refused attempt on a knob the knob's name. The ``O_TRUNC`` of a knob's
write-open (``sysctl -w``, ``echo >``) is dropped: procfs ignores it, and the close says what
changed. Events with a path the kernel cut are never marked (their path is no real path).
Does not own which paths these are, nor the ECS fields (vigil.outputs.ecs).
"""

from __future__ import annotations

from vigil.events.model import Event, FileEvent, FileOp
from vigil.events.pipeline import TWO_PATHS
from vigil.events.truncated import TRUNCATED
from vigil.ownfiles import OwnFiles
from vigil.sysctl import SysctlWatch


def mark(events: list[Event], own: OwnFiles, sysctl: SysctlWatch | None) -> list[Event]:
    if not own and sysctl is None:
        return events
    out: list[Event] = []
    knobs = sysctl.knobs if sysctl is not None else {}
    for ev in events:
        if isinstance(ev, FileEvent) and not ev.flags & TRUNCATED:
            if sysctl is not None and ev.path in knobs:
                if ev.op == FileOp.TRUNCATE and not ev.failed:
                    continue
                ev.sysctl = sysctl.changed(ev.path) if ev.op == FileOp.MODIFY \
                    and not ev.failed else {"name": knobs[ev.path].name}
            if own and (own.covers(ev.path) or (
                    ev.op in TWO_PATHS and ev.target_path is not None
                    and own.covers(ev.target_path))):
                ev.protected = "self"
        out.append(ev)
    return out
