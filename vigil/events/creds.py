"""Privilege and tampering events in the pipeline: the processes they name completed, and
escalations no hook reported inferred from the credentials each thread was last seen with.

The tracepoint backend cannot hook commit_creds, so a kernel exploit that makes its process
root is not seen as it happens. But every later event of that thread carries its credentials:
one whose uid, euid, gid or egid is root where the last event Vigil saw of the same thread was
not, with no credential change reported in between, is an escalation (CredEvent ESCALATION,
``inferred``). Threads are followed apart (glibc's setuid changes each thread with its own
call); a thread's first event sets its baseline and is never an alert. On the other backends
the kernel reports escalations itself; the inference stays on as a net under lost records.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict

from vigil.enrich.process import ProcessTable
from vigil.events.model import Event, Process
from vigil.events.security import CredEvent, CredOp, Creds, SecEvent

Ids = tuple[int, int, int, int]  # uid, euid, gid, egid
_ThreadKey = tuple[int, int, int]  # pid, start time, tid


def _ids(p: Process) -> Ids:
    return (p.uid, p.euid, p.gid, p.egid)


def _creds(ids: Ids) -> Creds:
    """Credentials from what every record carries: saved and filesystem ids taken as the
    real and effective ones, capabilities unknown (0)."""
    uid, euid, gid, egid = ids
    return Creds(uid, gid, uid, gid, euid, egid, euid, egid, 0, 0, 0, 0)


def _rooted(old: Ids, new: Ids) -> bool:
    return any(n == 0 and o != 0 for o, n in zip(old, new, strict=True))


class PrivilegeTracker:
    """The last credentials seen per thread, bounded (least recently seen dropped first)."""

    def __init__(self, procs: ProcessTable, max_threads: int = 65536) -> None:
        self._procs = procs
        self._max = max_threads
        self._last: OrderedDict[_ThreadKey, Ids] = OrderedDict()
        self.inferred = 0

    def _see(self, key: _ThreadKey, ids: Ids) -> Ids | None:
        before = self._last.get(key)
        self._last[key] = ids
        self._last.move_to_end(key)
        if len(self._last) > self._max:
            self._last.popitem(last=False)
        return before

    def complete(self, ev: CredEvent | SecEvent) -> None:
        """A tampering event's target process named by its executable and its (effective)
        user: the owner of its /proc directory, while it runs."""
        t = ev.target if isinstance(ev, SecEvent) else None
        if t is None or t.pid == 0:
            return
        if t.executable is None:
            t.executable = self._procs.executable_of(t.pid, t.start_time)
        if t.uid is None:
            with contextlib.suppress(OSError):   # gone: no user to name
                t.uid = os.stat(f"/proc/{t.pid}").st_uid

    def inspect(self, events: list[Event]) -> list[Event]:
        """``events`` (one batch, in order) with an inferred escalation before each event that
        shows one. A credential change reported anywhere in the batch for a thread explains
        that thread's new credentials: the exec record and the change record of one setuid
        exec are sent by two programs on one tracepoint, in either order."""
        changed: dict[_ThreadKey, set[Ids]] = {}
        for e in events:
            if isinstance(e, CredEvent):
                who = e.process
                changed.setdefault((who.pid, who.start_time, who.tid), set()).add(_ids_new(e))
        out: list[Event] = []
        last: Process | None = None    # the process of the event before, if not a change
        for ev in events:
            p: Process | None = getattr(ev, "process", None)
            if p is None or p is last:  # the same record's who-data: the same credentials
                out.append(ev)
                continue
            key = (p.pid, p.start_time, p.tid)
            if isinstance(ev, CredEvent):
                self._see(key, _ids_new(ev))
                out.append(ev)
                last = None
                continue
            last = p
            now = _ids(p)
            before = self._see(key, now)
            if before is not None and before != now and _rooted(before, now) \
                    and now not in changed.get(key, ()):
                self.inferred += 1
                out.append(CredEvent(ev.timestamp_ns, CredOp.ESCALATION, p, _creds(before),
                                     _creds(now), inferred=True))
            out.append(ev)
        return out


def _ids_new(e: CredEvent) -> Ids:
    return (e.new.uid, e.new.euid, e.new.gid, e.new.egid)
