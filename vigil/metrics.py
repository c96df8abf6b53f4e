"""Prometheus metrics: what the agent knows, read at scrape time, served over HTTP.

Owns the ``Snapshot`` (the numbers the agent hands over: events delivered and lost per kind,
the ring buffer's fill, the pipeline's lag, alerts per rule, the outputs' spools, the health
check...), the collector that turns one snapshot into metric families on a private registry,
and the HTTP endpoint (``Metrics``: start, close) on the ``metrics:`` section's address.

Nothing is counted per event here: the agent keeps its own counters, and a scrape calls the
agent's snapshot function once, from the HTTP server's thread. That function must therefore be
thread-safe and cheap; the simplest is to return the last ``Snapshot`` the agent built (an
immutable value swapped by one assignment), and to copy dicts the agent keeps mutating.
Resident memory, CPU time and open files come from prometheus_client's ``ProcessCollector``
(the standard ``process_*`` names).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from vigil import __version__
from vigil.config.model import MetricsConfig
from vigil.kernel.errors import VigilError
from vigil.losses import DROP_KINDS, kind_of

log = logging.getLogger(__name__)

__all__ = ["Metrics", "MetricsError", "Snapshot", "SnapshotCollector", "lost_per_kind"]


@dataclass(frozen=True)
class Snapshot:
    """What the agent knows at one moment. Every field has a neutral default, so an agent
    fills what it has; ``None`` means "not known", and its metric is left out of the scrape
    rather than reported as 0.

    ``events``: events delivered to the outputs per kind (file, exec, exit, network, privilege,
    tampering, shell, fim, alert, ...); ``lost``: events lost per kind (``lost_per_kind`` turns
    the agent's drop counters into these); ``ring_fill``: the event buffer's fill, 0..1;
    ``pipeline_lag_seconds``: at the last batch, the time it was handled less the kernel time
    of its newest event; ``alerts``: (rule, level) -> alerts raised; ``spool_bytes`` and
    ``output_dropped``: per output name, the bytes waiting in its spool and the events it
    dropped; ``health_ok``: the last health check's result (None: none ran yet);
    ``health_checked_at``: when it ran (Unix time); ``started_at``: the agent's start (Unix
    time).
    """

    events: Mapping[str, int] = field(default_factory=dict)
    lost: Mapping[str, int] = field(default_factory=dict)
    ring_fill: float | None = None
    pipeline_lag_seconds: float | None = None
    alerts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    spool_bytes: Mapping[str, int] = field(default_factory=dict)
    output_dropped: Mapping[str, int] = field(default_factory=dict)
    process_table_size: int | None = None
    backend: str = ""
    event_buffer: str = ""
    rules_loaded: int | None = None
    health_ok: bool | None = None
    health_checked_at: float | None = None
    health_failures: int = 0
    started_at: float | None = None


def lost_per_kind(drops: Mapping[str, int]) -> dict[str, int]:
    """The agent's loss counters (``RunSummary.drops``: drop_file, inflight_full, malformed,
    ...) as ``Snapshot.lost``: keyed by the kind events-lost events name (file, inflight, ...),
    every known kind present, 0 when nothing was lost."""
    out: dict[str, int] = {}
    for counter in DROP_KINDS:
        kind = kind_of(counter)
        out[kind] = out.get(kind, 0) + drops.get(counter, 0)
    return out


class MetricsError(VigilError):
    """The metrics endpoint cannot be served (its address is taken, unknown, or forbidden)."""


class SnapshotCollector(Collector):
    """A custom collector: each scrape takes one snapshot and describes it. A snapshot function
    that fails costs that scrape's Vigil metrics (logged, counted), never the endpoint."""

    def __init__(self, snapshot: Callable[[], Snapshot],
                 clock: Callable[[], float] = time.time) -> None:
        self._snapshot = snapshot
        self._clock = clock
        self._errors = 0
        self._lock = threading.Lock()   # scrapes may overlap (a thread per request)

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self._snapshot()
        except Exception as err:  # any failure of the agent's side, reported
            with self._lock:
                self._errors += 1
            log.warning("metrics: the agent's snapshot failed: %s: %s",
                        type(err).__name__, err)
            snap = None
        errors = CounterMetricFamily(
            "vigil_metrics_snapshot_errors",
            "Scrapes whose snapshot of the agent failed (their vigil_* metrics are missing).")
        errors.add_metric([], self._errors)
        yield errors
        if snap is not None:
            yield from describe(snap, self._clock())


