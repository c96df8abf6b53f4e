"""``vigil doctor --live``: the end-to-end health check (vigil.health) run now, on demand.

Owns running a short agent whose only job is one check: the kernel side loaded as
``vigil run`` would load it (same configuration, same backend choice), no outputs, no rules,
no baseline, no metrics endpoint; it stops as soon as the check has a verdict.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from vigil.config import Config
from vigil.health import HealthResult

log = logging.getLogger(__name__)


def live_check(config: Config, backend: str | None = None) -> HealthResult | None:
    """One health check against a freshly loaded kernel side; None if it never finished."""
    from vigil.agent import Agent

    cfg = replace(config, health=replace(config.health, enabled=True, interval=0),
                  metrics=replace(config.metrics, enabled=False))
    results: list[HealthResult] = []

    def on_health(result: HealthResult) -> None:
        results.append(result)
        agent.stop()

    agent = Agent(cfg, [], fim=False, backend=backend, on_health=on_health)
    agent.run(duration=float(cfg.health.timeout) + 120.0)
    return results[0] if results else None
