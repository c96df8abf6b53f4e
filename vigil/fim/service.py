"""File integrity monitoring beside the live agent.

Owns the schedule of FIM work while ``vigil run`` runs: realtime reconciliation of kernel file
events on the agent's thread (cheap: the reconciler hashes a file once, when it settles), and the
slow walks — the first baseline, the check for changes made while Vigil was stopped, scheduled
rescans and rescans after the kernel side dropped events — on one background thread with its own
database connection, so the event loop never waits for a tree walk. Does not own what a scan or
the reconciler does (``vigil.fim.scanner``, ``vigil.fim.realtime``).

Both connections write to the same WAL database; SQLite serialises the writers (busy timeout).
A file changed during a scan may be reported by both paths; the baseline ends up right either way.

Nothing a scan misses is silent: a scan that fails becomes a "scan-failed" event, one that could
not read everything or stopped at scan.max_files a "scan-incomplete" event, a directory's first
baseline one "baseline-established" event (and a line on stderr), and ``counters()`` counts
them, with the stored contents the diff quota dropped, for the agent's run summary.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Sequence

from vigil.config import Config
from vigil.events.model import Event, FileEvent
from vigil.fim.model import SCAN_ACTIONS, FimEvent
from vigil.fim.realtime import Reconciler
from vigil.fim.scanner import Scanner
from vigil.fim.store import Store, StoreError

log = logging.getLogger(__name__)


class FimService:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._store = Store(config.database)
        self._reconciler = Reconciler(config, self._store)
        self._jobs: queue.Queue[tuple[str, list[bytes] | None] | None] = queue.Queue()
        self._results: queue.Queue[FimEvent] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._worker, name="vigil-fim", daemon=True)
        self._next_scan = float("inf")
        self.scans_done = 0
        # Written by both threads (the worker's scans, the agent's reconciler): under the lock.
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._symlinks: queue.Queue[list[bytes]] = queue.Queue()

    def start(self) -> None:
        first = self._store.last_complete_scan() is None
        self._jobs.put(("initial-scan" if first else "startup-scan", None))
        if self.config.scan.interval > 0:
            self._next_scan = time.monotonic() + self.config.scan.interval
        self._thread.start()

    # ---- on the agent's thread ---------------------------------------------------------------

    def handle(self, events: Sequence[Event], now_ns: int) -> list[FimEvent]:
        files = [e for e in events if isinstance(e, FileEvent)]
        return self._counted(self._reconciler.handle(files, now_ns)) if files else []

    def counters(self) -> dict[str, int]:
        """What FIM could not do or see so far (names in COUNTERS), for the run summary."""
        with self._lock:
            out = dict(self._counts)
        out["diff_contents_evicted"] += self._reconciler.diffs.evicted
        return out

    def _add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _counted(self, events: list[FimEvent]) -> list[FimEvent]:
        for ev in events:
            if ev.diff_unavailable == "quota":
                self._add("diffs_unavailable_quota")
        return events

    def tick(self, now_ns: int) -> list[FimEvent]:
        """Settles quiet files, collects what the background scans found, starts due scans."""
        out = self._counted(self._reconciler.flush(now_ns))
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                break
        if time.monotonic() >= self._next_scan:
            self._next_scan = time.monotonic() + self.config.scan.interval
            self._jobs.put(("scheduled-scan", None))
        return out

    def take_symlinks(self) -> list[bytes]:
        """The baseline's symlinks, once after each finished scan (else nothing)."""
        out: list[bytes] = []
        while True:
            try:
                out += self._symlinks.get_nowait()
            except queue.Empty:
                return out

    def rescan_after_drops(self) -> None:
        """Events were lost: walk every realtime tree and report what differs from the baseline."""
        roots = [d.path for d in self.config.directories if d.realtime]
        if roots:
            self._jobs.put(("rescan", roots))

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("a baseline scan is still running; it stops with the process "
                            "(the database stays consistent)")
        self._store.close()

    def idle(self) -> bool:
        """No scan queued or running (for tests and --duration runs)."""
        return self._jobs.unfinished_tasks == 0

    # ---- the background thread ---------------------------------------------------------------

    def _worker(self) -> None:
        try:
            store: Store | None = Store(self.config.database)
        except StoreError as e:
            store, opened = None, e
        try:
            while not self._stop.is_set():
                job = self._jobs.get()
                try:
                    if job is None:
                        return
                    if store is None:
                        self._failed(job, opened)  # every scan fails, and says so
                    else:
                        self._run(store, *job)
                except Exception as e:  # a scan must never take the agent down: say it instead
                    self._failed(job, e)
                finally:
                    self._jobs.task_done()
        finally:
            if store is not None:
                store.close()

    def _failed(self, job: tuple[str, list[bytes] | None] | None, e: Exception) -> None:
        source, roots = job if job is not None else ("scan", None)
        reason = f"{type(e).__name__}: {e}"
        log.error("%s failed: %s; the baseline may be out of date until the next scan",
                  source, reason)
        log.debug("%s failed", source, exc_info=True)
        self._add("scans_failed")
        self._results.put(FimEvent("scan-failed", b"", source, time.time_ns(),
                                   scan={"reason": reason, "roots": _roots(self.config, roots)}))

    def _run(self, store: Store, source: str, roots: list[bytes] | None) -> None:
        t0 = time.monotonic()
        scanner = Scanner(self.config, store)
        n = 0
        try:
            for ev in scanner.scan(source, roots=roots):
                if self._stop.is_set():
                    return  # stopping: an unfinished scan is not an incomplete one
                n += ev.action not in SCAN_ACTIONS
                self._results.put(ev)
        finally:
            self._add("diff_contents_evicted", scanner.diffs.evicted)
        self._add("scans_completed")
        self._account(scanner, source, roots, time.monotonic() - t0)
        self.scans_done += 1
        self._symlinks.put(store.symlinks())
        first = source == "initial-scan"
        log.info("%s: %d files in %.1fs, %d %s", source, scanner.stats.seen,
                 time.monotonic() - t0, scanner.stats.silently_added if first else n,
                 "recorded" if first else "changes")

    def _account(self, scanner: Scanner, source: str, roots: list[bytes] | None,
                 took: float) -> None:
        """Counts, the first-baseline line and the scan-incomplete event of a finished scan."""
        st = scanner.stats
        if st.established:
            self._add("baselines_established", len(st.established))
            print(f"vigil: baseline established for {len(st.established)} directories "
                  f"({st.silently_added} files recorded, not reported) in {took:.1f}s: "
                  + ", ".join(os.fsdecode(p) for p in st.established),
                  file=sys.stderr, flush=True)
        if not st.incomplete:
            return
        self._add("scans_incomplete")
        self._add("scan_unreadable_files", st.unreadable_files)
        self._add("scan_unreadable_dirs", st.unreadable_dirs)
        self._add("scan_max_files_stops", int(st.truncated))
        fields = st.as_fields(self.config.scan.max_files)
        log.warning("%s incomplete: %s", source, fields["reason"])
        self._results.put(FimEvent("scan-incomplete", b"", source, time.time_ns(),
                                   scan={**fields, "roots": _roots(self.config, roots)}))


# FimService.counters() keys
COUNTERS = ("scans_completed", "scans_failed", "scans_incomplete", "scan_unreadable_files",
            "scan_unreadable_dirs", "scan_max_files_stops", "baselines_established",
            "diff_contents_evicted", "diffs_unavailable_quota")


def _roots(config: Config, roots: list[bytes] | None) -> list[str]:
    return [os.fsdecode(p) for p in (roots or [d.path for d in config.directories])]
