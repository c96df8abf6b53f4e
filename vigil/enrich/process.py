"""The process table: what each process is (executable, command line, parent), by identity.

Owns the table keyed by (pid, start time in clock ticks) — the pair that survives PID reuse —
filled from exec events and, at start, from /proc; and ``enrich``, which completes the who-data of
an event. Does not own user names (``vigil.enrich.users``) nor containers.

A process that forked without exec'ing runs its parent's program with its parent's arguments, so
an unknown (pid, start) inherits from its parent's entry; only when neither is known does it read
/proc (once, then cached). Exited processes stay in the table for a while: events of their
children and late events still name them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from vigil.events.model import Process

Key = tuple[int, int]


@dataclass(slots=True)
class ProcInfo:
    executable: bytes | None
    args: list[bytes] | None


class ProcessTable:
    def __init__(self, proc_root: Path = Path("/proc"), max_entries: int = 65536) -> None:
        self._proc = proc_root
        self._max = max_entries
        self._table: OrderedDict[Key, ProcInfo] = OrderedDict()
        self.proc_reads = 0
        # Lookups /proc could not answer (the process had exited, or its pid was reused): the
        # event keeps its kernel who-data but names no executable or command line.
        self.failed_reads = 0

    def __len__(self) -> int:
        return len(self._table)

    def _put(self, key: Key, info: ProcInfo) -> None:
        self._table[key] = info
        self._table.move_to_end(key)
        while len(self._table) > self._max:
            self._table.popitem(last=False)

    def get(self, pid: int, start: int) -> ProcInfo | None:
        return self._table.get((pid, start))

    def load_from_proc(self) -> int:
        """Fills the table with every running process. Returns how many were read."""
        n = 0
        for entry in os.scandir(self._proc):
            if entry.name.isdigit():
                info = self._read_proc(int(entry.name), None)
                if info is not None:
                    n += 1
        return n

    def on_exec(self, p: Process) -> None:
        self._put((p.pid, p.start_time), ProcInfo(p.executable, p.args))

    def enrich(self, p: Process) -> None:
        """Completes executable/args and the parent's, from the table (or /proc on a miss)."""
        info = self._lookup(p.pid, p.start_time, p.ppid, p.parent_start_time)
        if info is not None:
            if p.executable is None:
                p.executable = info.executable
            if p.args is None:
                p.args = info.args
        # pid 0 (the parent of init and kthreadd) has no /proc entry to read
        parent = self._lookup(p.ppid, p.parent_start_time, None, None) if p.ppid else None
        if parent is not None:
            p.parent_executable = parent.executable
            p.parent_args = parent.args

    def executable_of(self, pid: int, start: int | None) -> bytes | None:
        """The program of a process an event acts on (a ptrace target): the table's, or /proc's
        (any process with that pid when ``start`` is None); None when it is gone."""
        info = self._table.get((pid, start)) if start is not None else None
        if info is None:
            info = self._read_proc(pid, start)
        return info.executable if info is not None else None

    def _lookup(self, pid: int, start: int, ppid: int | None,
                pstart: int | None) -> ProcInfo | None:
        info = self._table.get((pid, start))
        if info is not None:
            return info
        # Not seen exec'ing since we started (its exec would be in the table under the same
        # key): a fork of its parent, running the parent's program. No syscall needed.
        if ppid is not None and pstart is not None:
            parent = self._table.get((ppid, pstart))
            if parent is not None:
                info = ProcInfo(parent.executable, parent.args)
                self._put((pid, start), info)
                return info
        info = self._read_proc(pid, start)
        if info is None:
            self.failed_reads += 1
        return info

    def _read_proc(self, pid: int, start: int | None) -> ProcInfo | None:
        """Reads /proc/PID if it is still the process started at ``start`` (any, when None)."""
        base = self._proc / str(pid)
        self.proc_reads += 1
        try:
            stat = (base / "stat").read_bytes()
            # comm may hold spaces and parentheses: fields start after the last ')'
            fields = stat[stat.rindex(b")") + 2:].split()
            real_start = int(fields[19])
            if start is not None and real_start != start:
                return None
            cmdline = (base / "cmdline").read_bytes()
            try:
                exe: bytes | None = os.readlink(os.fsencode(base / "exe"))
            except OSError:
                exe = None  # kernel threads have none
        except (OSError, ValueError, IndexError):
            return None
        args = cmdline.rstrip(b"\0").split(b"\0") if cmdline else []
        info = ProcInfo(exe, args)
        self._put((pid, real_start), info)
        return info
