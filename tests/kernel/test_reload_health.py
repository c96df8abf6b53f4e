"""The running agent, changed and checked without a restart: its configuration read again on
SIGHUP (a directory added to and another removed from the watch list, with no event lost
while a writer keeps going in a directory on both lists), and the end-to-end health check
(the four changes come back; its own events never reach the outputs; ``vigil doctor --live``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import VIGIL, AgentProc, get, scaled, under, write_config

pytestmark = [pytest.mark.root]


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-reload-", dir="/var/tmp")).resolve()
    for sub in ("a", "b", "probe"):
        (d / sub).mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def config(scratch: Path, dirs: list[str], **extra: object) -> Path:
    return write_config(scratch / "vigil.yaml", scratch,
                        [{"path": str(scratch / d)} for d in dirs],
                        rules={"enabled": False}, metrics=False, **extra)


def created(agent: AgentProc, path: Path) -> list[dict]:  # type: ignore[type-arg]
    return agent.matching(lambda e: get(e, "file.path") == str(path)
                          and get(e, "event.action") == "created")


def test_sighup_applies_a_new_watch_list_without_losing_events(scratch: Path) -> None:
    cfg = config(scratch, ["a", "probe"], health=False)
    agent = AgentProc(["--config", str(cfg), "--no-exec", "--no-fim"],
                      db=scratch / "state" / "b.db").start()
    try:
        agent.probe(scratch / "probe", timeout=60)
        (scratch / "b" / "before").write_text("x")     # b is not watched yet
        # a writer in `a` (on both lists) all through the reload
        stop = threading.Event()
        made: list[Path] = []

        def writer() -> None:
            i = 0
            while not stop.is_set() and i < 20000:
                p = scratch / "a" / f"f{i}"
                p.write_text("x")
                made.append(p)
                i += 1
                time.sleep(0.001)

        t = threading.Thread(target=writer)
        t.start()
        try:
            time.sleep(0.3)
            config(scratch, ["a", "b", "probe"], health=False)
            os.kill(agent.pid, signal.SIGHUP)
            (line,) = agent.wait_log("configuration reloaded", timeout=30)
            assert "3 directories" in line and "+1 -0" in line, line
            time.sleep(0.3)
        finally:
            stop.set()
            t.join()
        (scratch / "b" / "after").write_text("x")
        agent.settle(scratch / "probe")
        agent.wait_for(lambda e: get(e, "file.path") == str(scratch / "b" / "after"), timeout=15)
        assert not agent.matching(under(scratch / "b" / "before"))
        seen = {get(e, "file.path") for e in agent.matching(under(scratch / "a"))
                if get(e, "event.action") == "created"}
        missing = [p for p in made if str(p) not in seen]
        assert len(made) > 50 and not missing, f"{len(missing)} of {len(made)} creates lost"
        # and a directory taken off the list is no longer reported
        config(scratch, ["b", "probe"], health=False)
        os.kill(agent.pid, signal.SIGHUP)
        agent.wait_log("configuration reloaded", timeout=30, count=2)
        (scratch / "a" / "later").write_text("x")
        (scratch / "b" / "later").write_text("x")
        agent.settle(scratch / "probe")
        agent.wait_for(lambda e: get(e, "file.path") == str(scratch / "b" / "later"))
        assert not created(agent, scratch / "a" / "later")
        # a broken file is refused and the running configuration stays
        (scratch / "vigil.yaml").write_text("directories: [\n")
        os.kill(agent.pid, signal.SIGHUP)
        (scratch / "b" / "still").write_text("x")
        agent.wait_for(lambda e: get(e, "file.path") == str(scratch / "b" / "still"),
                       timeout=15)
    finally:
        rc, summary = agent.stop()
    assert rc == 0 and summary is not None and summary.dropped == 0


def test_health_check_passes_and_its_events_stay_inside(scratch: Path) -> None:
    health = scratch / "health"
    cfg = config(scratch, ["probe"], health={"interval": 2, "directory": str(health)})
    agent = AgentProc(["--config", str(cfg), "--no-fim"], db=scratch / "state" / "b.db",
                      verbose=True).start()
    try:
        agent.probe(scratch / "probe", timeout=60)
        lines = agent.wait_log("health check passed", timeout=30, count=2)
        for op in ("created", "modified", "mode-changed", "deleted"):
            assert op in lines[0], lines[0]
    finally:
        rc, _ = agent.stop()
    assert rc == 0
    assert not [e for e in agent.events if str(health) in str(get(e, "file.path", ""))]
    assert not agent.alerts
    assert not any("health check FAILED" in ln for ln in agent.stderr_lines)


def test_doctor_live_runs_the_check_on_demand(scratch: Path) -> None:
    cfg = config(scratch, ["probe"], health={"directory": str(scratch / "h")})
    p = subprocess.run([str(VIGIL), "doctor", "--live", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=scaled(300))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "Live health check" in p.stdout and "health check passed" in p.stdout, p.stdout


def test_an_unusable_health_directory_turns_the_check_off_not_the_agent(scratch: Path) -> None:
    cfg = config(scratch, ["probe"], health={"directory": "/proc/vigil-no-such/health"})
    agent = AgentProc(["--config", str(cfg), "--no-fim"], db=scratch / "state" / "b.db").start()
    try:
        (line,) = agent.wait_log("health check off", timeout=60)
        assert "/proc/vigil-no-such/health" in line, line
        agent.probe(scratch / "probe", timeout=60)   # the agent itself runs
    finally:
        rc, _ = agent.stop()
    assert rc == 0 and not agent.alerts
