"""Always watched, whatever the configuration says: Vigil's own files and the kernel's
security knobs, with the real agent and real writers.

Another process appending to the agent's configuration, adding a file to a rules directory it
loaded or touching its baseline database is an alert of the pack's own-files rule, with the
writer's pid; the agent's own writes to that database are none. A write to
/proc/sys/kernel/kptr_restrict is a reported event with the old and the new value, and the
weakening one of two writes is an alert. The knob is restored in a ``finally`` whatever
happens (kptr_restrict only decides whether kernel addresses show as zeros to root).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import VIGIL, AgentProc, UserIds, get, py_child, scaled, write_config

from vigil.ownfiles import PACKAGE_DIR as PACKAGE

pytestmark = [pytest.mark.root]

OWN_RULE = "3a61ac80-4943-459d-8514-8d8fcbbeadbd"      # vigil_file_own_files_changed.yml
SYSCTL_RULE = "272ecb2d-75d1-4f52-aa02-a848f3a9efa2"   # vigil_file_sysctl_weakened.yml
KNOB = Path("/proc/sys/kernel/kptr_restrict")


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-self-", dir="/var/tmp")).resolve()
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def start(scratch: Path) -> tuple[AgentProc, Path, Path]:
    """The agent with the pack and a rules directory of its own, watching ``scratch/w``
    (nothing of the protected files lies in it)."""
    (scratch / "w").mkdir()
    rules = scratch / "rules"
    rules.mkdir()
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(scratch / "w")}],
                       rules={"paths": [str(rules)], "suppress_window": 0})
    agent = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db").start()
    agent.probe(scratch / "w", timeout=60)
    return agent, cfg, rules


def own_alerts(agent: AgentProc, path: Path) -> list[dict[str, object]]:
    return [a for a in agent.alerts if get(a, "rule.id") == OWN_RULE
            and get(a, "file.path") == str(path)]


@pytest.mark.matrix
def test_another_process_changing_vigils_own_files_is_an_alert(scratch: Path) -> None:
    agent, cfg, rules = start(scratch)
    db = scratch / "state" / "baseline.db"
    try:
        # the agent writes its own database: a watched file's baseline row
        (scratch / "w" / "f").write_text("x")
        agent.wait_for(lambda e: get(e, "file.path") == str(scratch / "w" / "f")
                       and get(e, "event.dataset") == "vigil.fim", timeout=30)
        appender = py_child(f"open({str(cfg)!r}, 'a').write('# appended\\n')\n")
        dropper = py_child(f"open({str(rules / 'extra.yml')!r}, 'w').write('# x\\n')\n")
        toucher = py_child(f"open({str(db)!r}, 'ab').close()\n")   # no byte written
        agent.wait_for(lambda e: get(e, "rule.id") == OWN_RULE
                       and get(e, "process.pid") == toucher.pid, alerts=True, timeout=15)
        agent.wait_for(lambda e: get(e, "rule.id") == OWN_RULE
                       and get(e, "process.pid") == dropper.pid, alerts=True, timeout=15)
        (cfg_alert,) = agent.wait_for(lambda e: get(e, "rule.id") == OWN_RULE
                                      and get(e, "process.pid") == appender.pid,
                                      alerts=True, timeout=15)
        agent.settle(scratch / "w")
    finally:
        rc, _ = agent.stop()
    assert rc == 0
    assert get(cfg_alert, "file.path") == str(cfg)
    assert get(cfg_alert, "event.action") == "modified"
    assert get(cfg_alert, "process.executable", "").startswith("/usr/bin/python3")
    assert get(cfg_alert, "user.name") == "root"
    assert get(cfg_alert, "vigil.protected") == "self"
    assert get(cfg_alert, "rule.name") == "Vigil's Own Files Changed by Another Process"
    assert get(cfg_alert, "vigil.rule.level") == "high"
    assert "T1562.001" in get(cfg_alert, "threat.technique.subtechnique.id", [])
    new_rule = own_alerts(agent, rules / "extra.yml")
    assert {get(a, "event.action") for a in new_rule} >= {"created"}
    assert {get(a, "process.pid") for a in new_rule} == {dropper.pid}
    assert {get(a, "process.pid") for a in own_alerts(agent, db)} == {toucher.pid}
    # the agent's own writes (its database and SQLite's companions) are no alert, and the
    # watch-only own files are no telemetry
    db_files = {str(db) + s for s in ("", "-wal", "-shm", "-journal")}
    assert not [a for a in agent.alerts if get(a, "file.path") in db_files
                and get(a, "process.pid") == agent.pid]
    assert not [e for e in agent.events if get(e, "file.path") in db_files]


def read_knob() -> str:
    return KNOB.read_text().strip()


def write_knob(value: str) -> None:
    KNOB.write_text(value + "\n")


def knob_events(agent: AgentProc, pid: int) -> list[dict[str, object]]:
    return [e for e in agent.events if get(e, "file.path") == str(KNOB)
            and get(e, "process.pid") == pid]


@pytest.mark.matrix
def test_sysctl_write_is_reported_old_to_new_and_weakening_is_an_alert(
        scratch: Path, test_user: UserIds) -> None:
    original = read_knob()
    other = "1" if original != "1" else "2"
    agent, _, _ = start(scratch)
    try:
        # each write waits for its event: the agent reads the new value when it handles it
        first = py_child(f"open({str(KNOB)!r}, 'w').write({other + chr(10)!r})\n")
        (ev1,) = agent.wait_for(lambda e: get(e, "file.path") == str(KNOB)
                                and get(e, "process.pid") == first.pid, timeout=15)
        back = py_child(f"open({str(KNOB)!r}, 'w').write({original + chr(10)!r})\n")
        (ev2,) = agent.wait_for(lambda e: get(e, "file.path") == str(KNOB)
                                and get(e, "process.pid") == back.pid, timeout=15)
        weaker = first if int(other) < int(original) else back
        (alert,) = agent.wait_for(lambda e: get(e, "rule.id") == SYSCTL_RULE,
                                  alerts=True, timeout=15)
        # an unprivileged user's attempt: refused at the open, reported, no alert (the VFS
        # backends do not see failed opens: their doctor says so)
        sees_failed_opens = agent.running_backend() == "tracepoint"
        refused = py_child(f"""
