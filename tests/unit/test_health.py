"""The health check's steps and verdicts (vigil.health): a real forked child makes the four
real changes; the events that would come back from the kernel are built here (the agent's
end-to-end run of the same check is tests/kernel/test_health_agent.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from vigil.config.model import HealthConfig
from vigil.events.model import ExitEvent, FileEvent, FileOp, Process
from vigil.health import STEPS, HealthCheck, HealthResult
from vigil.outputs.ecs_alert import alert_to_ecs


def proc(pid: int) -> Process:
    return Process(pid=pid, tid=pid, ppid=os.getpid(), start_time=5, parent_start_time=1,
                   uid=0, gid=0, euid=0, egid=0, auid=0, session_id=1, comm=b"vigil",
                   cgroup_id=0, mnt_ns=0)


def started(tmp_path: Path, timeout: int = 10) -> tuple[HealthCheck, list[HealthResult]]:
    results: list[HealthResult] = []
    hc = HealthCheck(HealthConfig(interval=60, timeout=timeout), tmp_path / "health",
                     results.append)
    hc.prepare()
    assert hc.due(time.monotonic())
    hc.start(time.monotonic())
    assert hc.running
    return hc, results


def wait_child_done(hc: HealthCheck) -> None:
    """The child's changes are made once the file is gone (bounded wait)."""
    deadline = time.monotonic() + 10
    while any(hc.directory.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_four_events_pass_and_are_taken_out_of_the_stream(tmp_path: Path) -> None:
    hc, results = started(tmp_path)
    wait_child_done(hc)
    assert list(hc.directory.iterdir()) == []      # the child made and removed its file
    child = hc._child
    path = hc._path
    other = FileEvent(1, FileOp.CREATE, b"/etc/passwd", proc(123))
    stranger = FileEvent(1, FileOp.CREATE, path, proc(child + 1))   # not the check's pid
    events = [other, stranger] + [FileEvent(2, op, path, proc(child)) for op in STEPS]
    assert hc.observe(events) == [other]
    assert hc.poll(time.monotonic()) == []
    # the child's exit, even after the verdict, is the check's own; another's is not
    other_exit = ExitEvent(3, proc(child + 1), 0)
    assert hc.observe([ExitEvent(3, proc(child), 0), other_exit]) == [other_exit]
    (r,) = results
    assert r.ok and list(r.latency) == ["created", "modified", "mode-changed", "deleted"]
    assert "passed" in r.describe() and hc.passed == 1 and not hc.running
    # the next check is due after the interval, not before
    assert not hc.due(time.monotonic()) and hc.due(time.monotonic() + 61)


def test_missing_events_fail_with_an_alert(tmp_path: Path) -> None:
    hc, results = started(tmp_path, timeout=1)
    wait_child_done(hc)
    child, path = hc._child, hc._path
    hc.observe([FileEvent(2, FileOp.CREATE, path, proc(child)),
                FileEvent(2, FileOp.DELETE, path, proc(child))])
    assert hc.poll(time.monotonic()) == []          # still within the timeout
    (alert,) = hc.poll(time.monotonic() + 2)
    (r,) = results
    assert not r.ok and r.missing == ("modified", "mode-changed")
    doc = alert_to_ecs(alert)
    assert doc["rule"]["id"] == "vigil-health-check" and doc["event"]["kind"] == "alert"
    assert doc["vigil"]["health"]["missing"] == ["modified", "mode-changed"]
    assert doc["event"]["dataset"] == "vigil.health" and hc.failed == 1


def test_a_child_that_cannot_make_its_changes_fails_at_once(tmp_path: Path) -> None:
    results: list[HealthResult] = []
    hc = HealthCheck(HealthConfig(timeout=30), tmp_path / "health", results.append)
    hc.prepare()
    hc.directory.rmdir()            # gone: the child's create fails
    hc.start(time.monotonic())
    deadline = time.monotonic() + 10
    alerts = []
    while not alerts and time.monotonic() < deadline:   # long before the 30 s timeout
        alerts = hc.poll(time.monotonic())
        time.sleep(0.01)
    assert len(alerts) == 1 and not results[-1].ok
    assert results[-1].error is not None and "could not change files" in results[-1].describe()


def test_prepare_removes_a_previous_runs_leftovers(tmp_path: Path) -> None:
    d = tmp_path / "health"
    d.mkdir()
    (d / "check-1-2").write_text("left by a killed agent")
    (d / "keep").write_text("not ours")
    HealthCheck(HealthConfig(), d).prepare()
    assert sorted(p.name for p in d.iterdir()) == ["keep"]
    assert d.stat().st_mode & 0o777 == 0o700
