"""The real agent's Prometheus endpoint, scraped by a real Prometheus: after file operations and
a program run in the watched directory, Prometheus's series say what the agent delivered (at
least every event the test received on the agent's stdout), which backend runs, and which
process answers (the agent's own start time and memory). A taken port is said in one line, and
the agent runs on without its endpoint."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import VIGIL, AgentProc, get, is_file_event, run_child, under, write_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "outputs"))
from prometheus_proc import PrometheusProc, by_label, free_port, value

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs the real eBPF agent"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="children use x86_64 syscalls"),
    pytest.mark.skipif(not VIGIL.exists(), reason=f"{VIGIL} missing: run ./do setup"),
]

FILES = 20


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="vigil-metrics-", dir="/var/tmp")).resolve()
    (root / "w").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start_time(pid: int) -> float:
    """A process's start (Unix time) as ProcessCollector computes it from /proc."""
    with open("/proc/stat") as f:
        btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    stat = Path(f"/proc/{pid}/stat").read_text()
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def test_prometheus_sees_what_the_agent_delivered(scratch: Path) -> None:
    watched = scratch / "w"
    port = free_port()
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(watched)}],
                       metrics={"port": port})
    agent = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db",
                      metrics=True).start()
    try:
        agent.probe(watched, timeout=60)
        backend = agent.running_backend()
        for i in range(FILES):
            (watched / f"f{i}").write_bytes(b"x" * i)
        for i in range(FILES):
            os.unlink(watched / f"f{i}")
        child = run_child(["/bin/true"])
        seen = agent.settle(watched, under(watched))
        assert len([e for e in seen if get(e, "event.action") == "deleted"]) == FILES
        file_events = len(agent.matching(is_file_event))
        assert file_events >= 2 * FILES
        agent.wait_for(lambda e: get(e, "event.action") == "exec"
                       and get(e, "process.pid") == child.pid)
        start = _start_time(agent.pid)
        # the alerts received so far (the default rules flag the hidden probe files, for one):
        # Prometheus starts after, so each of its scrapes counts at least these
        received = Counter((get(a, "rule.name"), get(a, "vigil.rule.level"))
                           for a in agent.wait_for(lambda _: True, count=0, alerts=True))

        with PrometheusProc(port) as prom:
            [files] = prom.wait_query(f'vigil_events_total{{kind="file"}} >= {file_events}')
            assert value(files) >= file_events
            target = prom.target_health()
            assert target["health"] == "up" and target["lastError"] == "", target
            [execs] = prom.query('vigil_events_total{kind="exec"}')
            assert value(execs) >= 1
            lost = by_label(prom.query("vigil_events_lost_total"), "kind")
            assert lost.get("file") == 0, lost
            [info] = prom.query("vigil_build_info")
            assert info["metric"]["backend"] == backend, info
            # alerts by rule and level: at least those the test received
            alerts = {(s["metric"]["rule"], s["metric"]["level"]): value(s)
                      for s in prom.query("vigil_alerts_total")}
            for key, n in received.items():
                assert alerts.get(key, 0) >= n, (key, n, alerts)
            [lag] = prom.query("vigil_pipeline_lag_seconds")
            assert value(lag) >= 0
            [procs] = prom.query("vigil_process_table_size")
            assert value(procs) > 0
            if os.environ.get("VIGIL_TEST_EVENT_BUFFER") != "perf":
                [fill] = prom.query("vigil_ring_buffer_fill_ratio")
                assert 0 <= value(fill) <= 1
            # the process that answers is the agent: its start time and its memory
            [started] = prom.query('process_start_time_seconds{job="vigil"}')
            assert abs(value(started) - start) < 0.05, (value(started), start)
            [rss] = prom.query('process_resident_memory_bytes{job="vigil"}')
            assert value(rss) > 10 << 20
    finally:
        rc, summary = agent.stop()
    assert rc == 0, "\n".join(agent.stderr_lines[-20:])
    assert summary is not None
    # the endpoint went with the agent
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_a_taken_port_is_said_and_the_agent_goes_on_without_metrics(scratch: Path) -> None:
    watched = scratch / "w"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(watched)}],
                           metrics={"port": port})
        agent = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db",
                          metrics=True).start()
        try:
            [line] = agent.wait_log("metrics:")
            assert line == (f"vigil: metrics: cannot serve on 127.0.0.1:{port}: the port is "
                            "already in use (another Vigil or exporter?); set metrics.port to "
                            "a free port, or metrics: false; no Prometheus endpoint this run")
            agent.probe(watched, timeout=60)   # detection goes on
        finally:
            rc, summary = agent.stop()
    assert rc == 0, "\n".join(agent.stderr_lines[-20:])
    assert summary is not None
    assert not any("Traceback" in ln for ln in agent.stderr_lines), agent.stderr_lines