try:
    open({str(KNOB)!r}, 'w')
except PermissionError:
    pass
""", user=(test_user.uid, test_user.gid))
        if sees_failed_opens:
            agent.wait_for(lambda e: get(e, "file.path") == str(KNOB)
                           and get(e, "process.pid") == refused.pid, timeout=15)
        agent.settle(scratch / "w")
    finally:
        try:
            if read_knob() != original:
                write_knob(original)
        finally:
            rc, _ = agent.stop()
    assert read_knob() == original
    assert rc == 0
    assert get(ev1, "event.action") == "modified"
    assert get(ev1, "vigil.sysctl") == {"name": "kernel.kptr_restrict", "old": original,
                                         "new": other, "weakened": weaker is first}
    assert get(ev2, "vigil.sysctl") == {"name": "kernel.kptr_restrict", "old": other,
                                         "new": original, "weakened": weaker is back}
    # the write-open's O_TRUNC (a no-op on procfs) is not reported, the close is
    assert [get(e, "event.action") for e in knob_events(agent, first.pid)] == ["modified"]
    assert get(alert, "process.pid") == weaker.pid
    assert get(alert, "rule.name") == "Kernel Security Setting Weakened"
    assert get(alert, "vigil.sysctl.weakened") is True
    assert len([a for a in agent.alerts if get(a, "rule.id") == SYSCTL_RULE]) == 1
    if not sees_failed_opens:
        return
    (denied,) = knob_events(agent, refused.pid)
    assert get(denied, "event.outcome") == "failure"
    assert get(denied, "error.code") == "EACCES"
    assert get(denied, "vigil.sysctl") == {"name": "kernel.kptr_restrict"}
    assert get(denied, "user.id") == str(test_user.uid)


def test_doctor_lists_the_own_files_and_the_knobs(scratch: Path) -> None:
    rules = scratch / "rules"
    rules.mkdir()
    (scratch / "w").mkdir()
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(scratch / "w")}],
                       rules={"paths": [str(rules)]})
    out = subprocess.run([str(VIGIL), "doctor", "--json", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=scaled(120))
    report = json.loads(out.stdout)
    own = {(f["what"], f["path"], f["kind"]) for f in report["own_files"]}
    assert {("config", str(cfg), "file"), ("rules", str(rules), "directory"),
            ("database", str(scratch / "state" / "baseline.db"), "file"),
            ("package", str(PACKAGE), "directory")} <= own
    (knob,) = [k for k in report["sysctl_knobs"] if k["name"] == "kernel.kptr_restrict"]
    assert knob == {"name": "kernel.kptr_restrict", "path": str(KNOB), "weakens": "lower",
                    "value": read_knob()}
    text = subprocess.run([str(VIGIL), "doctor", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=scaled(120)).stdout
    assert f"  config      {cfg}\n" in text
    assert f"  rules       {rules}/\n" in text
    assert re.search(r"^  kernel\.kptr_restrict +\d +weaker when lower$", text, re.M)
