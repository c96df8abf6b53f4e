"""File integrity monitoring beside the live agent.

Owns the schedule of FIM work while ``vigil run`` runs: realtime reconciliation of kernel file
events on the agent's thread (cheap: the reconciler hashes a file once, when it settles), and the
slow walks — the first baseline, the check for changes made while Vigil was stopped, scheduled
rescans and rescans after the kernel side dropped events — on one background thread with its own
database connection, so the event loop never waits for a tree walk. Does not own what a scan or
the reconciler does (``vigil.fim.scanner``, ``vigil.fim.realtime``).

Both connections write to the same WAL database; SQLite serialises the writers (busy timeout).
A file changed during a scan may be reported by both paths; the baseline ends up right either way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence

from vigil.config import Config
from vigil.events.model import Event, FileEvent
from vigil.fim.model import FimEvent
from vigil.fim.realtime import Reconciler
from vigil.fim.scanner import Scanner
from vigil.fim.store import Store

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
        return self._reconciler.handle(files, now_ns) if files else []

    def tick(self, now_ns: int) -> list[FimEvent]:
        """Settles quiet files, collects what the background scans found, starts due scans."""
        out = self._reconciler.flush(now_ns)
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
        with Store(self.config.database) as store:
            while not self._stop.is_set():
                job = self._jobs.get()
                try:
                    if job is None:
                        return
                    self._run(store, *job)
                except Exception:  # a scan must never take the agent down
                    log.exception("baseline scan failed")
                finally:
                    self._jobs.task_done()

    def _run(self, store: Store, source: str, roots: list[bytes] | None) -> None:
        t0 = time.monotonic()
        scanner = Scanner(self.config, store)
        n = 0
        for ev in scanner.scan(source, roots=roots):
            if self._stop.is_set():
                break
            n += 1
            if source != "initial-scan":  # the first baseline is not a list of changes
                self._results.put(ev)
        self.scans_done += 1
        self._symlinks.put(store.symlinks())
        log.info("%s: %d files in %.1fs, %d %s", source, scanner.stats.seen,
                 time.monotonic() - t0, n, "recorded" if source == "initial-scan" else "changes")
