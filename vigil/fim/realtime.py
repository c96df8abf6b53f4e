"""Realtime reconciliation: kernel file events in, baseline updates and FIM events out.

Owns turning the raw operations (vigil.events.model.FileEvent) into what a FIM user expects:
coalescing write bursts (a file is hashed once, when closed or after a quiet period), recognising
write-to-temp-then-rename as a modification of the target with the writer's who-data, renames,
deletions, attribute changes, and the startup check / rescan after drops. Does not own walking or
hashing (vigil.fim.scanner, vigil.fim.hashing) nor reading events from the kernel.

Known limits: a file created and deleted before it was ever finalized (a transient temp file)
yields no FIM event (the raw file events still show it); vim's backup-rename save (file -> file~,
write a new file, delete file~) is reported as renamed + added + deleted.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from vigil.config import Config
from vigil.events.model import FileEvent, FileOp, Process
from vigil.fim.diffs import ContentDiffs
from vigil.fim.hashing import Limits, build_record
from vigil.fim.model import FileRecord, FimEvent, classify, compare, lacks_new_fields
from vigil.fim.policy import Policy
from vigil.fim.scanner import Scanner
from vigil.fim.store import Store

QUIET_NS = 500_000_000

# Operations that change a directory's entries, hence its mtime and size.
_NAMESPACE_OPS = {FileOp.CREATE, FileOp.DELETE, FileOp.RMDIR, FileOp.RENAME, FileOp.LINK,
                  FileOp.SYMLINK, FileOp.MKDIR, FileOp.MKNOD}
_CONTENT_OPS = {FileOp.MODIFY, FileOp.TRUNCATE}
# Settled by comparing the file with its row: the changed attributes say what the operation did
# (mode, uid/gid, xattrs: the security.* ones with their values before and after, or ctime
# alone when it set something no check records, such as a user.* xattr or the same mode).
_ATTR_OPS = {FileOp.CHMOD, FileOp.CHOWN, FileOp.SETXATTR, FileOp.REMOVEXATTR}


@dataclass(slots=True)
class _Pending:
    process: Process  # the last writer
    last_ns: int
    created: bool  # new file: held for the quiet period, it may be a temp file renamed over another
    closed: bool


class Reconciler:
    def __init__(self, config: Config, store: Store, *, quiet_ns: int = QUIET_NS) -> None:
        self.config = config
        self.store = store
        self.quiet_ns = quiet_ns
        self.policy = Policy(config)
        self.diffs = ContentDiffs(config, store, self.policy)
        self.pending: dict[bytes, _Pending] = {}
        self._closed: set[bytes] = set()   # pending writes closed, to files that existed
        self._dirty_parents: set[bytes] = set()
        # the baseline rows of one batch's paths, read in one query and kept current by this
        # batch's writes (None: no row); emptied after the batch (a scan may write meanwhile)
        self._rows: dict[bytes, FileRecord | None] = {}

    # -- entry points --------------------------------------------------------------------------

    def handle(self, events: Iterable[FileEvent], now_ns: int) -> list[FimEvent]:
        """Apply a batch of file events; FIM events for what could be settled now."""
        out: list[FimEvent] = []
        done = [ev for ev in events if not ev.failed]  # a failed attempt changed nothing
        with self.store.transaction():
            try:
                self._prefetch(done)
                for ev in done:
                    out += self._one(ev)
                # Once per directory per batch: a burst in one directory touches its row once.
                for parent in sorted(self._dirty_parents):
                    self._refresh_dir(parent)
                self._dirty_parents.clear()
                # Closed writes to files that already existed: hashed once per batch.
                for path in sorted(self._closed):
                    if (pd := self._pop(path)) is not None:
                        out += self._settle(path, pd.process, now_ns)
                self.diffs.enforce_quota(now_ns)
            finally:
                self._rows.clear()
        return out

    def _prefetch(self, events: list[FileEvent]) -> None:
        """Every row this batch may read, in one query per 500 paths: the events' paths and
        their directories."""
        want: set[bytes] = set()
        for ev in events:
            want.add(ev.path)
            want.add(ev.path.rpartition(b"/")[0] or b"/")
            if ev.target_path is not None:
                want.add(ev.target_path)
                want.add(ev.target_path.rpartition(b"/")[0] or b"/")
        want.update(self._closed)
        got = self.store.get_many(sorted(want))
        self._rows = {p: got.get(p) for p in want}

    # -- the baseline, through the batch's rows -------------------------------------------------

    def _get(self, path: bytes) -> FileRecord | None:
        try:
            return self._rows[path]
        except KeyError:
            return self.store.get(path)

    def _put(self, rec: FileRecord) -> None:
        self.store.put_many([rec])
        if self._rows:
            self._rows[rec.path] = rec

    def _delete_rows(self, path: bytes, subtree: bool) -> None:
        if subtree:
            self.store.delete_subtree(path)
            self._rows.clear()      # rows below it are gone too: read them again
        self.store.delete_many([path])
        if self._rows:
            self._rows[path] = None

    def _pop(self, path: bytes) -> _Pending | None:
        self._closed.discard(path)
        return self.pending.pop(path, None)

    def flush(self, now_ns: int) -> list[FimEvent]:
        """Settle files quiet for ``quiet_ns`` (created files, writes never seen closed)."""
        due = [p for p, pd in self.pending.items() if now_ns - pd.last_ns >= self.quiet_ns]
        out: list[FimEvent] = []
        if due:
            with self.store.transaction():
                for path in due:
                    if (pd := self._pop(path)) is not None:
                        out += self._settle(path, pd.process, now_ns)
                self.diffs.enforce_quota(now_ns)
        return out

    def startup_check(self) -> Iterator[FimEvent]:
        """What changed while Vigil was not running (who-data unknown: process is None)."""
        return Scanner(self.config, self.store).scan("startup-scan")

    def rescan(self, paths: list[bytes]) -> Iterator[FimEvent]:
        """After dropped events: rescan the watched trees holding ``paths``."""
        for p in paths:
            self._pop(p)
        return Scanner(self.config, self.store).scan("rescan", roots=paths)

    # -- one event -----------------------------------------------------------------------------

    def _one(self, ev: FileEvent) -> list[FimEvent]:
        path, now = ev.path, ev.timestamp_ns
        if not self._live(path) and not (ev.op == FileOp.RENAME and self._live(ev.target_path)):
            return []  # unwatched, or watched by scheduled scans only (they must see the change)
        op = ev.op
        if op in _NAMESPACE_OPS:
            self._refresh_parent(path)
            if ev.target_path and op in (FileOp.RENAME, FileOp.LINK):
                self._refresh_parent(ev.target_path)
        if op == FileOp.CREATE:
            self._closed.discard(path)
            self.pending[path] = _Pending(ev.process, now, created=True, closed=False)
            return []
        if op in _CONTENT_OPS:
            pd = self.pending.get(path)
            closed = op == FileOp.MODIFY
            if pd is None:
                pd = self.pending[path] = _Pending(ev.process, now, False, closed)
            else:
                pd.process, pd.last_ns, pd.closed = ev.process, now, pd.closed or closed
            if pd.closed and not pd.created:
                self._closed.add(path)
            return []
        if op in _ATTR_OPS:
            if path in self.pending:
                return []  # settled with its content
            return self._settle(path, ev.process, now)
        if op in (FileOp.MKDIR, FileOp.SYMLINK, FileOp.MKNOD):
            return self._settle(path, ev.process, now)
        if op == FileOp.LINK and ev.target_path:
            self._refresh_ctime(path)  # its link count (and ctime) changed: not a change to it
            return self._settle(ev.target_path, ev.process, now)
        if op in (FileOp.DELETE, FileOp.RMDIR):
            return self._delete(path, ev.process, now)
        if op == FileOp.RENAME and ev.target_path:
            return self._rename(path, ev.target_path, ev.process, now)
        return []

    def _refresh_parent(self, path: bytes) -> None:
        """Keep the parent directory's row current without an event: the kernel reports the
        entry that changed, not the directory's mtime, and a later scan must not flag it."""
        self._dirty_parents.add(path.rsplit(b"/", 1)[0] or b"/")

    def _refresh_dir(self, parent: bytes) -> None:
        old = self._get(parent)
        if old is None:
            return
        try:
            st = os.lstat(parent)
        except OSError:
            return
        old.size, old.mtime_ns, old.ctime_ns = st.st_size, st.st_mtime_ns, st.st_ctime_ns
        self._put(old)

    def _refresh_ctime(self, path: bytes) -> None:
        old = self._get(path)
        try:
            st = os.lstat(path)
        except OSError:
            return
        if old is not None and old.inode == st.st_ino:
            old.ctime_ns = st.st_ctime_ns
            self._put(old)

    def _live(self, path: bytes | None) -> bool:
        dcfg = self.policy.directory_for(path) if path else None
        return dcfg is not None and dcfg.realtime

    def _delete(self, path: bytes, process: Process, now: int) -> list[FimEvent]:
        self._pop(path)
        old = self._get(path)
        if old is None:
            return []
        self._delete_rows(path, subtree=old.kind == "dir")
        dcfg = self.policy.directory_for(path)
        return [FimEvent("deleted", path, "realtime", now, before=old.to_dict(), process=process,
                         tags=dcfg.tags if dcfg else ())]

    def _rename(self, src: bytes, dst: bytes, process: Process, now: int) -> list[FimEvent]:
        pd = self._pop(src)
        self._pop(dst)
        writer = pd.process if pd else process
        old_src = self._get(src)
        dst_watched = self._live(dst)
        old_dst = self._get(dst) if dst_watched else None
        if old_src is None or old_dst is not None:
            # A name new to the baseline (a temp file, however long it lived) replacing the
            # target: that is the target's modification, by whoever wrote the replacement.
            if old_src is not None:
                self._delete_rows(src, subtree=False)
            if not dst_watched:
                return []
            out = self._settle(dst, writer, now)
            for ev in out:
                ev.old_path = src if old_src is not None else ev.old_path
            return out
        self._delete_rows(src, subtree=False)
        if not dst_watched:
            src_cfg = self.policy.directory_for(src)
            return [FimEvent("deleted", src, "realtime", now, before=old_src.to_dict(),
                             process=process, tags=src_cfg.tags if src_cfg else ())]
        if old_src.kind == "dir":
            self.store.rename_subtree(src, dst)
            self._rows.clear()      # rows below both names changed: read them again
        # The row moves with the name first: if dst is already gone again (mv a b && rm b),
        # its DELETE still finds a row to report, and nothing vanishes silently.
        moved = replace(old_src, path=dst)
        self._put(moved)
        out = self._settle(dst, process, now, renamed_from=old_src)
        if not out:
            dcfg = self.policy.directory_for(dst)
            out = [FimEvent("renamed", dst, "realtime", now, old_path=src,
                            before=old_src.to_dict(), after=moved.to_dict(), process=process,
                            tags=dcfg.tags if dcfg else ())]
        return out

    # -- settling one path against the baseline ------------------------------------------------

    def _settle(self, path: bytes, process: Process | None, now: int,
                renamed_from: FileRecord | None = None) -> list[FimEvent]:
        try:
            st = os.lstat(path)
        except OSError:
            return []  # gone again: its DELETE (or RENAME) event settles it
        dcfg = self.policy.watched(path, stat.S_ISDIR(st.st_mode))
        if dcfg is None or not dcfg.realtime:
            return []
        if dcfg.follow_symlinks and stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(OSError):
                st = os.stat(path)
        limits = Limits(self.config.scan.max_file_size, self.diffs.content_limit(path, dcfg))
        built = build_record(path, st, dcfg, limits)
        if built is None:
            return []
        rec, content = built
        old = renamed_from or self._get(path)
        diff = unavailable = None
        if old is None:
            action, changed = "added", []
            self.diffs.update(path, dcfg, content, now)
        else:
            changed = compare(old, rec, dcfg.check, dcfg.hashes)
            if renamed_from is not None and changed == ["ctime"]:
                changed = []  # a rename sets the ctime: the rename explains it
            if not changed and renamed_from is None:
                if lacks_new_fields(old, rec):
                    self._put(rec)
                return []
            action = "renamed" if renamed_from else classify(changed, dcfg.hashes)
            if renamed_from is not None:
                self.diffs.forget(renamed_from.path)
            if (action == "modified" or renamed_from) and rec.kind == "file":
                diff, unavailable = self.diffs.update_diff(path, dcfg, content, now, rec.size)
                if action != "modified":
                    unavailable = None  # a pure rename has no diff to miss
        self._put(rec)
        return [FimEvent(action, path, "realtime", now,
                         old_path=renamed_from.path if renamed_from else None,
                         changed_attributes=changed, before=old.to_dict() if old else None,
                         after=rec.to_dict(), diff=diff, diff_unavailable=unavailable,
                         process=process, tags=dcfg.tags)]
