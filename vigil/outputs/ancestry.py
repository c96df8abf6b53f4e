"""A process's ancestors for the terminal (``comm[pid] < parent[ppid] < ... < systemd[1]``).

Owns ``Lineage``: who is whose parent, learned from the events an output sees (each names its
process and that process's parent by identity, pid and start time) and, for ancestors no event
named, read from /proc/PID/stat once and kept. An ancestor that /proc no longer has (it exited
before its child's event was written) ends the chain with the name its child's event gives it,
or ``?``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from vigil.events.model import Process

Key = tuple[int, int]


@dataclass(frozen=True, slots=True)
class _Node:
    ppid: int
    pstart: int | None   # None: the parent read from /proc is whichever has that pid
    name: bytes | None   # None: nothing knows this process (it is gone)


class Lineage:
    """Parents by identity, bounded (least recently used forgotten first)."""

    def __init__(self, proc_root: Path = Path("/proc"), max_entries: int = 16384,
                 depth: int = 8) -> None:
        self._proc = os.fsencode(proc_root)
        self._max = max_entries
        self.depth = depth
        self._nodes: OrderedDict[Key, _Node] = OrderedDict()
        self.proc_reads = 0

    def _put(self, key: Key, node: _Node) -> None:
        self._nodes[key] = node
        self._nodes.move_to_end(key)
        if len(self._nodes) > self._max:
            self._nodes.popitem(last=False)

    def learn(self, p: Process) -> None:
        """Remembers ``p``'s parent and name (its latest: an exec renames it)."""
        self._put((p.pid, p.start_time), _Node(p.ppid, p.parent_start_time, p.comm))

    def ancestors(self, p: Process) -> list[tuple[int, bytes | None]]:
        """(pid, name) of ``p``'s parent, its parent, ... up to init or ``depth`` of them; a
        last (0, None) when there were more. An unknown name is None."""
        out: list[tuple[int, bytes | None]] = []
        pid: int = p.ppid
        start: int | None = p.parent_start_time
        fallback = os.path.basename(p.parent_executable) if p.parent_executable else None
        child: tuple[Key, _Node] | None = None
        while pid > 0:
            if len(out) == self.depth:
                out.append((0, None))
                break
            key, node = self._node(pid, start)
            if node.name is None:
                out.append((pid, fallback[:15] if fallback else None))
                break
            if child is not None and child[1].pstart is None:
                # read from /proc without its parent's start: now known, kept
                self._put(child[0], _Node(child[1].ppid, key[1], child[1].name))
            out.append((pid, node.name))
            child, fallback = (key, node), None
            pid, start = node.ppid, node.pstart
        return out

    def _node(self, pid: int, start: int | None) -> tuple[Key, _Node]:
        if start is not None:
            node = self._nodes.get((pid, start))
            if node is not None:
                self._nodes.move_to_end((pid, start))
                return (pid, start), node
        real_start, node = self._read(pid, start)
        if real_start is None:
            real_start = start
        if real_start is None:   # gone, and no start time to remember it by
            return (pid, -1), node
        self._put((pid, real_start), node)
        return (pid, real_start), node

    def _read(self, pid: int, start: int | None) -> tuple[int | None, _Node]:
        """/proc/PID/stat's name, parent and start time, if it is still the process started at
        ``start`` (any with that pid when None)."""
        self.proc_reads += 1
        gone = _Node(0, None, None)
        try:
            with open(os.path.join(self._proc, str(pid).encode(), b"stat"), "rb") as f:
                stat = f.read()
            # comm may hold spaces and parentheses: it ends at the last ')'
            name = stat[stat.index(b"(") + 1:stat.rindex(b")")]
            fields = stat[stat.rindex(b")") + 2:].split()
            ppid, real_start = int(fields[1]), int(fields[19])
        except (OSError, ValueError, IndexError):
            return None, gone
        if start is not None and real_start != start:
            return None, gone   # the pid was reused: that process is gone
        # the parent's start time is not in the file: the next step takes that pid's process
        known = self._nodes.get((pid, real_start))
        return real_start, known if known is not None else _Node(ppid, None, name)
