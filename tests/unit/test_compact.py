"""The compact terminal line (vigil.outputs.compact) for every event kind, alerts coloured by
level, exits left out on request, names escaped; process ancestry (vigil.outputs.ancestry)
from the events seen and from the real /proc."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from term_events import CLOCK, T, alert, every_kind, lines_of, proc, utc  # noqa: F401

from vigil.events.model import ExecEvent, ExitEvent, FileEvent, FileOp, ShellEvent
from vigil.outputs.ancestry import Lineage
from vigil.outputs.base import Output
from vigil.outputs.compact import CompactSink

pytestmark = pytest.mark.usefixtures("utc")
SGR = re.compile(r"\033\[[0-9;]*m")
CURL = "alice/curl[1250]"

EXPECTED = {
    "file": "~ alice/vim[4242] /etc/passwd",
    "rename": f"> {CURL} /tmp/a -> /tmp/b",
    "chmod": f"* {CURL} mode-changed /etc/shadow",
    "failed": f"? {CURL} open /etc/shadow EACCES",
    "exec": f"E {CURL} /usr/bin/curl -s http://198.51.100.2/",
    "exit": f"X {CURL} signal 9",
    "net": f"N {CURL} connect tcp -> 198.51.100.2:443",
    "accept": f"N {CURL} accept tcp <- 198.51.100.2:443",
    "listen": f"N {CURL} listen tcp 10.0.0.5:41000",
    "refused": f"N {CURL} connect tcp -> 198.51.100.2:443 ECONNREFUSED",
    "shell": "$ alice/bash[1200] sudo -i",
    "cred": "P alice(root)/sudo[1260] setresuid uid 1000->0 euid 1000->0 gid 1000->0 egid 1000->0",
    "escalation": f"P {CURL} privilege-escalation uid 1000->0 euid 1000->0 gid 1000->0 "
                  "egid 1000->0",
    "tamper": f"T {CURL} ptrace-attach target pid 77 /usr/sbin/sshd",
    "module": "T 0/curl[1250] module-load rootkit",
    "fim": "I alice/vim[4242] modified /etc/hosts [size]",
    "scan": "I baseline-established /etc [12 files in 0.5s, recorded silently] (initial-scan)",
    "lost": "L lost 17 file events",
    "alert": f"! HIGH Curl to a pipe: {CURL} curl -s http://198.51.100.2/",
}


def test_every_kind_has_its_short_line() -> None:
    sink = CompactSink(1, colour=False)
    events = every_kind()
    assert set(events) == set(EXPECTED)
    for name, ev in events.items():
        assert sink.line(ev) == f"{CLOCK} {EXPECTED[name]}", name
    assert sink.line(alert("low", repeat=True)).endswith(
        "! LOW Curl to a pipe (x3 more): alice/curl[1250] curl -s http://198.51.100.2/")


def test_exits_left_out_on_request(tmp_path: Path) -> None:
    events: list[Output] = [ExecEvent(T, proc()), ExitEvent(T, proc(), 0),
                            ExitEvent(T, proc(), 256)]
    for show, kinds in ((True, ["E", "X", "X"]), (False, ["E"])):
        out = tmp_path / f"out{show}"
        with out.open("wb") as f:
            CompactSink(f.fileno(), colour=False, show_exit=show).emit(events)
        lines = lines_of(out)
        assert lines[0].startswith("-- Tuesday 2023-11-14")
        assert [ln.split()[1] for ln in lines[1:]] == kinds


@pytest.mark.parametrize(("level", "sgr"), [
    ("critical", "\033[1;37;41m"), ("high", "\033[1;31m"), ("medium", "\033[33m"),
    ("low", "\033[36m"), ("informational", "\033[2m")])
def test_alerts_coloured_by_level(level: str, sgr: str) -> None:
    line = CompactSink(1, colour=True).line(alert(level))
    assert line.startswith(f"{CLOCK} {sgr}!\033[0m {sgr}{level.upper()}\033[0m ")


def test_colour_only_when_asked() -> None:
    plain, coloured = CompactSink(1, colour=False), CompactSink(1, colour=True)
    for name, ev in every_kind().items():
        assert "\033" not in plain.line(ev), name
        c = coloured.line(ev)
        assert "\033[" in c and SGR.sub("", c) == plain.line(ev), name


def test_names_stay_escaped(tmp_path: Path) -> None:
    evil = b"/tmp/a\n22:00:00.000 - root/rm[1] /etc/passwd\x1b]0;x\x07\xff"
    p = proc(comm=b"ev\nil", args=[b"sh", b"-c", b"x\ny"], executable=b"/tmp/e\n")
    events: list[Output] = [FileEvent(T, FileOp.DELETE, evil, p), ExecEvent(T, p),
              ShellEvent(T, p, b"echo 1\necho 2")]
    out = tmp_path / "out"
    with out.open("wb") as f:
        CompactSink(f.fileno(), colour=False, ancestry=True).emit(events)
    lines = lines_of(out)
    assert len(lines) == 1 + len(events)
    assert "\x1b" not in out.read_text() and "\x07" not in out.read_text()
    assert lines[1].startswith(rf"{CLOCK} - alice/ev\nil[1250] /tmp/a\n22:00:00.000 - root/rm[1] "
                               r"/etc/passwd\x1b]0;x\x07\xff")
    assert lines[2].endswith(r"E alice/ev\nil[1250] /tmp/e\n -c x\ny  < bash[1200]")
    assert lines[3] == rf"{CLOCK} $ alice/ev\nil[1250] echo 1\necho 2  < bash[1200]"


# ---- ancestry --------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[bytes, int, int]:
    """(comm, ppid, start time) of a live process, read here independently of Lineage."""
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    fields = raw[raw.rindex(b")") + 2:].split()
    return Path(f"/proc/{pid}/comm").read_bytes().rstrip(b"\n"), int(fields[1]), int(fields[19])


def test_ancestry_of_a_real_process_from_proc() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        me, my_parent, my_start = _stat(os.getpid())
        _, _, child_start = _stat(child.pid)
        p = proc(pid=child.pid, comm=b"sleep", ppid=os.getpid(), start_time=child_start,
                 parent_start_time=my_start)
        lineage = Lineage(depth=64)
        chain = lineage.ancestors(p)
        assert chain[0] == (os.getpid(), me)
        assert chain[1] == (my_parent, _stat(my_parent)[0])
        assert chain[-1] == (1, _stat(1)[0])
        reads = lineage.proc_reads
        assert lineage.ancestors(p) == chain and lineage.proc_reads == reads   # kept
        line = CompactSink(1, colour=False, ancestry=True, lineage=lineage).line(
            ExitEvent(T, p, 0))
        assert f"X alice/sleep[{child.pid}] status 0  < {me.decode()}[{os.getpid()}] < " in line
        assert line.endswith(f" < {_stat(1)[0].decode()}[1]")
    finally:
        child.kill()
        child.wait()


def test_ancestry_learned_from_the_events_seen(tmp_path: Path) -> None:
    """Processes /proc never had (pids above any pid_max): the chain comes from their execs."""
    _, _, init_start = _stat(1)
    gp = proc(pid=5_000_001, comm=b"sshd", ppid=1, start_time=10, parent_start_time=init_start)
    parent = proc(pid=5_000_002, comm=b"bash", ppid=gp.pid, start_time=20, parent_start_time=10)
    child = proc(pid=5_000_003, comm=b"vim", ppid=parent.pid, start_time=30,
                 parent_start_time=20)
    reused = proc(pid=5_000_004, comm=b"cat", ppid=parent.pid, start_time=40,
                  parent_start_time=21, parent_executable=b"/usr/bin/zsh")
    orphan = proc(pid=5_000_005, comm=b"cat", ppid=5_000_006, start_time=40,
                  parent_start_time=1, parent_executable=None)
    out = tmp_path / "out"
    with out.open("wb") as f:
        CompactSink(f.fileno(), colour=False, ancestry=True, show_exit=False).emit([
            ExecEvent(T, gp), ExitEvent(T, parent, 0),   # hidden, yet it tells the lineage
            FileEvent(T, FileOp.MODIFY, b"/etc/hosts", child),
            FileEvent(T, FileOp.MODIFY, b"/etc/hosts", reused),
            FileEvent(T, FileOp.MODIFY, b"/etc/hosts", orphan)])
    init = _stat(1)[0].decode()
    lines = lines_of(out)
    assert lines[1].endswith(f"E alice/sshd[5000001] /usr/bin/sshd -s http://198.51.100.2/  "
                             f"< {init}[1]")
    assert lines[2].endswith(f"~ alice/vim[5000003] /etc/hosts  < bash[5000002] "
                             f"< sshd[5000001] < {init}[1]")
    # the same pid started at another time is not the bash we saw: its own event names it
    assert lines[3].endswith("~ alice/cat[5000004] /etc/hosts  < zsh[5000002]")
    assert lines[4].endswith("~ alice/cat[5000005] /etc/hosts  < ?[5000006]")
    assert len(lines) == 5


def test_ancestry_depth_bounded_and_proc_names_escaped(tmp_path: Path) -> None:
    """/proc/PID/stat with a name holding spaces, parentheses and a newline; a chain deeper
    than asked ends with '< ...'."""
    def stat(pid: int, name: bytes, ppid: int) -> None:
        (tmp_path / str(pid)).mkdir()
        rest = b" ".join([b"S", str(ppid).encode()] + [b"0"] * 17 + [str(pid * 10).encode()])
        (tmp_path / str(pid) / "stat").write_bytes(b"%d (%s) %s 0 0\n" % (pid, name, rest))
    for pid in range(2, 12):
        stat(pid, b"w (x) y\nz" if pid == 2 else b"p%d" % pid, pid + 1)
    lineage = Lineage(tmp_path, depth=4)
    p = proc(pid=1, ppid=2, parent_start_time=20)
    assert lineage.ancestors(p) == [(2, b"w (x) y\nz"), (3, b"p3"), (4, b"p4"), (5, b"p5"),
                                    (0, None)]
    line = CompactSink(1, colour=False, ancestry=True, lineage=lineage).line(
        ExitEvent(T, p, 0))
    assert line.endswith(r"  < w (x) y\nz[2] < p3[3] < p4[4] < p5[5] < ...")
    # a start time that is not the live process's: the pid was reused, that parent is gone
    assert Lineage(tmp_path).ancestors(proc(pid=1, ppid=2, parent_start_time=21,
                                            parent_executable=None)) == [(2, None)]


def test_ancestry_of_an_alert_from_its_entity_ids() -> None:
    a = alert("high")
    sink = CompactSink(1, colour=False, ancestry=True)
    assert sink.line(a).endswith("curl -s http://198.51.100.2/  < bash[1200]")
    assert " < " not in CompactSink(1, colour=False).line(a)
