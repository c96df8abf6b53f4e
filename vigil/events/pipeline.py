"""From decoded kernel records to the events a user sees: pairing, canonical paths, filtering,
who-data.

Owns: turning open-for-write notices and closes into "created"/"modified" events (and finishing
files a process still held when it exited), making paths that came from syscall arguments
canonical (".", "..", "//", symlinked directories), the exact user-space check of the watch
policy (the kernel's LPM match is a coarse, never-missing pre-filter), and enrichment from the
process table and name caches. Works on whole batches. Does not own reading the ring or outputs.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

from vigil.enrich.containers import ContainerResolver
from vigil.enrich.exehash import ExeHasher
from vigil.enrich.process import ProcessTable
from vigil.enrich.users import NameCache
from vigil.events.creds import PrivilegeTracker
from vigil.events.layout import Flag, RawFile
from vigil.events.model import (
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileOp,
    NetEvent,
    Process,
    ShellEvent,
)
from vigil.events.security import CredEvent, SecEvent
from vigil.events.truncated import TRUNCATED, TruncatedPaths

MAX_OPEN_FILES: Final = 65536
# Plain ints: IntFlag arithmetic costs a Python call per test on the hot path.
F_FROM_ARG: Final = int(Flag.FROM_ARG)
F_UNNORMALIZED: Final = int(Flag.UNNORMALIZED)
F_PATH_TRUNC: Final = int(Flag.PATH_TRUNC)
F_PATH2_TRUNC: Final = int(Flag.PATH2_TRUNC)
TWO_PATHS: Final = frozenset({FileOp.RENAME, FileOp.LINK})
# Ops whose target names a directory entry that may be gone (or replaced) after the call: the
# final component is never resolved, only its directory.
_DIR_CACHE_SIZE: Final = 4096
_MAGIC: Final = (b"/proc/self/", b"/proc/thread-self/", b"/dev/fd/")
_DIR_CHANGING: Final = frozenset({FileOp.RENAME, FileOp.RMDIR, FileOp.SYMLINK, FileOp.DELETE})
# How long a resolved directory is trusted when no event said it changed (a symlink's target
# changed by a program outside the watched trees)
_DIR_CACHE_NS: Final = 100_000_000


class _OpenFile:
    __slots__ = ("flags", "path", "process", "tgid")

    def __init__(self, path: bytes, process: Process, flags: int = 0) -> None:
        self.path = path
        self.process = process
        self.tgid = process.pid
        self.flags = flags  # TRUNCATED bits of the open: its "modified" carries them too


def normalize(path: bytes) -> bytes:
    """Lexically canonical absolute path: no "//", "." or ".." components, no trailing "/".

    ".." is applied to the text; ``canonical_dir`` then resolves symlinked directories, which
    is what the kernel did, since it walks ".." after following links.
    """
    out: list[bytes] = []
    for part in path.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if out:
                out.pop()
            continue
        out.append(part)
    return b"/" + b"/".join(out)


def _own_proc(path: bytes, proc: Process) -> bytes:
    """/proc/self, /proc/thread-self and /dev/fd as the acting process saw them (resolved here
    they would name the agent's own cwd, root and fds)."""
    if path.startswith(b"/proc/self/"):
        return b"/proc/%d/" % proc.pid + path[len(b"/proc/self/"):]
    if path.startswith(b"/proc/thread-self/"):
        return b"/proc/%d/task/%d/" % (proc.pid, proc.tid) + path[len(b"/proc/thread-self/"):]
    return b"/proc/%d/fd/" % proc.pid + path[len(b"/dev/fd/"):]


class Pipeline:
    def __init__(
        self,
        is_watched: Callable[[bytes], bool],
        procs: ProcessTable,
        names: NameCache,
        forget_open_file: Callable[[int], None],
        *,
        report_processes: bool = True,
        watch_alias: Callable[[bytes, bytes], None] | None = None,
        closes_at_exit: bool = True,
        truncated: TruncatedPaths | None = None,
        unix_watched: Callable[[bytes], bool] | None = None,
        exe_hasher: ExeHasher | None = None,
        containers: ContainerResolver | None = None,
    ) -> None:
        # True when the kernel side sees closes only as syscalls (the tracepoint backend): an
        # exit then ends the writes of every file the process still held. The VFS backends see
        # the last reference go (__fput), after the exit record, and send the "modified" then.
        self._closes_at_exit = closes_at_exit
        self._report_processes = report_processes
        self._watch_alias = watch_alias
        self._is_watched = is_watched
        # Unix socket paths whose connects are reported: the kernel matched the exact ones,
        # the ones with . or .. components are decided here
        self._unix_watched = unix_watched or (lambda _path: False)
        self._procs = procs
        self.privileges = PrivilegeTracker(procs)
        self._names = names
        # here, not in a later stage: the sooner, the likelier a process with no file name
        # left (a memfd) still runs, and its image can be read
        self._hasher = exe_hasher
        self._containers = containers
        self._forget = forget_open_file
        self._open: OrderedDict[int, _OpenFile] = OrderedDict()
        self._by_tgid: dict[int, set[int]] = {}
        self._dirs: OrderedDict[bytes, bytes] = OrderedDict()
        self._dirs_since = 0
        self.filtered = 0
        # Paths the kernel cut: judged by device (vigil.events.truncated); without a judge every
        # one may be in a watched tree.
        self.truncated = truncated or TruncatedPaths(None)
        self._batch_truncated = False
        self.open_files_evicted = 0  # write-opens forgotten beyond MAX_OPEN_FILES

    # ---- paths ---------------------------------------------------------------------------

    def canonical_dir(self, directory: bytes) -> bytes:
        """realpath of a directory, cached (a handful of lstat calls on a miss)."""
        hit = self._dirs.get(directory)
        if hit is not None:
            return hit
        real = os.path.realpath(directory)
        self._dirs[directory] = real
        if len(self._dirs) > _DIR_CACHE_SIZE:
            self._dirs.popitem(last=False)
        return real

    def canonical(self, path: bytes, flags: int, proc: Process | None = None) -> bytes:
        if flags & F_UNNORMALIZED:
            path = normalize(path)
        if not flags & F_FROM_ARG or path == b"/":
            return path  # resolved from a kernel object: already what the kernel used
        if proc is not None and path.startswith(_MAGIC):
            path = _own_proc(path, proc)
        directory, _, name = path.rpartition(b"/")
        real = self.canonical_dir(directory or b"/")
        return (real.rstrip(b"/") + b"/" + name) if name else real

    def _invalidate_dirs(self, ev: FileEvent) -> None:
        """Forgets cached directories at or below a renamed or removed name (as written, or as
        resolved): a directory renamed or removed, a symlink deleted or made. What no event
        shows (a change outside the watched trees) the cache's lifetime bounds: 0.1 s."""
        if ev.op not in _DIR_CHANGING or not self._dirs:
            return
        gone = normalize(ev.path) if ev.flags & F_UNNORMALIZED else ev.path
        below = gone + b"/"
        stale = [k for k, v in self._dirs.items()
                 if k == gone or v == gone or k.startswith(below) or v.startswith(below)]
        for k in stale:
            del self._dirs[k]

    # ---- the batch -----------------------------------------------------------------------

    def process(self, records: Iterable[object]) -> list[Event]:
        out: list[Event] = []
        now = time.monotonic_ns()
        if now - self._dirs_since > _DIR_CACHE_NS:
            self._dirs.clear()
            self._dirs_since = now
        self._batch_truncated = False
        for rec in records:
            if isinstance(rec, FileEvent):
                self._file(rec, out)
            elif isinstance(rec, RawFile):
                self._opened(rec, out)
            elif isinstance(rec, ExecEvent):
                self._procs.on_exec(rec.process)
                self._enrich(rec.process)
                if self._report_processes:
                    if self._hasher is not None:
                        self._hasher.apply(rec)
                    out.append(rec)
            elif isinstance(rec, ExitEvent):
                self._exited(rec, out)
            elif isinstance(rec, NetEvent):
                self._net(rec, out)
            elif isinstance(rec, ShellEvent):   # a typed command: the shell's who-data
                self._enrich(rec.process)
                out.append(rec)
            elif isinstance(rec, (CredEvent, SecEvent)):
                self._enrich(rec.process)
                self.privileges.complete(rec)
                out.append(rec)
        return self.privileges.inspect(out)

    def counts(self) -> dict[str, int]:
        """What the pipeline could not do fully: events whose path the kernel cut (reported,
        marked), write-opens it stopped following, failed /proc reads of the process table,
        exec events without a hash."""
        return {"path_truncated": self.truncated.reported,
                "open_files_evicted": self.open_files_evicted,
                "proc_read_failed": self._procs.failed_reads,
                **(self._hasher.counts() if self._hasher is not None else {})}

    def baseline_events(self, events: list[Event]) -> list[Event]:
        """``events`` less those with a path the kernel cut, which is no real path: the
        baseline learns those files from the rescan the agent starts for them."""
        if not self._batch_truncated:
            return events
        return [e for e in events if not (isinstance(e, FileEvent) and e.flags & TRUNCATED)]

    def _keep_truncated(self, ev: FileEvent) -> bool:
        """An event with a path the kernel cut: kept (its bits tell which path) unless it is
        provably outside every watched tree. A whole second path is canonicalised and judged as
        usual; a cut one is left as the kernel sent it."""
        two = ev.op in TWO_PATHS and ev.target_path is not None
        canon = ev.flags & (F_FROM_ARG | F_UNNORMALIZED)
        whole = False
        if not ev.flags & F_PATH_TRUNC:
            if canon:
                ev.path = self.canonical(ev.path, ev.flags, ev.process)
            whole = self._is_watched(ev.path)
        if two and ev.target_path is not None and not ev.flags & F_PATH2_TRUNC:
            if canon:
                ev.target_path = self.canonical(ev.target_path, ev.flags, ev.process)
            whole = whole or self._is_watched(ev.target_path)
        kept = self.truncated.count(whole or self.truncated.may_be_watched(ev.device))
        self._batch_truncated |= kept
        return kept

    def _file(self, ev: FileEvent, out: list[Event]) -> None:
        if ev.op == FileOp.MODIFY:
            self._closed(ev)
        if ev.flags & TRUNCATED:
            if not self._keep_truncated(ev):
                self.filtered += 1
                return
            self._enrich(ev.process)
            out.append(ev)
            return
        if ev.flags & (F_FROM_ARG | F_UNNORMALIZED):
            self._invalidate_dirs(ev)
            ev.path = self.canonical(ev.path, ev.flags, ev.process)
            if ev.target_path is not None and ev.op in TWO_PATHS:
                ev.target_path = self.canonical(ev.target_path, ev.flags, ev.process)
        if ev.op == FileOp.SYMLINK and not ev.failed and ev.target_path is not None:
            self._follow_new_link(ev.path, ev.target_path)
        if not (self._is_watched(ev.path) or (
                ev.op in TWO_PATHS and ev.target_path is not None
                and self._is_watched(ev.target_path))):
            self.filtered += 1
            return
        self._enrich(ev.process)
        out.append(ev)

    def _net(self, ev: NetEvent, out: list[Event]) -> None:
        if ev.path is not None and ev.flags & F_UNNORMALIZED:
            ev.path = self.canonical(ev.path, ev.flags | F_FROM_ARG, ev.process)
            if not self._unix_watched(ev.path):
                self.filtered += 1
                return
        self._enrich(ev.process)
        out.append(ev)

    def _follow_new_link(self, link: bytes, target: bytes) -> None:
        """Hands a new symlink and what it resolves to to ``watch_alias``, which makes it a
        watched name if it leads into (or above) a watched tree (vigil.watchlist), so that
        operations through it reach user space, which resolves them to the real path."""
        if self._watch_alias is None:
            return
        base = link.rpartition(b"/")[0] or b"/"
        real = os.path.realpath(target if target.startswith(b"/") else base + b"/" + target)
        self._watch_alias(link, real)

    def _opened(self, raw: RawFile, out: list[Event]) -> None:
        ev = raw.event
        if not (self._keep_truncated(ev) if ev.flags & TRUNCATED else self._is_watched(ev.path)):
            self.filtered += 1
            return
        self._open[raw.file_id] = _OpenFile(ev.path, ev.process, ev.flags & TRUNCATED)
        self._by_tgid.setdefault(ev.process.pid, set()).add(raw.file_id)
        if len(self._open) > MAX_OPEN_FILES:
            # Forgotten here, its "modified" still comes from the kernel at its close; not if
            # its process exits holding it (closes_at_exit): counted as a possible loss.
            fid, old = self._open.popitem(last=False)
            self._by_tgid.get(old.tgid, set()).discard(fid)
            self.open_files_evicted += 1
        if raw.created:
            self._enrich(ev.process)
            out.append(ev)
        elif raw.truncated:   # emptied now, by the open: its writes come at the close
            self._enrich(ev.process)
            out.append(FileEvent(ev.timestamp_ns, FileOp.TRUNCATE, ev.path, ev.process,
                                 inode=ev.inode, device=ev.device, flags=ev.flags))

    def _closed(self, ev: FileEvent) -> None:
        fid = ev.file_id
        entry = self._open.pop(fid, None) if fid else None
        if entry is not None:
            fids = self._by_tgid.get(entry.tgid)
            if fids is not None:
                fids.discard(fid)
                if not fids:
                    del self._by_tgid[entry.tgid]

    def _exited(self, ev: ExitEvent, out: list[Event]) -> None:
        fids = self._by_tgid.pop(ev.process.pid, None)
        self._enrich(ev.process)
        if fids and self._closes_at_exit:
            # Exiting closes every file: the files it still held open for writing are final.
            for fid in sorted(fids):
                entry = self._open.pop(fid, None)
                if entry is None:
                    continue
                self._forget(fid)
                out.append(FileEvent(ev.timestamp_ns, FileOp.MODIFY, entry.path, ev.process,
                                     file_id=fid, flags=entry.flags))
                self._batch_truncated |= bool(entry.flags)
        if self._report_processes:
            out.append(ev)

    def _enrich(self, p: Process) -> None:
        if p.enriched:  # shared by every event of this process since its last exec
            return
        p.enriched = True
        self._procs.enrich(p)
        if self._containers is not None:
            p.container = self._containers.lookup(p.pid, p.cgroup_id, start_time=p.start_time)
        names = self._names
        p.user_name = names.user(p.uid)
        p.euser_name = p.user_name if p.euid == p.uid else names.user(p.euid)
        p.group_name = names.group(p.gid)
