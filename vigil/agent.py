"""The live agent: kernel backend -> ring -> decode -> pipeline -> FIM -> rules -> outputs,
until told to stop.

Owns the run loop (wait, drain a batch, hand it on), the drop accounting (per-CPU counters
polled every second, reported as events and in the summary), the configuration and rules read
again between batches (SIGHUP), the service manager told (ready, watchdog, reloading,
stopping), the health check driven and a clean stop. Does not own any stage itself: see
vigil.kernel.backend, vigil.watching (what is watched), vigil.events.pipeline, vigil.fim,
vigil.rules.detector, vigil.health and vigil.outputs.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

from vigil.config import Config
from vigil.config.reload import fim_changed, restart_needed
from vigil.enrich.containers import ContainerResolver
from vigil.enrich.exehash import ExeHasher
from vigil.enrich.process import ProcessTable
from vigil.enrich.users import NameCache
from vigil.events.layout import Clock, Decoder
from vigil.events.marks import mark
from vigil.events.model import Event, LostEvents
from vigil.events.pipeline import Pipeline
from vigil.fim.service import FimService
from vigil.health import HealthCheck, HealthResult
from vigil.kernel.backend import KernelBackend
from vigil.kernel.choose import EarlyStart, settings_for, start_backend
from vigil.kernel.errors import VigilError
from vigil.livestats import LiveStats, StageTimes
from vigil.losses import (
    DROP_KINDS,
    NO_RESCAN,
    RESCAN_KINDS,
    USER_DROP_KINDS,
    RunSummary,
    decoder_counts,
    kind_of,
)
from vigil.outputs.base import Output, Sink, output_stats
from vigil.outputs.batch import Batch
from vigil.outputs.ecs import host_fields
from vigil.rules.alert import Alert
from vigil.rules.detector import Detector
from vigil.rules.ruleset import RuleSet
from vigil.sdnotify import Notifier
from vigil.watching import Watching, truncated_paths
from vigil.watchlist import Alias, resolve

log = logging.getLogger(__name__)

# Records per step through the stages: small enough that a step's objects stay in the CPU's
# caches from one stage to the next (bench/pipeline.py: 64-128 records run ~1.6x faster than
# 4,096), large enough that a step's fixed costs (a write per output, a FIM transaction) are
# shared by many events.
STEP_RECORDS: Final = 128


def _chunks(records: Iterable[memoryview | bytes], n: int
            ) -> Iterator[list[memoryview | bytes]]:
    it = iter(records)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


class Agent:
    def __init__(self, config: Config, sinks: Sequence[Sink], *, btf_path: str | None = None,
                 obj_path: Path | None = None, poll_interval: float = 0.1,
                 fim: bool = True, backend: str | None = None,
                 event_buffer: str = "auto", detector: Detector | None = None,
                 reload: Callable[[], tuple[Config, RuleSet | None]] | None = None,
                 on_health: Callable[[HealthResult], None] | None = None,
                 early: EarlyStart | None = None) -> None:
        self.config = config
        self.detector = detector
        self._reload_config = reload
        self._reload = threading.Event()
        self._fim_enabled = fim
        self._fim: FimService | None = None
        self.sinks = list(sinks)
        self._host = detector.host if detector is not None else host_fields()
        self.poll_interval = poll_interval
        self.stop_event = threading.Event()
        # the kernel side may be starting already (``early``: vigil run starts it on a thread
        # as soon as the configuration is read); its settings are then the agent's
        self._early = early
        self._settings = early.settings if early is not None else \
            settings_for(config, btf_path, event_buffer)
        self._obj_path = obj_path
        self._backend_name = backend  # None or "auto": the best that runs here
        self._backend: KernelBackend | None = None
        self.summary = RunSummary()
        self.watching = Watching(config, detector, btf_path=btf_path, obj_path=obj_path)
        self.health = HealthCheck(config.health, config.health_dir, on_health) \
            if config.health.enabled else None
        self.notifier = Notifier.from_env()
        self.stats = LiveStats()
        self.stages = StageTimes()
        self._hasher: ExeHasher | None = None
        self._output_drops: dict[str, int] = {}
        self._said_stopping = False

    def run(self, duration: float | None = None,
            on_stop: Callable[[RunSummary], None] | None = None) -> RunSummary:
        """Runs until ``duration`` passes or ``stop()``. ``on_stop`` gets the summary as soon as
        the last events are out, before the ~3 s it takes the kernel to detach the programs."""
        if os.geteuid() != 0:
            raise VigilError("vigil run needs root: it loads eBPF programs "
                             "(CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)")
        t0 = time.monotonic()
        self._backend, rejected = self._early.result() if self._early is not None else \
            start_backend(self._settings, self._backend_name, self._obj_path)
        skipped = "; ".join(f"{name}: {why}" for name, why in rejected.items())
        buffer = ", perf event buffer" if self._backend.event_buffer == "perf" else ""
        print(f"vigil: {self._backend.name} backend{buffer}"
              + (f" (skipped {skipped})" if skipped else ""), file=sys.stderr, flush=True)
        for note in self._backend.plan.notes:
            log.info("%s", note)
        self._report_uprobes(self._backend)
        with self._backend as backend:
            if self.health is not None:
                try:
                    self.health.prepare()
                    self.watching.health_dir = os.fsencode(self.health.directory).rstrip(b"/")
                except OSError as err:   # a read-only state directory: the rest runs
                    log.warning("health check off: cannot use %s: %s (set health.directory "
                                "to a writable place)", self.health.directory,
                                err.strerror or err)
                    self.health = None
            n = self.watching.start(backend)
            pipeline = self.make_pipeline(backend.name, backend.forget_open_file)
            log.info("watching %d paths (%d kernel entries, %d of them symlink aliases) with "
                     "the %s backend; %d processes known", len(self.config.directories), n,
                     len(self.watching.aliases), backend.name, len(self.stats.procs or ()))
            if self._fim_enabled:
                self._fim = FimService(self.config)
                self._fim.start()
            self.notifier.ready(f"{backend.name} backend, {n} watch entries")
            try:
                self._loop(backend, pipeline, t0, duration)
            finally:
                self._stopping()
                if self._fim is not None:
                    self._fim.close()
            log.info("%d records from the kernel, %d dropped by the exact user-space check",
                     backend.reader.records if backend.reader else 0, pipeline.filtered)
            if (hasher := self._hasher) is not None:
                log.info("exec hashes: %d files read (%d bytes), %d cache hits, skipped: %s",
                         hasher.hashed, hasher.bytes_hashed, hasher.cache_hits,
                         dict(hasher.skipped) or "none")
            self.summary.seconds = time.monotonic() - t0
            if on_stop is not None:
                on_stop(self.summary)
        return self.summary

    def make_pipeline(self, backend_name: str,
                      forget_open_file: Callable[[int], None]) -> Pipeline:
        """The pipeline of this agent's configuration, with a fresh process table (what /proc
        says now); ``backend_name`` says how closes are seen."""
        procs = ProcessTable()
        procs.load_from_proc()
        self.stats.procs = procs
        eh = self.config.exec_hash
        self._hasher = ExeHasher(eh.max_bytes_per_second, eh.max_file_size) \
            if eh.enabled and self.config.exec_events else None
        w = self.watching
        return Pipeline(w.is_watched, procs, NameCache(), forget_open_file,
                        report_processes=self.config.exec_events,
                        watch_alias=w.new_link,
                        closes_at_exit=backend_name == "tracepoint",
                        truncated=truncated_paths(self.config),
                        unix_watched=w.unix_watched, exe_hasher=self._hasher,
                        containers=ContainerResolver())

    def _loop(self, backend: KernelBackend, pipeline: Pipeline, t0: float,
              duration: float | None) -> None:
        reader = backend.reader
        assert reader is not None
        self.stats.reader = reader
        decoder = Decoder(Clock.now())
        next_stats = time.monotonic() + 1.0
        health, w = self.health, self.watching
        started = False   # the first pass drains at once: the start-up's events wait already
        while True:
            stopping = self.stop_event.is_set() or (
                duration is not None and time.monotonic() - t0 >= duration)
            if not stopping:
                if started:
                    reader.wait(self.poll_interval)
            else:
                self._stopping()   # the service manager knows at once; the drain follows
            started = True
            first = reader.records
            while True:  # drain in bounded batches until the ring is empty
                before = reader.records
                records: Iterator[memoryview | bytes] = reader.drain(8 << 20)
                for chunk in _chunks(records, STEP_RECORDS):
                    self.step(chunk, decoder, pipeline)
                # an endless burst must not starve the once-a-second work (drop counters,
                # FIM ticks): it runs between batches at least that often; a stop drains all
                if reader.records == before or (
                        not stopping and time.monotonic() >= next_stats):
                    break
            if reader.records == first:
                self.stats.idle()   # nothing came: nothing waits (the lag of a batch stays)
            self.notifier.watchdog()
            if self._fim is not None:
                self._emit(self._fim.tick(time.time_ns()))
                for link in self._fim.take_symlinks():
                    if (target := resolve(link)) is not None:
                        w.add_alias(Alias(link, target, "baseline"))
            if health is not None and not stopping:
                now = time.monotonic()
                self._emit(health.poll(now))
                if health.due(now):
                    health.start(now)
            if self._reload.is_set():
                self._reload.clear()
                self._apply_reload(pipeline)
            if self.detector is not None:
                self._emit(self.detector.close() if stopping
                           else self.detector.tick(time.time_ns()))
                self.summary.rules = self.detector.counters()
            now = time.monotonic()
            if stopping or now >= next_stats:
                self._check_drops(backend, {**pipeline.counts(), **decoder_counts(decoder)})
                next_stats = now + 1.0
            if stopping:
                return

    def step(self, records: Iterable[memoryview | bytes], decoder: Decoder,
             pipeline: Pipeline) -> None:
        """One batch of ring records through every user-space stage, each timed in
        ``self.stages``: decode -> pipeline (with the health check's and the marks' look) ->
        [ecs -> rules -> each output] -> fim -> [the same for its events]."""
        times, w, health = self.stages, self.watching, self.health
        t = times.clock()
        decoded = list(decoder.decode_batch(records))
        t = times.add("decode", t, len(decoded))
        w.new_batch()
        events = pipeline.process(decoded)
        if events:
            self.stats.handled(events[-1])
            if health is not None:
                events = health.observe(events)
        events = mark(events, w.own, w.sysctl)
        times.add("pipeline", t, len(events))
        if self.detector is not None and events:
            shown = [w.configured(e) for e in events]
            if not all(shown):
                self._emit(self.detector.process(
                    [e for e, ok in zip(events, shown, strict=True) if not ok]))
                events = [e for e, ok in zip(events, shown, strict=True) if ok]
        self._emit(events)
        if self._fim is not None and events:
            t = times.clock()
            changes = self._fim.handle(pipeline.baseline_events(events), time.time_ns())
            times.add("fim", t, len(events))
            self._emit(changes)

    def request_reload(self) -> None:
        """SIGHUP: read the configuration (and rules) again between two batches (signal-safe:
        sets a flag)."""
        self._reload.set()

    def _apply_reload(self, pipeline: Pipeline) -> None:
        """The configuration file read again and applied without a restart: the watch list
        (kernel entries added before old ones go: events keep flowing in the ring meanwhile),
        the policy, FIM's trees, and the rules. What only a restart changes is said."""
        if self._reload_config is None:
            return
        self.notifier.reloading()
        try:
            try:
                config, ruleset = self._reload_config()
            except VigilError as err:
                log.warning("reload refused, the running configuration stays: %s", err)
                return
            if ruleset is not None and ruleset.refused:
                for e in ruleset.refused:
                    log.warning("%s", e)
                log.warning("reload refused, the running configuration stays: %d rule(s) "
                            "refused", len(ruleset.refused))
                return
            for what in restart_needed(self.config, config):
                log.warning("reload: %s changed; that takes effect at the next start", what)
            old = self.config
            self.config = config
            added, removed = self.watching.apply(config)
            cut = truncated_paths(config)
            cut.reported, cut.outside = pipeline.truncated.reported, pipeline.truncated.outside
            pipeline.truncated = cut
            if self._fim is not None and fim_changed(old, config):
                self._fim.close()
                self._fim = FimService(config)
                self._fim.start()   # a startup scan: new trees baselined, changes reported
            if self.detector is not None and ruleset is not None:
                self._emit(self.detector.swap(ruleset))
                self.watching.watch_for_rules()
                self.watching.watch_own_files()
            print(f"vigil: configuration reloaded: {len(config.directories)} directories "
                  f"(kernel entries +{added} -{removed})"
                  + (f"; rules: {ruleset.describe()}" if ruleset is not None else ""),
                  file=sys.stderr, flush=True)
        finally:
            self.notifier.ready_again()

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
        times = self.stages
        batch = Batch(events, self._host)   # each ECS document rendered once for all readers
        if self.detector is not None:
            t = times.clock()
            batch.docs()   # the rules read them all (without rules, the sinks ask for theirs)
            t = times.add("ecs", t, len(batch))
            alerts = self.detector.process(batch)
            t = times.add("rules", t, len(batch))
            if alerts:
                batch = batch.extended(alerts)
        delivered = self.summary.delivered
        for ev in batch:
            delivered[type(ev).__name__.removesuffix("Event").lower()] += 1
            if type(ev) is Alert:
                self.stats.alerts[ev.rule.title, ev.rule.level] += 1
        for sink in self.sinks:
            t = times.clock()
            sink.emit(batch)
            times.add(f"output:{type(sink).__name__}", t, len(batch))

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
        lost += self._output_losses()
        if self._fim is not None:
            self.summary.baseline = self._fim.counters()
        if lost:
            for sink in self.sinks:
                sink.emit(lost)
        if rescan and self._fim is not None:
            self._fim.rescan_after_drops()

    def _output_losses(self) -> list[Event]:
        """Events an output had to drop since the last look (a syslog spool past its bound:
        the oldest go), as events-lost events of kind ``output:NAME`` for every output."""
        lost: list[Event] = []
        for name, stats in output_stats(self.sinks).items():
            dropped = int(stats.get("dropped", 0))
            new = dropped - self._output_drops.get(name, 0)
            if new > 0:
                self._output_drops[name] = dropped
                log.warning("output %s dropped %d events (its spool is full)", name, new)
                lost.append(LostEvents(time.time_ns(), f"output:{name}", new))
        return lost

    def _stopping(self) -> None:
        if not self._said_stopping:
            self._said_stopping = True
            self.notifier.stopping()

    @property
    def backend(self) -> KernelBackend | None:
        return self._backend

    def stop(self) -> None:
        self.stop_event.set()