def _counter(name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
    fam = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(values.items()):
        fam.add_metric([str(key)], n)
    return fam


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(name, doc, value=float(value))


def describe(snap: Snapshot, now: float) -> Iterator[Metric]:
    """The metric families of one snapshot, ``now`` (Unix time) for the uptime."""
    yield InfoMetricFamily("vigil_build", "Vigil's version and the kernel backend it runs.",
                           value={"version": __version__, "backend": snap.backend,
                                  "event_buffer": snap.event_buffer})
    yield _counter("vigil_events", "Events delivered to the outputs, by kind.", "kind",
                   snap.events)
    yield _counter("vigil_events_lost", "Events lost (kernel side or user space), by kind.",
                   "kind", snap.lost)
    yield from _gauge("vigil_ring_buffer_fill_ratio",
                      "Share of the kernel's event buffer written and not yet read (0..1).",
                      snap.ring_fill)
    yield from _gauge("vigil_pipeline_lag_seconds",
                      "At the last batch: its handling time less its newest event's time.",
                      snap.pipeline_lag_seconds)
    alerts = CounterMetricFamily("vigil_alerts", "Alerts raised, by rule and level.",
                                 labels=["rule", "level"])
    for (rule, level), n in sorted(snap.alerts.items()):
        alerts.add_metric([str(rule), str(level)], n)
    yield alerts
    spool = GaugeMetricFamily("vigil_output_spool_bytes",
                              "Bytes waiting in an output's on-disk spool.", labels=["output"])
    for name, n in sorted(snap.spool_bytes.items()):
        spool.add_metric([str(name)], n)
    yield spool
    yield _counter("vigil_output_dropped", "Events an output dropped (its spool full).",
                   "output", snap.output_dropped)
    yield from _gauge("vigil_process_table_size", "Processes in the agent's process table.",
                      snap.process_table_size)
    yield from _gauge("vigil_rules_loaded", "Detection rules loaded.", snap.rules_loaded)
    yield from _gauge("vigil_health_check_ok",
                      "1 when the last end-to-end health check passed, 0 when it failed.",
                      None if snap.health_ok is None else int(snap.health_ok))
    yield from _gauge("vigil_health_check_last_timestamp_seconds",
                      "When the last health check ran (Unix time).", snap.health_checked_at)
    failures = CounterMetricFamily("vigil_health_check_failures", "Health checks that failed.")
    failures.add_metric([], snap.health_failures)
    yield failures
    yield from _gauge("vigil_start_time_seconds", "When the agent started (Unix time).",
                      snap.started_at)
    yield from _gauge("vigil_uptime_seconds", "Seconds since the agent started.",
                      None if snap.started_at is None else max(now - snap.started_at, 0.0))


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on the agent's stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Metrics:
    """The ``/metrics`` endpoint of one agent: ``start()`` serves it on a daemon thread,
    ``close()`` stops it. With ``metrics: false`` both do nothing."""

    def __init__(self, config: MetricsConfig, snapshot: Callable[[], Snapshot]) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(snapshot))
        ProcessCollector(registry=self.registry)
        self._httpd: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port served (the real one when the config asked for port 0)."""
        if self._httpd is None:
            return self.config.port
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/metrics"

    def start(self) -> None:
        if not self.config.enabled or self._httpd is not None:
            return
        address, port = self.config.address, self.config.port
        where = f"metrics: cannot serve on {address}:{port}"
        try:
            family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
        except socket.gaierror as err:
            raise MetricsError(f"{where}: unknown address ({err.strerror}); set "
                               "metrics.address to an address of this host") from None

        class Server(ThreadingWSGIServer):
            address_family = family

        try:
            httpd = make_server(address, port, make_wsgi_app(self.registry), Server,
                                handler_class=_QuietHandler)
        except OSError as err:
            raise MetricsError(f"{where}: {_bind_hint(err)}") from None
        thread = threading.Thread(target=httpd.serve_forever, name="vigil-metrics",
                                  daemon=True)
        thread.start()
        self._httpd, self._thread = httpd, thread
        log.info("metrics on %s", self.url)

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Metrics:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bind_hint(err: OSError) -> str:
    if err.errno == errno.EADDRINUSE:
        return ("the port is already in use (another Vigil or exporter?); set metrics.port "
                "to a free port, or metrics: false")
    if err.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this host's; set metrics.address"
    if err.errno == errno.EACCES:
        return "permission denied for this port"
    return err.strerror or str(err)
