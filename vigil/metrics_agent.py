"""The running agent as a metrics ``Snapshot`` (vigil.metrics): what it delivered and lost,
its ring, its lag, its alerts, its outputs' spools, its process table, its health check.

Owns the translation only, called from the metrics thread at each scrape: reads of counters
the agent's thread keeps (copies of dicts, no locks on the hot path).
"""

from __future__ import annotations

from collections.abc import Callable

from vigil.agent import Agent
from vigil.metrics import Snapshot, lost_per_kind
from vigil.outputs.base import output_stats

# RunSummary.delivered's keys (event class names) -> the kind label users read
_KINDS = {"net": "network", "cred": "privilege", "sec": "tampering",
          "lostevents": "events-lost"}


def snapshot_of(agent: Agent) -> Callable[[], Snapshot]:
    def snapshot() -> Snapshot:
        s = agent.summary
        events = {_KINDS.get(k, k): n for k, n in list(s.delivered.items())}
        backend = agent.backend
        health = agent.health
        last = health.last if health is not None else None
        outputs = output_stats(agent.sinks)
        return Snapshot(
            events=events, lost=lost_per_kind(dict(s.drops)),
            ring_fill=agent.stats.ring_fill(),
            pipeline_lag_seconds=agent.stats.lag,
            alerts=dict(agent.stats.alerts),
            spool_bytes={k: int(st.get("spool_bytes", 0)) for k, st in outputs.items()},
            output_dropped={k: int(st.get("dropped", 0)) for k, st in outputs.items()},
            process_table_size=agent.stats.process_count(),
            backend=backend.name if backend is not None else "",
            event_buffer=backend.event_buffer if backend is not None else "",
            rules_loaded=s.rules.get("rules") if agent.detector is not None else None,
            health_ok=None if last is None else last.ok,
            health_checked_at=None if last is None else last.started_ns / 1e9,
            health_failures=health.failed if health is not None else 0,
            started_at=agent.stats.started)
    return snapshot
