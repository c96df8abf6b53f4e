"""The pretty terminal line (vigil.outputs.pretty): its format for every event kind, one clock
for all of them, alerts coloured by level, exits left out on request, names escaped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from term_events import CLOCK, T, alert, every_kind, lines_of, proc, utc  # noqa: F401

from vigil.events.model import ExecEvent, ExitEvent, FileEvent, FileOp, ShellEvent
from vigil.fim.model import FimEvent
from vigil.outputs.base import Output
from vigil.outputs.ecs import to_ecs
from vigil.outputs.pretty import PrettySink, fim_to_line
from vigil.rules.alert import Alert, RuleInfo

pytestmark = pytest.mark.usefixtures("utc")
SGR = re.compile(r"\033\[[0-9;]*m")
BY = "by alice pid 1250 (curl) /usr/bin/curl ppid 1200"

EXPECTED = {
    "file": "modified           /etc/passwd by alice pid 4242 (vim) /usr/bin/vim ppid 1200",
    "rename": f"renamed            /tmp/a -> /tmp/b {BY}",
    "chmod": f"mode-changed       /etc/shadow {BY}",
    "failed": f"FAILED OPEN EACCES /etc/shadow {BY}",
    "exec": f"exec               /usr/bin/curl [curl -s http://198.51.100.2/] {BY}",
    "exit": f"exit               signal 9 {BY}",
    "net": f"connect tcp 10.0.0.5:41000 -> 198.51.100.2:443 {BY}",
    "accept": f"accept tcp 10.0.0.5:41000 <- 198.51.100.2:443 {BY}",
    "listen": f"listen tcp 10.0.0.5:41000 {BY}",
    "refused": f"connect tcp 10.0.0.5:41000 -> 198.51.100.2:443 ECONNREFUSED {BY}",
    "shell": "shell-command      sudo -i on pts/3 by alice pid 1200 (bash) /usr/bin/bash ppid 990",
    "cred": "setresuid          uid=1000 euid=1000 gid=1000 egid=1000 -> uid=0 euid=0 gid=0 "
            "egid=0 by alice(euid root) pid 1260 (sudo) /usr/bin/sudo ppid 1200",
    "escalation": "privilege-escalation uid=1000 euid=1000 gid=1000 egid=1000 -> uid=0 euid=0 "
                  f"gid=0 egid=0 {BY}",
    "tamper": f"ptrace-attach      target pid 77 /usr/sbin/sshd {BY}",
    "module": "module-load        rootkit by 0 pid 1250 (curl) /usr/bin/curl ppid 1200",
    "fim": "FIM modified       /etc/hosts [size] by alice pid 4242 (vim) /usr/bin/vim ppid 1200",
    "scan": "FIM baseline-established /etc [12 files in 0.5s, recorded silently] (initial-scan)",
    "lost": "LOST               17 file events",
    "alert": "ALERT HIGH         Curl to a pipe: exec curl -s http://198.51.100.2/ by alice pid "
             "1250 /usr/bin/curl [11111111-2222-3333-4444-555555555555]",
}


def test_every_kind_has_its_line_and_the_same_clock() -> None:
    sink = PrettySink(1, colour=False)
    events = every_kind()
    assert set(events) == set(EXPECTED)
    for name, ev in events.items():
        assert sink.line(ev) == f"{CLOCK} {EXPECTED[name]}", name


def test_a_repeat_alert_says_since_when_in_the_same_clock() -> None:
    line = PrettySink(1, colour=False).line(alert("critical", repeat=True))
    assert line.startswith(f"{CLOCK} ALERT CRITICAL     Curl to a pipe (x3 more since "
                           "22:12:20.123): exec curl")


def test_the_scan_report_keeps_its_rfc3339_time() -> None:
    ev = FimEvent("modified", b"/etc/hosts", "manual-scan", T, changed_attributes=["size"],
                  diff="binary")
    assert fim_to_line(ev) == ("2023-11-14T22:13:20.123456Z  modified            /etc/hosts  "
                               "[size]  by unknown (manual-scan)  (binary content changed)")


def test_the_date_is_a_line_of_its_own_once_a_day(tmp_path: Path) -> None:
    out = tmp_path / "out"
    day = 86_400 * 10**9
    with out.open("wb") as f:
        sink = PrettySink(f.fileno(), colour=False)
        sink.emit([ExecEvent(T, proc()), ExecEvent(T + 10**9, proc())])
        sink.emit([ExecEvent(T + 2 * 10**9, proc())])
        sink.emit([ExecEvent(T + day, proc()), ExecEvent(T + 5 * 10**9, proc())])  # late one
    lines = lines_of(out)
    assert lines[0] == "-- Tuesday 2023-11-14 (times are UTC+00:00) --"
    assert [ln[:12] for ln in lines[1:4]] == [CLOCK, "22:13:21.123", "22:13:22.123"]
    assert lines[4] == "-- Wednesday 2023-11-15 (times are UTC+00:00) --"
    assert [ln[:12] for ln in lines[5:]] == [CLOCK, "22:13:25.123"]   # no day line back


def test_exits_left_out_on_request(tmp_path: Path) -> None:
    events: list[Output] = [ExecEvent(T, proc()), ExitEvent(T, proc(), 0),
                            FileEvent(T, FileOp.CREATE, b"/x", proc())]
    for show, kinds in ((True, ["exec", "exit", "created"]), (False, ["exec", "created"])):
        out = tmp_path / f"out{show}"
        with out.open("wb") as f:
            PrettySink(f.fileno(), colour=False, show_exit=show).emit(events)
        assert [ln.split()[1] for ln in lines_of(out)[1:]] == kinds


@pytest.mark.parametrize(("level", "sgr"), [
    ("critical", "\033[1;37;41m"), ("high", "\033[1;31m"), ("medium", "\033[33m"),
    ("low", "\033[36m"), ("informational", "\033[2m")])
def test_alerts_coloured_by_level(level: str, sgr: str) -> None:
    line = PrettySink(1, colour=True).line(alert(level))
    assert f"{sgr}ALERT {level.upper()}\033[0m" in line
    title = {"medium": "\033[1;33m", "low": "\033[1;36m"}.get(level, sgr)
    assert f"{title}Curl to a pipe\033[0m" in line       # bold from low to critical


def test_colour_only_when_asked_and_columns_alike() -> None:
    plain, coloured = PrettySink(1, colour=False), PrettySink(1, colour=True)
    for name, ev in every_kind().items():
        assert "\033" not in plain.line(ev), name
        c = coloured.line(ev)
        assert "\033[" in c and SGR.sub("", c) == plain.line(ev), name


def test_names_stay_escaped(tmp_path: Path) -> None:
    """A newline in a name never forges a line, an escape sequence never reaches the
    terminal, bytes that are not UTF-8 show as \\xNN."""
    evil = b"/tmp/a\nFORGED 22:00:00.000 deleted /etc/passwd\x1b[2J\xff"
    p = proc(comm=b"ev\nil", args=[b"sh", b"-c", b"x\ny"], executable=b"/tmp/e\x1b")
    events: list[Output] = [FileEvent(T, FileOp.CREATE, evil, p), ExecEvent(T, p),
              ShellEvent(T, p, b"echo 1\necho 2\r"),
              FimEvent("added", evil, "realtime", T, process=p),
              Alert(T, RuleInfo(None, "t\nFORGED", "high", where="r.yml:1"), "file_event",
                    to_ecs(FileEvent(T, FileOp.CREATE, evil, p), {"name": "h"}))]
    out = tmp_path / "out"
    with out.open("wb") as f:
        PrettySink(f.fileno(), colour=False).emit(events)
    lines = lines_of(out)
    assert len(lines) == 1 + len(events)
    assert "\x1b" not in out.read_text() and "\r" not in out.read_text()
    assert r"/tmp/a\nFORGED 22:00:00.000 deleted /etc/passwd\x1b[2J\xff" in lines[1]
    assert r"(ev\nil) /tmp/e\x1b" in lines[1]
    assert r"[sh -c x\ny]" in lines[2]
    assert r"echo 1\necho 2\r" in lines[3]
    assert r"/tmp/a\nFORGED" in lines[4] and r"t\nFORGED" in lines[5]
