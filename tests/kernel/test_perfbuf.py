"""The perf event array path (``--event-buffer perf``, what kernels < 5.8 get): the same event
stream as the ring buffer, with who-data (the burst test, delivered + dropped, is in
test_burst.py, for both buffers).

The whole suite also runs over it with VIGIL_TEST_EVENT_BUFFER=perf (tests/kernel/agent_proc.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import (
    AgentProc,
    Area,
    Child,
    Event,
    UserIds,
    actions,
    get,
    is_file_event,
    of_pid,
    py_child,
)

pytestmark = pytest.mark.root

PERF = ["--event-buffer", "perf"]


@pytest.fixture(scope="module")
def perf_agent(area: Area) -> Iterator[tuple[AgentProc, Path]]:
    """An agent of its own, on the perf buffer, watching ``<area>/perf``."""
    watched = area.root / "perf"
    watched.mkdir(mode=0o755)
    proc = AgentProc(["--watch", str(watched), *PERF], db=area.root / "perf.db",
                     verbose=True).start()
    try:
        proc.probe(watched, timeout=60)
        yield proc, watched
    finally:
        rc, summary = proc.stop()
    assert rc == 0, "\n".join(proc.stderr_lines[-20:])
    assert summary is not None, "no summary line on stderr:\n" + "\n".join(proc.stderr_lines)
    assert summary.dropped == 0, summary.line


@pytest.fixture
def pdir(request: pytest.FixtureRequest, perf_agent: tuple[AgentProc, Path],
         test_user: UserIds) -> Path:
    d = perf_agent[1] / request.node.name
    d.mkdir()
    os.chown(d, test_user.uid, test_user.gid)
    return d


def check_who(ev: Event, child: Child) -> None:
    assert get(ev, "process.pid") == child.pid
    assert get(ev, "process.parent.pid") == child.ppid
    assert get(ev, "user.id") == str(child.uid)
    assert get(ev, "process.user.id") == str(child.uid)
    assert get(ev, "process.name") == child.comm
    assert get(ev, "process.executable") == child.exe


def test_the_agent_reads_the_perf_buffer(perf_agent: tuple[AgentProc, Path]) -> None:
    agent, _ = perf_agent
    assert any(ln.startswith("vigil: ") and "backend, perf event buffer" in ln
               for ln in agent.stderr_lines), "\n".join(agent.stderr_lines)
    assert any("event buffer: perf" in ln for ln in agent.stderr_lines)


def test_file_changes_with_who_data(perf_agent: tuple[AgentProc, Path], pdir: Path,
                                    test_user: UserIds) -> None:
    agent, _ = perf_agent
    w = str(pdir)
    child = py_child(
        f"W = {w!r}\n"
        "fd = sc('openat', AT_FDCWD, W + '/f', os.O_CREAT | os.O_WRONLY, 0o640)\n"
        "os.write(fd, b'one'); os.close(fd)\n"
        "fd = os.open(W + '/f', os.O_WRONLY | os.O_APPEND); os.write(fd, b'two'); os.close(fd)\n"
        "sc('chmod', W + '/f', 0o600)\n"
        "sc('rename', W + '/f', W + '/g')\n"
        "sc('mkdir', W + '/d', 0o755)\n"
        "sc('unlink', W + '/g')\n"
        "sc('rmdir', W + '/d')\n",
        user=test_user.ids)
    evs = of_pid(agent.settle(pdir), child.pid)
    got = [(get(e, "event.action"), get(e, "file.path")) for e in evs]
    assert got == [
        ("created", f"{w}/f"), ("modified", f"{w}/f"), ("modified", f"{w}/f"),
        ("mode-changed", f"{w}/f"), ("renamed", f"{w}/g"), ("directory-created", f"{w}/d"),
        ("deleted", f"{w}/g"), ("directory-deleted", f"{w}/d"),
    ]
    for ev in evs:
        assert get(ev, "event.outcome") == "success"
        check_who(ev, child)
    assert get(evs[3], "file.mode") == "0600"
    assert get(evs[4], "vigil.file.original_path") == f"{w}/f"


def test_exec_and_exit_records_flow(perf_agent: tuple[AgentProc, Path], pdir: Path,
                                    test_user: UserIds) -> None:
    agent, _ = perf_agent
    child = py_child(f"open({str(pdir / 'x')!r}, 'w').close()", user=test_user.ids)
    agent.settle(pdir)
    mine = [e for e in agent.matching(lambda e: not is_file_event(e))
            if get(e, "process.pid") == child.pid]
    assert "exec" in actions(mine) and "exit" in actions(mine), actions(mine)
    exec_ev = next(e for e in mine if get(e, "event.action") == "exec")
    assert get(exec_ev, "process.executable") == child.exe
    assert get(exec_ev, "user.id") == str(child.uid)
