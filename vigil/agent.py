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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vigil.config import Config
from vigil.enrich.process import ProcessTable
from vigil.enrich.users import NameCache
from vigil.events.layout import Clock, Decoder
from vigil.events.model import Event, FileEvent, LostEvents
from vigil.events.pipeline import TRUNCATED, TWO_PATHS, Pipeline
from vigil.events.truncated import TruncatedPaths
from vigil.fim.policy import Policy
from vigil.fim.service import FimService
from vigil.kernel.backend import BackendSettings, KernelBackend, start_backend
from vigil.kernel.errors import VigilError
from vigil.outputs.base import Output, Sink
from vigil.outputs.batch import Batch
from vigil.outputs.ecs import host_fields
from vigil.rules.detector import Detector
from vigil.rules.ruleset import RuleSet
from vigil.rules.watchpaths import WatchPath, watch_paths
from vigil.watchlist import (
    Alias,
    AliasSet,
    kernel_watch_paths,
    realtime_roots,
    resolve,
    static_aliases,
)

log = logging.getLogger(__name__)

# Counters that mean "an event may be missing". Each new loss becomes an events-lost event (its
# kind: the counter's name less drop_ and _full), a warning, and a rescan of the watched trees.
# The kernel side: failed ring reserves by kind; file syscalls, VFS captures or io_uring requests
# not followed because their map (inflight, pending, uring_*) was full; write-opens not tracked
# (wfiles_full: their "modified" never comes); entries its LRU maps evicted (wfiles: a write-open
# whose "modified" is lost; uring_reqs: an io_uring request whose event is lost; counted exactly,
# vigil.kernel.lru); with the perf event buffer also samples perf lost that the BPF side could not
# count (4.x kernels: no kind).
KERNEL_DROP_KINDS = ("drop_file", "drop_exec", "drop_exit", "inflight_full", "wfiles_full",
                     "wfiles_evicted", "uring_reqs_evicted", "drop_net", "net_conns_full",
                     "net_rate", "drop_unknown")
# Losses of network events only: no rescan of the watched trees finds them.
NET_DROP_KINDS = frozenset({"drop_net", "net_conns_full", "net_rate"})
_NET_LOST = frozenset(_k.removeprefix("drop_").removesuffix("_full") for _k in NET_DROP_KINDS)
# User space: records the decoder could not read (short, or of an unknown kind or operation);
# write-opens the pipeline stopped following beyond MAX_OPEN_FILES (a "modified" at the exit of
# the process holding it is lost).
USER_DROP_KINDS = ("malformed", "open_files_evicted")
DROP_KINDS = KERNEL_DROP_KINDS + USER_DROP_KINDS
# Work done in part, no event missing: events whose path the kernel cut (reported with
# vigil.file.path_truncated; the rescan they start lets the baseline learn the real path), and
# /proc reads that failed (who-data without executable or command line). In the summary.
PARTIAL_KINDS = ("path_truncated", "proc_read_failed")
RESCAN_KINDS = ("path_truncated",)


def _kind(counter: str) -> str:
    return counter.removeprefix("drop_").removesuffix("_full")


@dataclass
class RunSummary:
    delivered: Counter[str] = field(default_factory=Counter)
    drops: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    baseline: dict[str, int] = field(default_factory=dict)  # FimService.counters(), when on
    rules: dict[str, int] = field(default_factory=dict)     # Detector.counters(), when on

    @property
    def dropped(self) -> int:
        """Lost by the kernel side."""
        return sum(self.drops.get(k, 0) for k in KERNEL_DROP_KINDS)

    @property
    def lost_in_user_space(self) -> int:
        return sum(self.drops.get(k, 0) for k in USER_DROP_KINDS)

    def _counts(self, kinds: Sequence[str]) -> str:
        return ", ".join(f"{_kind(k)} {self.drops.get(k, 0)}" for k in kinds
                         if k != "drop_unknown" or self.drops.get(k))

    def line(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.delivered.items())) or "none"
        return (f"vigil: {sum(self.delivered.values())} events delivered ({kinds}) in "
                f"{self.seconds:.1f}s; {self.dropped} dropped by the kernel side "
                f"({self._counts(KERNEL_DROP_KINDS)}); {self.lost_in_user_space} lost in user "
                f"space ({self._counts(USER_DROP_KINDS)}); incomplete "
                f"({self._counts(PARTIAL_KINDS)})"
                + ("; baseline (" + ", ".join(f"{k} {n}" for k, n in self.baseline.items()) + ")"
                   if self.baseline else "")
                + ("; rules (" + ", ".join(f"{k} {n}" for k, n in self.rules.items()) + ")"
                   if self.rules else "")
                # left out on purpose (the network section's excluded ports and networks):
                # no loss, but said
                + (f"; left out by the network filters {self.drops['net_filtered']}"
                   if self.drops.get("net_filtered") else ""))


def _decoder_counts(decoder: Decoder) -> dict[str, int]:
    """Records the decoder could not read, all reasons together."""
    return {"malformed": sum(decoder.malformed.values())}


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
        )
        self._obj_path = obj_path
        self._backend_name = backend  # None or "auto": the best that runs here
        self._backend: KernelBackend | None = None
        self.summary = RunSummary()
        self.aliases = AliasSet(config)

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
        if self.detector is None:
            return False
        return self._policy.directory_for(path) is not None \
            or any(w.covers(path) for w in self._rule_paths)

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
        rules only (a rule's watch-only path, an ignored name)."""
        if not isinstance(ev, FileEvent) or ev.flags & TRUNCATED or self._reported(ev.path):
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
        with self._backend as backend:
            for alias in static_aliases(self.config):
                self.aliases.add(alias)
            self._watch_for_rules(None)
            n = backend.set_watches(kernel_watch_paths(self.config) + [
                a.link for a in self.aliases.aliases()] + [w.directory for w in self._rule_paths])
            procs = ProcessTable()
            procs.load_from_proc()
            pipeline = Pipeline(self._is_watched, procs, NameCache(), backend.forget_open_file,
                                report_processes=self.config.exec_events,
                                watch_alias=self._new_link,
                                closes_at_exit=backend.name == "tracepoint",
                                truncated=TruncatedPaths(
                                    d.path for d in self.config.directories if d.realtime),
                                unix_watched=self._unix_watched)
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
                events = pipeline.process(decoder.decode_batch(reader.drain(8 << 20)))
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
                self._check_drops(backend, {**pipeline.counts(), **_decoder_counts(decoder)})
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
        print(f"vigil: rules reloaded: {ruleset.describe()}", file=sys.stderr, flush=True)

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
                log.warning("%s lost %d %s events", where, new, _kind(kind))
                lost.append(LostEvents(time.time_ns(), _kind(kind), new))
        rescan = any(e.kind not in _NET_LOST for e in lost if isinstance(e, LostEvents))
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
