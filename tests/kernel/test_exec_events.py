"""Exec and exit events of the real agent, with exact who-data."""

from __future__ import annotations

import uuid

import pytest
from agent_proc import AgentProc, Event, Pred, UserIds, get, run_child

pytestmark = [pytest.mark.root, pytest.mark.matrix]


def _is(pid: int, action: str) -> Pred:
    def pred(ev: Event) -> bool:
        return (get(ev, "event.category") == ["process"] and get(ev, "process.pid") == pid
                and get(ev, "event.action") == action)

    return pred


def test_exec_with_arguments(agent: AgentProc, test_user: UserIds) -> None:
    tag = f"vigil-{uuid.uuid4().hex[:12]}"
    argv = ["/usr/bin/true", tag, "--flag=two words", "x"]
    child = run_child(argv, user=test_user.ids)
    [ev] = agent.wait_for(_is(child.pid, "exec"))
    assert get(ev, "process.executable") == "/usr/bin/true"
    assert get(ev, "process.name") == "true"
    assert get(ev, "process.args") == argv
    assert get(ev, "process.args_count") == 4
    assert get(ev, "process.command_line") == " ".join(argv)
    assert get(ev, "process.parent.pid") == child.ppid
    assert get(ev, "user.id") == str(test_user.uid)
    assert get(ev, "user.name") == test_user.name
    assert get(ev, "process.real_user.id") == str(test_user.uid)
    assert get(ev, "process.user.id") == str(test_user.uid)
    assert get(ev, "event.outcome") == "success"
    [ex] = agent.wait_for(_is(child.pid, "exit"))
    assert get(ex, "process.exit_code") == 0
    assert get(ex, "process.executable") == "/usr/bin/true"


def test_exit_code(agent: AgentProc, test_user: UserIds) -> None:
    child = run_child(["/bin/sh", "-c", "exit 3"], user=test_user.ids, expect_rc=3)
    [ev] = agent.wait_for(_is(child.pid, "exec"))
    assert get(ev, "process.args") == ["/bin/sh", "-c", "exit 3"]
    assert get(ev, "process.executable") == child.exe  # /usr/bin/dash: /bin/sh is a symlink
    assert get(ev, "process.name") == "sh"
    [ex] = agent.wait_for(_is(child.pid, "exit"))
    assert get(ex, "process.exit_code") == 3
    assert get(ex, "process.parent.pid") == child.ppid
    assert get(ex, "user.id") == str(test_user.uid)


def test_setuid_style_euid_differs(agent: AgentProc, test_user: UserIds) -> None:
    """Real and effective uids are reported apart: a root child that sets only its euid."""
    code = (f"import os; os.seteuid({test_user.uid}); "
            "os.execv('/usr/bin/true', ['/usr/bin/true', 'euid-test'])")
    child = run_child(["/usr/bin/python3", "-c", code])
    evs = agent.wait_for(_is(child.pid, "exec"), count=2)
    last = evs[-1]
    assert get(last, "process.executable") == "/usr/bin/true"
    assert get(last, "process.real_user.id") == "0"
    assert get(last, "process.user.id") == str(test_user.uid)
    assert get(last, "user.id") == "0"
