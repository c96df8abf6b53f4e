"""Scans: walk the watched directories, hash, compare with the baseline, report and (optionally)
update it.

Owns the streaming pipeline walk -> batch of N -> hash (large files on a thread pool) -> compare
with the stored rows of that batch's key range -> write in one transaction -> yield changes.
Deletions are found by merging the byte-ordered walk with the byte-ordered rows (vigil.fim.walk
explains the order), so neither the tree nor the baseline is ever held in memory. Does not own the
traversal rules (vigil.fim.walk), reading files (vigil.fim.hashing) or realtime events.

A watched directory's first complete scan *establishes* its baseline (Store.mark_established):
its files are recorded silently and one "baseline-established" event says how many, as AIDE's
and Wazuh's first scan of a path does; rows it already had (from an enclosing directory's
baseline, or a database from before schema 3) are still compared. Later scans report additions.
`ScanStats` counts what a scan could not see (unreadable files and directories, a stop at
scan.max_files, directories without a baseline in a check): such a scan is incomplete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from vigil.config import Config, DirectoryConfig
from vigil.fim.diffs import ContentDiffs
from vigil.fim.hashing import Built, Limits, Offload, build_record
from vigil.fim.model import FileRecord, FimEvent, classify, compare, lacks_new_fields
from vigil.fim.mounts import pseudo_devices
from vigil.fim.policy import Policy
from vigil.fim.store import Store
from vigil.fim.walk import Entry, walk

BATCH = 1000
INLINE_MAX = 256 * 1024  # smaller files are hashed on the walking thread: a thread hop costs more


@dataclass
class ScanStats:
    seen: int = 0
    hashed_bytes: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    truncated: bool = False  # stopped at scan.max_files
    unreadable_dirs: int = 0  # not listed (or the watched path not stat-able): content unknown
    unreadable_files: int = 0  # content not read (permission, I/O error): hashes unknown
    too_large: int = 0  # over scan.max_file_size: attributes only, by configuration
    no_baseline: list[bytes] = field(default_factory=list)  # check of a never-baselined dir
    established: list[bytes] = field(default_factory=list)  # first baselines completed
    silently_added: int = 0  # files recorded by a first baseline, not reported

    def error(self, msg: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(msg)

    @property
    def incomplete(self) -> bool:
        return bool(self.truncated or self.unreadable_dirs or self.unreadable_files
                    or self.no_baseline)

    def reasons(self, max_files: int) -> list[str]:
        """Why the scan is incomplete, one phrase each (empty when it is not)."""
        out = []
        if self.truncated:
            out.append(f"stopped at scan.max_files={max_files}")
        if self.unreadable_dirs:
            out.append(f"{self.unreadable_dirs} directories could not be read")
        if self.unreadable_files:
            out.append(f"{self.unreadable_files} files could not be read")
        if self.no_baseline:
            out.append("no baseline yet for " + ", ".join(os.fsdecode(p)
                                                           for p in self.no_baseline))
        return out

    def as_fields(self, max_files: int) -> dict[str, object]:
        """What a scan-incomplete event carries (vigil.fim.scan)."""
        return {"reason": "; ".join(self.reasons(max_files)), "files": self.seen,
                "unreadable_files": self.unreadable_files,
                "unreadable_dirs": self.unreadable_dirs, "max_files_reached": self.truncated,
                "errors": self.errors, "error_samples": list(self.error_samples)}


class Scanner:
    def __init__(self, config: Config, store: Store, *, update: bool = True,
                 batch_size: int = BATCH, clock: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self.store = store
        self.update = update  # False: compare only (`vigil scan --check`), the baseline stays
        self.batch_size = batch_size
        self.clock = clock
        self.policy = Policy(config)
        self.diffs = ContentDiffs(config, store, self.policy)
        self.stats = ScanStats()
        self._pseudo: frozenset[int] = frozenset()

    def scan(self, source: str, roots: list[bytes] | None = None) -> Iterator[FimEvent]:
        """Scan every watched directory (or those holding one of ``roots``) and yield changes,
        and a "baseline-established" event for each directory whose first baseline completed."""
        self.stats = ScanStats()
        self._pseudo = pseudo_devices()
        dirs = [d for d in self.config.directories
                if roots is None or any(self.policy.directory_for(r) is d for r in roots)]
        established = self._established()
        scan_id = self.store.begin_scan(source, self.clock()) if self.update else 0
        with ThreadPoolExecutor(max_workers=self.config.scan.hash_workers) as pool:
            for dcfg in dirs:
                if self.stats.truncated:
                    break
                yield from self._scan_root(dcfg, source, scan_id, pool,
                                           dcfg.path not in established)
        if self.update:
            self.store.end_scan(scan_id, self.clock(), self.stats.seen)

    def _established(self) -> set[bytes]:
        """Watched directories that have a baseline. A database from before schema 3 does not
        say: there, a directory with rows of its own was baselined (adopted once, for good)."""
        done = self.store.established()
        if self.store.legacy_roots_pending():
            def has_own_rows(d: DirectoryConfig) -> bool:
                return self.store.has_rows(d.path, lambda p: not self.policy.owned_elsewhere(p, d))

            adopt = [d.path for d in self.config.directories
                     if d.path not in done and has_own_rows(d)]
            if self.update:
                self.store.adopt_legacy_roots(adopt, self.clock())
            done |= set(adopt)
        return done

    def _on_walk_error(self, path: bytes, err: OSError) -> None:
        if not isinstance(err, FileNotFoundError):  # a vanished root's rows are "deleted"
            self.stats.unreadable_dirs += 1
        self.stats.error(f"{os.fsdecode(path)}: {err.strerror}")

    def _scan_root(self, dcfg: DirectoryConfig, source: str, scan_id: int,
                   pool: ThreadPoolExecutor, establishing: bool) -> Iterator[FimEvent]:
        started, seen_before = time.monotonic(), self.stats.seen
        try:
            os.stat(dcfg.path)
        except FileNotFoundError:
            pass  # gone: every stored row below it is reported deleted
        except OSError as err:
            self._on_walk_error(dcfg.path, err)  # unknown, not deleted: leave the rows alone
            return
        after: bytes | None = None
        unknown: list[bytes] = []  # directories whose content was not listed: rows kept as is
        batch: list[Entry] = []
        for entry in walk(dcfg, self.policy, self._on_walk_error, self._pseudo):
            if not entry.complete:
                unknown.append(entry.path + b"/")
            if not entry.recorded:
                continue
            if self.stats.seen >= self.config.scan.max_files:
                self.stats.truncated = True
                self.stats.error(f"stopped at scan.max_files={self.config.scan.max_files}")
                break
            batch.append(entry)
            self.stats.seen += 1
            if len(batch) >= self.batch_size:
                yield from self._batch(dcfg, batch, after, batch[-1].path, unknown, source,
                                       scan_id, pool, establishing)
                after, batch = batch[-1].path, []
        # The last batch also owns every stored row after it: those files are gone (unless the
        # scan was cut short, when nothing past it is known).
        upto = batch[-1].path if self.stats.truncated and batch else None
        if batch or not self.stats.truncated:
            yield from self._batch(dcfg, batch, after, upto, unknown, source, scan_id, pool,
                                   establishing)
        if not establishing or self.stats.truncated:
            return  # a first baseline cut short stays unestablished: the next scan goes on
        if not self.update:
            self.stats.no_baseline.append(dcfg.path)  # a check cannot check this directory
            return
        files = self.stats.seen - seen_before
        now = self.clock()
        self.store.mark_established(dcfg.path, now, files)
        self.stats.established.append(dcfg.path)
        yield FimEvent("baseline-established", dcfg.path, source, now, tags=dcfg.tags,
                       scan={"files": files,
                             "duration_s": round(time.monotonic() - started, 3)})

    def _build_all(self, dcfg: DirectoryConfig, batch: list[Entry], unknown: list[bytes],
                   pool: ThreadPoolExecutor) -> list[Built]:
        """The batch's records, in order: small files read on this thread, large ones on the
        pool. A file the walk listed but nothing can be learnt about makes its directory's
        content unknown (added to ``unknown``), as that stat failing in the walk did."""
        use_pool = self.config.scan.hash_workers > 1
        max_size = self.config.scan.max_file_size
        inline_max = INLINE_MAX if use_pool else None
        fixed = None if dcfg.report_changes else Limits(max_size, -1, inline_max)
        jobs: list[Future[Built] | Built] = []
        for e in batch:
            lim = fixed or Limits(max_size, self.diffs.content_limit(e.path, dcfg), inline_max)
            st = e.st
            if st is None:  # a regular file the walk did not stat: open + fstat here
                try:
                    jobs.append(build_record(e.path, None, dcfg, lim))
                except Offload as large:
                    jobs.append(pool.submit(build_record, e.path, large.st, dcfg, lim))
                except OSError as err:  # its lstat failed (no search permission on the dir)
                    self._unlistable_parent(e.path, err, unknown)
            elif st.st_size > INLINE_MAX and use_pool:
                jobs.append(pool.submit(build_record, e.path, st, dcfg, lim))
            else:
                jobs.append(build_record(e.path, st, dcfg, lim))
        return [j.result() if isinstance(j, Future) else j for j in jobs]

    def _unlistable_parent(self, path: bytes, err: OSError, unknown: list[bytes]) -> None:
        """What the walk did when an entry's lstat failed: the directory is unreadable (counted
        and said once), its content unknown, the entry not seen."""
        self.stats.seen -= 1
        parent = path.rsplit(b"/", 1)[0] or b"/"
        prefix = parent if parent.endswith(b"/") else parent + b"/"
        if prefix not in unknown:
            unknown.append(prefix)
            self._on_walk_error(parent, err)

    def _batch(self, dcfg: DirectoryConfig, batch: list[Entry], after: bytes | None,
               upto: bytes | None, unknown: list[bytes], source: str, scan_id: int,
               pool: ThreadPoolExecutor, establishing: bool) -> Iterator[FimEvent]:
        built = self._build_all(dcfg, batch, unknown, pool)
        now = self.clock()
        new: dict[bytes, tuple[FileRecord, bytes | None]] = {}
        for b in built:
            if b is not None:  # None: vanished mid-scan, so absent like any deleted file
                new[b[0].path] = b
                self.stats.hashed_bytes += b[0].size if b[0].hashes else 0
                if b[0].error:
                    self._file_error(b[0])
        old: dict[bytes, FileRecord] = {}
        if after is None and dcfg.path in new:
            root_row = self.store.get(dcfg.path)
            if root_row:
                old[dcfg.path] = root_row
        events: list[FimEvent] = []
        gone: list[bytes] = []
        for row in self.store.iter_subtree(dcfg.path, after, upto):
            if row.path in new:
                old[row.path] = row
            elif any(row.path.startswith(u) for u in unknown) or \
                    self.policy.owned_elsewhere(row.path, dcfg):
                continue
            elif self.policy.watched(row.path, row.kind == "dir") is None:
                gone.append(row.path)  # no longer monitored (settings changed): drop quietly
            else:
                gone.append(row.path)
                events.append(FimEvent("deleted", row.path, source, now, before=row.to_dict(),
                                       tags=dcfg.tags))
        writes: list[FileRecord] = []
        # --check compares only: the batch runs in a transaction that is rolled back.
        with self.store.transaction() if self.update else self.store.scratch():
            for path, (rec, content) in new.items():
                ev, write = self._compare(dcfg, old.get(path), rec, content, source, now,
                                          establishing)
                if ev is not None:
                    events.append(ev)
                if write:
                    writes.append(rec)
            if self.update:
                self.store.put_many(writes, scan_id)
                self.store.delete_many(gone)
                self.diffs.enforce_quota(now)
        events.sort(key=lambda ev: ev.path)
        yield from events

    def _file_error(self, rec: FileRecord) -> None:
        if (rec.error or "").startswith("too large"):
            self.stats.too_large += 1
        else:
            self.stats.unreadable_files += 1
            self.stats.error(f"{os.fsdecode(rec.path)}: {rec.error}")

    def _compare(self, dcfg: DirectoryConfig, old: FileRecord | None, rec: FileRecord,
                 content: bytes | None, source: str, now: int,
                 establishing: bool) -> tuple[FimEvent | None, bool]:
        """The change to report (if any) and whether ``rec`` must be written."""
        if old is None:
            if self.update and dcfg.report_changes:  # (diffs.update does nothing without it)
                self.diffs.update(rec.path, dcfg, content, now)
            if establishing:  # a first baseline is not a list of additions
                self.stats.silently_added += 1
                return None, True
            return FimEvent("added", rec.path, source, now, after=rec.to_dict(),
                            tags=dcfg.tags), True
        if rec.error and not rec.hashes and old.hashes and (rec.size, rec.mtime_ns) == (
                old.size, old.mtime_ns):
            rec.hashes = dict(old.hashes)  # unreadable now: keep what was known
        if rec.xattrs is None and old.xattrs is not None:
            rec.xattrs = old.xattrs  # unreadable now: keep what was known
        changed = compare(old, rec, dcfg.check, dcfg.hashes)
        if not changed:  # a row from before schema 3 gets its ctime and xattrs, silently
            return None, lacks_new_fields(old, rec)
        action = classify(changed, dcfg.hashes)
        diff = None
        unavailable = None
        if action == "modified" and rec.kind == "file":
            diff, unavailable = self.diffs.update_diff(rec.path, dcfg, content, now, rec.size)
        return FimEvent(action, rec.path, source, now, changed_attributes=changed,
                        before=old.to_dict(), after=rec.to_dict(), diff=diff,
                        diff_unavailable=unavailable, tags=dcfg.tags), True
