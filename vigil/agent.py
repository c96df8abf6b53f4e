"""The live agent: kernel backend -> ring -> decode -> pipeline -> FIM -> rules -> outputs,
until told to stop.

Owns the run loop (wait, drain a batch, hand it on), the watch list given to the kernel, the drop
accounting (per-CPU counters polled every second, reported as events and in the summary), rule
reloads between batches (SIGHUP) and a clean stop. Does not own any stage itself: see
vigil.kernel.backend, vigil.events.pipeline, vigil.fim, vigil.rules.detector and vigil.outputs.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vigil.config import Config
from vigil.enrich.exehash import ExeHasher
from vigil.enrich.process import ProcessTable
from vigil.enrich.users import NameCache
from vigil.events.layout import Clock, Decoder
from vigil.events.marks import mark
from vigil.events.model import Event, FileEvent, LostEvents
from vigil.events.pipeline import TRUNCATED, TWO_PATHS, Pipeline
from vigil.events.truncated import TruncatedPaths
from vigil.fim.policy import Policy
from vigil.fim.service import FimService
from vigil.kernel.backend import BackendSettings, KernelBackend
from vigil.kernel.choose import start_backend
from vigil.kernel.errors import VigilError
from vigil.losses import (
    DROP_KINDS,
    NO_RESCAN,
    RESCAN_KINDS,
    USER_DROP_KINDS,
    RunSummary,
    decoder_counts,
    kind_of,
)
from vigil.outputs.base import Output, Sink
from vigil.outputs.batch import Batch
from vigil.outputs.ecs import host_fields
from vigil.ownfiles import OwnFiles, configured_sources
from vigil.rules.detector import Detector
from vigil.rules.ruleset import RuleSet
from vigil.rules.watchpaths import WatchPath, watch_paths
from vigil.sysctl import SysctlWatch
from vigil.watchlist import (
    Alias,
    AliasSet,
    kernel_watch_paths,
    realtime_roots,
    resolve,
    static_aliases,
)

log = logging.getLogger(__name__)

class Agent:
    def __init__(self, config: Config, sinks: Sequence[Sink], *, btf_path: str | None = None,
                 obj_path: Path | None = None, poll_interval: float = 0.1,
                 fim: bool = True, backend: str | None = None,
                 event_buffer: str = "auto", detector: Detector | None = None,
                 reload_rules: Callable[[], RuleSet] | None = None) -> None:
        self.config = config
        self.detector = detector
        self._reload_rules = reload_rules
        self._reload = threading.Event()
        self._rule_paths: list[WatchPath] = []
        self._verdicts: dict[bytes, bool] = {}   # policy verdicts of the current batch
        self._fim_enabled = fim
        self._fim: FimService | None = None
        self.sinks = list(sinks)
        self._host = detector.host if detector is not None else host_fields()
        self.poll_interval = poll_interval
        self.stop_event = threading.Event()
        self._policy = Policy(config)
        self._settings = BackendSettings(
            ring_bytes=config.ring_buffer_mb << 20,
            failed_errnos=config.failed_errnos,
            btf_custom_path=btf_path,
            event_buffer=event_buffer,
            network=config.network,
            shell=config.shell.enabled,
        )
        self._obj_path = obj_path
        self._backend_name = backend  # None or "auto": the best that runs here
        self._backend: KernelBackend | None = None
        self.summary = RunSummary()
        self.aliases = AliasSet(config)
        # always watched, whatever the configuration says: Vigil's own files (for the rules)
        # and the kernel's security knobs (reported)
        self._own = OwnFiles()
        self._own_entries: set[bytes] = set()
        self.sysctl: SysctlWatch | None = None

    def _add_alias(self, alias: Alias) -> None:
        if not self.aliases.add(alias):
            return
        if self._backend is not None:
            self._backend.add_watch(alias.link)
        log.info("following symlink %s -> %s into a watched tree (%s)",
                 os.fsdecode(alias.link), os.fsdecode(alias.target), alias.found_by)

    def _new_link(self, link: bytes, target: bytes) -> None:
        """The pipeline saw a symlink created: an alias if it leads into a watched tree."""
        self._add_alias(Alias(link, target, "created"))

    def _baseline_links(self) -> None:
        """Symlinks the baseline walks recorded in the watched trees become aliases too."""
        if self._fim is not None:
            for link in self._fim.take_symlinks():
                if (target := resolve(link)) is not None:
                    self._add_alias(Alias(link, target, "baseline"))

    def _is_watched(self, path: bytes) -> bool:
        """Whether the pipeline keeps an event of ``path``: reported (the policy), or seen by
        the rules only: a path a rule asked the kernel to watch, or one the configuration
        ignores (or restricts, or that lies deeper than its depth) in a configured tree,
        which must not become a place to hide from the rules (``*.swp`` in /usr/bin)."""
        if self._reported(path):
            return True
        if self.sysctl is not None and path in self.sysctl:
            return True
        if self.detector is None:
            return False
        return self._policy.directory_for(path) is not None \
            or any(w.covers(path) for w in self._rule_paths) or self._own.covers(path)

    def _unix_watched(self, path: bytes) -> bool:
        """A Unix socket path on the network section's list (or below a directory on it)."""
        return any(path == p or path.startswith(p.rstrip(b"/") + b"/")
                   for p in self.config.network.unix_paths)

    def _reported(self, path: bytes) -> bool:
        """The policy's verdict on ``path``, asked once per batch: the pipeline asks first,
        ``_configured`` again for the same paths."""
        v = self._verdicts.get(path)
        if v is None:
            v = self._verdicts[path] = self._policy.watched(path) is not None
        return v

    def _configured(self, ev: Event) -> bool:
        """A file event the configuration reports (telemetry, FIM), not one kept for the
        rules only (a rule's watch-only path, an ignored name, one of Vigil's own files);
        a security knob's write is reported."""
        if not isinstance(ev, FileEvent) or ev.flags & TRUNCATED or self._reported(ev.path) \
                or ev.sysctl is not None:
            return True   # a cut path is kept by the pipeline for the configured trees
        return ev.op in TWO_PATHS and ev.target_path is not None \
            and self._reported(ev.target_path)

    def _watch_for_rules(self, backend: KernelBackend | None) -> None:
        """Watch-only entries for the file rules' paths outside the configured directories
        (vigil.rules.watchpaths); added, never removed while running (a stale entry only lets
        records through to the exact check)."""
        if self.detector is None:
            return
        paths, _ = watch_paths(self.detector.ruleset.rules, realtime_roots(self.config))
        for w in paths:
            if w not in self._rule_paths:
                self._rule_paths.append(w)
                if backend is not None:
                    backend.add_watch(w.directory)
                log.info("watching %s for rule(s): %s", os.fsdecode(w.prefix),
                         "; ".join(w.rules))

    def _watch_own_files(self, backend: KernelBackend | None) -> None:
        """Vigil's own files (vigil.ownfiles) as watch-only kernel entries, for the rules;
        again at each reload (the rule paths may change). Added, never removed."""
        if self.detector is None:
            return
        obj = self._obj_path
        self._own = OwnFiles(configured_sources(
            self.config, self.detector.ruleset.paths, btf_path=self._settings.btf_custom_path,
            obj_dir=(obj.parent if obj is not None and obj.is_file() else obj)))
        for p in self._own.kernel_entries(kernel_watch_paths(self.config)):
            if p not in self._own_entries:
                self._own_entries.add(p)
                if backend is not None:
                    backend.add_watch(p)
                log.info("watching Vigil's own %s", os.fsdecode(p))

    def run(self, duration: float | None = None,
            on_stop: Callable[[RunSummary], None] | None = None) -> RunSummary:
        """Runs until ``duration`` passes or ``stop()``. ``on_stop`` gets the summary as soon as
        the last events are out, before the ~3 s it takes the kernel to detach the programs."""
        if os.geteuid() != 0:
            raise VigilError("vigil run needs root: it loads eBPF programs "
                             "(CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)")
        t0 = time.monotonic()
        self._backend, rejected = start_backend(self._settings, self._backend_name,
                                                self._obj_path)
        skipped = "; ".join(f"{name}: {why}" for name, why in rejected.items())
        buffer = ", perf event buffer" if self._backend.event_buffer == "perf" else ""
        print(f"vigil: {self._backend.name} backend{buffer}"
              + (f" (skipped {skipped})" if skipped else ""), file=sys.stderr, flush=True)
        for note in self._backend.plan.notes:
            log.info("%s", note)
        self._report_uprobes(self._backend)
        with self._backend as backend:
            for alias in static_aliases(self.config):
                self.aliases.add(alias)
            self._watch_for_rules(None)
            self._watch_own_files(None)
            self.sysctl = SysctlWatch()
            n = backend.set_watches(kernel_watch_paths(self.config) + [
                a.link for a in self.aliases.aliases()] + [w.directory for w in self._rule_paths]
                + sorted(self._own_entries) + self.sysctl.paths())
            procs = ProcessTable()
            procs.load_from_proc()
            eh = self.config.exec_hash
            hasher = ExeHasher(eh.max_bytes_per_second, eh.max_file_size) \
                if eh.enabled and self.config.exec_events else None
            pipeline = Pipeline(self._is_watched, procs, NameCache(), backend.forget_open_file,
                                report_processes=self.config.exec_events,
                                watch_alias=self._new_link,
                                closes_at_exit=backend.name == "tracepoint",
                                truncated=TruncatedPaths(
                                    d.path for d in self.config.directories if d.realtime),
                                unix_watched=self._unix_watched, exe_hasher=hasher)
            log.info("watching %d paths (%d kernel entries, %d of them symlink aliases) with "
                     "the %s backend; %d processes known", len(self.config.directories), n,
                     len(self.aliases), backend.name, len(procs))
            if self._fim_enabled:
                self._fim = FimService(self.config)
                self._fim.start()
            try:
                self._loop(backend, pipeline, t0, duration)
            finally:
                if self._fim is not None:
                    self._fim.close()
            log.info("%d records from the kernel, %d dropped by the exact user-space check",
                     backend.reader.records if backend.reader else 0, pipeline.filtered)
            if hasher is not None:
                log.info("exec hashes: %d files read (%d bytes), %d cache hits, skipped: %s",
                         hasher.hashed, hasher.bytes_hashed, hasher.cache_hits,
                         dict(hasher.skipped) or "none")
            self.summary.seconds = time.monotonic() - t0
            if on_stop is not None:
                on_stop(self.summary)
        return self.summary

    def _loop(self, backend: KernelBackend, pipeline: Pipeline, t0: float,
              duration: float | None) -> None:
        reader = backend.reader
        assert reader is not None
        decoder = Decoder(Clock.now())
        next_stats = time.monotonic() + 1.0
        while True:
            stopping = self.stop_event.is_set() or (
                duration is not None and time.monotonic() - t0 >= duration)
            if not stopping:
                reader.wait(self.poll_interval)
            while True:  # drain in bounded batches until the ring is empty
                before = reader.records
                self._verdicts.clear()
                events = mark(pipeline.process(decoder.decode_batch(reader.drain(8 << 20))),
                              self._own, self.sysctl)
                if self.detector is not None and events:
                    shown = [self._configured(e) for e in events]
                    if not all(shown):
                        self._emit(self.detector.process(
                            [e for e, ok in zip(events, shown, strict=True) if not ok]))
                        events = [e for e, ok in zip(events, shown, strict=True) if ok]
                self._emit(events)
                if self._fim is not None and events:
                    self._emit(self._fim.handle(pipeline.baseline_events(events),
                                                time.time_ns()))
                # an endless burst must not starve the once-a-second work (drop counters,
                # FIM ticks): it runs between batches at least that often; a stop drains all
                if reader.records == before or (
                        not stopping and time.monotonic() >= next_stats):
                    break
            if self._fim is not None:
                self._emit(self._fim.tick(time.time_ns()))
                self._baseline_links()
            if self.detector is not None:
                if self._reload.is_set():
                    self._reload.clear()
                    self._swap_rules(self.detector)
                self._emit(self.detector.close() if stopping
                           else self.detector.tick(time.time_ns()))
                self.summary.rules = self.detector.counters()
            now = time.monotonic()
            if stopping or now >= next_stats:
                self._check_drops(backend, {**pipeline.counts(), **decoder_counts(decoder)})
                next_stats = now + 1.0
            if stopping:
                return

    def request_reload(self) -> None:
        """SIGHUP: reload the rules between two batches (signal-safe: sets a flag)."""
        self._reload.set()

    def _swap_rules(self, detector: Detector) -> None:
        if self._reload_rules is None:
            return
        try:
            ruleset = self._reload_rules()
        except VigilError as err:
            log.warning("reload refused, the running rules stay: %s", err)
            return
        if ruleset.refused:
            for e in ruleset.refused:
                log.warning("%s", e)
            log.warning("reload refused, the running rules stay: %d rule(s) refused",
                        len(ruleset.refused))
            return
        self._emit(detector.swap(ruleset))
        self._watch_for_rules(self._backend)
        self._watch_own_files(self._backend)
        print(f"vigil: rules reloaded: {ruleset.describe()}", file=sys.stderr, flush=True)

    @staticmethod
    def _report_uprobes(backend: KernelBackend) -> None:
        """One stderr line for the shell commands; a line per binary at info level, and per
        binary that could not be hooked as a warning."""
        if backend.uprobes_off:
            log.warning("shell commands are not reported: %s", backend.uprobes_off)
        if not backend.settings.shell or backend.uprobes_off:
            return
        hooked = [t for t in backend.uprobes if t.status == "attached"]
        print(f"vigil: shell commands from {len(hooked)} of {len(backend.uprobes)} bash "
              f"binaries", file=sys.stderr, flush=True)
        for t in backend.uprobes:
            (log.info if t.status == "attached" else log.warning)("%s", t.line())

    def _emit(self, events: Sequence[Output]) -> None:
        if not events:
            return
        batch = Batch(events, self._host)   # each ECS document rendered once for all readers
        if self.detector is not None:
            alerts = self.detector.process(batch)
            if alerts:
                batch = batch.extended(alerts)
        for ev in batch:
            self.summary.delivered[type(ev).__name__.removesuffix("Event").lower()] += 1
        for sink in self.sinks:
            sink.emit(batch)

    def _check_drops(self, backend: KernelBackend, local: dict[str, int]) -> None:
        """New losses (the kernel's counters and ``local``, user space's) become events-lost
        events and a rescan; new events with cut paths a rescan."""
        counters = {**backend.counters(), **local}
        lost: list[Event] = []
        for kind in DROP_KINDS:
            new = counters.get(kind, 0) - self.summary.drops.get(kind, 0)
            if new > 0:
                where = "user space" if kind in USER_DROP_KINDS else "kernel side"
                log.warning("%s lost %d %s events", where, new, kind_of(kind))
                lost.append(LostEvents(time.time_ns(), kind_of(kind), new))
        rescan = any(e.kind not in NO_RESCAN for e in lost if isinstance(e, LostEvents))
        for kind in RESCAN_KINDS:
            new = counters.get(kind, 0) - self.summary.drops.get(kind, 0)
            if new > 0:
                log.warning("%d events with a path the kernel could not walk to its end "
                            "(%s): rescanning the watched trees", new, kind)
                rescan = True
        self.summary.drops = counters
        if self._fim is not None:
            self.summary.baseline = self._fim.counters()
        if lost:
            for sink in self.sinks:
                sink.emit(lost)
        if rescan and self._fim is not None:
            self._fim.rescan_after_drops()

    def stop(self) -> None:
        self.stop_event.set()
