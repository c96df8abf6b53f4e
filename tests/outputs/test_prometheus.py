"""vigil.metrics scraped by a real Prometheus (Debian's package): the series a user would query
in Prometheus carry the values the agent's snapshot had, labels with odd text included, and
follow the snapshot as it changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_proc import PrometheusProc, by_label, value

from vigil import __version__
from vigil.config.model import MetricsConfig
from vigil.metrics import Metrics, Snapshot

ODD_RULE = 'Odd "rule" \\ with\nnewline — ünïcode'
FED = Snapshot(
    events={"file": 120, "exec": 7, "exit": 6, "alert": 3},
    lost={"file": 2, "exec": 0, "net": 0},
    ring_fill=0.125,
    pipeline_lag_seconds=0.5,
    alerts={("Shadow read", "high"): 2, (ODD_RULE, "low"): 1},
    spool_bytes={"syslog-tcp": 2048},
    output_dropped={"syslog-tcp": 4},
    process_table_size=250,
    backend="fentry",
    event_buffer="ring",
    rules_loaded=17,
    health_ok=True,
    health_checked_at=1_700_000_100.0,
    health_failures=0,
    started_at=1_700_000_000.0,
)


@pytest.fixture
def scraped() -> Iterator[tuple[PrometheusProc, list[Snapshot]]]:
    """An endpoint fed by the last snapshot of a list, and a Prometheus scraping it."""
    feed = [FED]
    metrics = Metrics(MetricsConfig(port=0), lambda: feed[-1])
    metrics.start()
    try:
        with PrometheusProc(metrics.port) as prom:
            yield prom, feed
    finally:
        metrics.close()


def test_prometheus_scrapes_every_series(
        scraped: tuple[PrometheusProc, list[Snapshot]]) -> None:
    prom, _ = scraped
    prom.wait_query('vigil_events_total{kind="file"}')
    target = prom.target_health()
    assert target["health"] == "up" and target["lastError"] == "", target

    assert by_label(prom.query("vigil_events_total"), "kind") == {
        "file": 120, "exec": 7, "exit": 6, "alert": 3}
    assert by_label(prom.query("vigil_events_lost_total"), "kind") == {
        "file": 2, "exec": 0, "net": 0}
    alerts = {(s["metric"]["rule"], s["metric"]["level"]): value(s)
              for s in prom.query("vigil_alerts_total")}
    assert alerts == {("Shadow read", "high"): 2, (ODD_RULE, "low"): 1}
    assert by_label(prom.query("vigil_output_spool_bytes"), "output") == {"syslog-tcp": 2048}
    assert by_label(prom.query("vigil_output_dropped_total"), "output") == {"syslog-tcp": 4}
    single = {
        "vigil_ring_buffer_fill_ratio": 0.125,
        "vigil_pipeline_lag_seconds": 0.5,
        "vigil_process_table_size": 250,
        "vigil_rules_loaded": 17,
        "vigil_health_check_ok": 1,
        "vigil_health_check_last_timestamp_seconds": 1_700_000_100,
        "vigil_health_check_failures_total": 0,
        "vigil_start_time_seconds": 1_700_000_000,
    }
    for name, want in single.items():
        [s] = prom.query(name)
        assert value(s) == want, name
    [info] = prom.query("vigil_build_info")
    assert {k: info["metric"][k] for k in ("version", "backend", "event_buffer")} == {
        "version": __version__, "backend": "fentry", "event_buffer": "ring"}
    # this process's memory and CPU, through prometheus_client's ProcessCollector
    [rss] = prom.query('process_resident_memory_bytes{job="vigil"}')
    assert value(rss) > 1 << 20
    assert prom.query('process_cpu_seconds_total{job="vigil"}')
    # what a dashboard would compute from them
    [uptime] = prom.query("time() - vigil_start_time_seconds")
    assert value(uptime) > 0


def test_prometheus_follows_the_snapshot(
        scraped: tuple[PrometheusProc, list[Snapshot]]) -> None:
    prom, feed = scraped
    prom.wait_query('vigil_events_total{kind="file"} == 120')
    feed.append(Snapshot(events={"file": 900, "exec": 7}, health_ok=False, health_failures=1,
                         backend="fentry", event_buffer="ring"))
    [s] = prom.wait_query('vigil_events_total{kind="file"} == 900')
    assert value(s) == 900
    [ok] = prom.wait_query("vigil_health_check_ok == 0")
    assert value(ok) == 0
    [failed] = prom.query("vigil_health_check_failures_total")
    assert value(failed) == 1
    # a gauge the agent no longer knows disappears from Prometheus (stale), not kept at 0.125
    prom.wait_query("absent(vigil_ring_buffer_fill_ratio)")
