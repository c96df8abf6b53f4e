"""vigil.metrics: one snapshot -> metric families (read back through prometheus_client's own
parsers, text and OpenMetrics), the endpoint's life (start, scrape, close) and its errors."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from vigil import __version__
from vigil.config.model import MetricsConfig
from vigil.kernel.errors import VigilError
from vigil.metrics import Metrics, MetricsError, Snapshot, lost_per_kind

ODD = 'rule "quoted" \\ back\nslash — ünïcode'

FULL = Snapshot(
    events={"file": 120, "exec": 7, "exit": 6, "alert": 2},
    lost={"file": 3, "exec": 0},
    ring_fill=0.25,
    pipeline_lag_seconds=0.004,
    alerts={("Shadow file read", "high"): 2, (ODD, "low"): 1},
    spool_bytes={"syslog:tcp://127.0.0.1:514": 4096},
    output_dropped={"syslog:tcp://127.0.0.1:514": 5},
    process_table_size=321,
    backend="lsm",
    event_buffer="ring",
    rules_loaded=42,
    health_ok=True,
    health_checked_at=1_700_000_100.5,
    health_failures=1,
    started_at=1_700_000_000.0,
)


def samples(text: str, openmetrics: bool = False) -> dict[tuple[str, frozenset[tuple[str, str]]],
                                                            float]:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in parse(text) for s in fam.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


@pytest.fixture
def served() -> Iterator[tuple[Metrics, list[Snapshot]]]:
    """A running endpoint on a free port whose snapshot is the last of a list the test
    appends to."""
    feed = [FULL]
    m = Metrics(MetricsConfig(port=0), lambda: feed[-1])
    m.start()
    try:
        yield m, feed
    finally:
        m.close()


def scrape(m: Metrics, accept: str | None = None) -> str:
    req = urllib.request.Request(m.url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def test_every_field_of_a_snapshot_is_exposed(served: tuple[Metrics, list[Snapshot]]) -> None:
    m, _ = served
    found = samples(scrape(m))
    assert value(found, "vigil_events_total", kind="file") == 120
    assert value(found, "vigil_events_total", kind="alert") == 2
    assert value(found, "vigil_events_lost_total", kind="file") == 3
    assert value(found, "vigil_events_lost_total", kind="exec") == 0
    assert value(found, "vigil_ring_buffer_fill_ratio") == 0.25
    assert value(found, "vigil_pipeline_lag_seconds") == 0.004
    assert value(found, "vigil_alerts_total", rule="Shadow file read", level="high") == 2
    assert value(found, "vigil_output_spool_bytes", output="syslog:tcp://127.0.0.1:514") == 4096
    assert value(found, "vigil_output_dropped_total", output="syslog:tcp://127.0.0.1:514") == 5
    assert value(found, "vigil_process_table_size") == 321
    assert value(found, "vigil_rules_loaded") == 42
    assert value(found, "vigil_health_check_ok") == 1
    assert value(found, "vigil_health_check_last_timestamp_seconds") == 1_700_000_100.5
    assert value(found, "vigil_health_check_failures_total") == 1
    assert value(found, "vigil_start_time_seconds") == 1_700_000_000.0
    assert abs(value(found, "vigil_uptime_seconds") - (time.time() - 1_700_000_000)) < 600
    assert value(found, "vigil_build_info", version=__version__, backend="lsm",
                 event_buffer="ring") == 1
    assert value(found, "vigil_metrics_snapshot_errors_total") == 0
    # the agent process itself, from prometheus_client's ProcessCollector
    assert value(found, "process_resident_memory_bytes") > 1 << 20
    assert ("process_cpu_seconds_total", frozenset()) in found


def test_label_values_with_quotes_backslashes_and_newlines_survive(
        served: tuple[Metrics, list[Snapshot]]) -> None:
    m, _ = served
    text = scrape(m)
    assert value(samples(text), "vigil_alerts_total", rule=ODD, level="low") == 1
    # one sample per line: the newline of the title is escaped, not written
    assert sum(ln.startswith("vigil_alerts_total{") for ln in text.splitlines()) == 2


def test_openmetrics_for_a_scraper_that_asks_for_it(
        served: tuple[Metrics, list[Snapshot]]) -> None:
    m, _ = served
    text = scrape(m, "application/openmetrics-text; version=1.0.0")
    assert text.rstrip().endswith("# EOF")
    found = samples(text, openmetrics=True)
    assert value(found, "vigil_events_total", kind="exec") == 7
    assert value(found, "vigil_alerts_total", rule=ODD, level="low") == 1
    assert value(found, "vigil_build_info", version=__version__, backend="lsm",
                 event_buffer="ring") == 1


def test_each_scrape_takes_a_new_snapshot(served: tuple[Metrics, list[Snapshot]]) -> None:
    m, feed = served
    assert value(samples(scrape(m)), "vigil_events_total", kind="file") == 120
    feed.append(Snapshot(events={"file": 500}, health_ok=False))
    found = samples(scrape(m))
    assert value(found, "vigil_events_total", kind="file") == 500
    assert value(found, "vigil_health_check_ok") == 0


def test_unknown_values_are_left_out_not_zero() -> None:
    with Metrics(MetricsConfig(port=0), Snapshot) as m:
        found = samples(scrape(m))
    names = {name for name, _ in found}
    for absent in ("vigil_ring_buffer_fill_ratio", "vigil_pipeline_lag_seconds",
                   "vigil_process_table_size", "vigil_rules_loaded", "vigil_health_check_ok",
                   "vigil_health_check_last_timestamp_seconds", "vigil_uptime_seconds",
                   "vigil_events_total"):
        assert absent not in names, absent
    assert value(found, "vigil_health_check_failures_total") == 0


def test_a_failing_snapshot_costs_its_scrape_not_the_endpoint() -> None:
    calls = [0]

    def flaky() -> Snapshot:
        calls[0] += 1
        if calls[0] == 1:
            raise KeyError("oops")
        return FULL

    with Metrics(MetricsConfig(port=0), flaky) as m:
        first = samples(scrape(m))
        second = samples(scrape(m))
    assert value(first, "vigil_metrics_snapshot_errors_total") == 1
    assert not any(name == "vigil_events_total" for name, _ in first)
    assert ("process_resident_memory_bytes", frozenset()) in first
    assert value(second, "vigil_metrics_snapshot_errors_total") == 1
    assert value(second, "vigil_events_total", kind="file") == 120


def test_close_frees_the_port() -> None:
    m = Metrics(MetricsConfig(port=0), Snapshot)
    m.start()
    port = m.port
    assert port != 0
    m.close()
    m.close()  # idempotent
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_disabled_serves_nothing() -> None:
    m = Metrics(MetricsConfig(enabled=False, port=0), Snapshot)
    m.start()
    assert m.port == 0
    m.close()


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        m = Metrics(MetricsConfig(port=port), Snapshot)
        with pytest.raises(MetricsError) as err:
            m.start()
    assert isinstance(err.value, VigilError)
    assert str(err.value) == (
        f"metrics: cannot serve on 127.0.0.1:{port}: the port is already in use (another "
        "Vigil or exporter?); set metrics.port to a free port, or metrics: false")
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.parametrize("address, says", [
    ("no-such-host.invalid", "unknown address"),
    ("192.0.2.1", "the address is not one of this host's; set metrics.address"),
])
def test_bad_address_is_a_clear_error(address: str, says: str) -> None:
    m = Metrics(MetricsConfig(address=address, port=0), Snapshot)
    with pytest.raises(MetricsError, match=f"metrics: cannot serve on {address}:0: {says}"):
        m.start()


def test_ipv6_loopback() -> None:
    with Metrics(MetricsConfig(address="::1", port=0), lambda: FULL) as m:
        assert m.url == f"http://[::1]:{m.port}/metrics"
        assert value(samples(scrape(m)), "vigil_events_total", kind="exec") == 7


def test_lost_per_kind_names_every_kind_as_events_lost_events_do() -> None:
    lost = lost_per_kind({"drop_file": 4, "inflight_full": 2, "malformed": 1, "other": 9})
    assert lost["file"] == 4 and lost["inflight"] == 2 and lost["malformed"] == 1
    assert lost["exec"] == 0 and lost["net"] == 0
    assert "other" not in lost and "drop_file" not in lost
