"""Sigma rules in the live agent: real programs, real files, alerts in the same stream.

The built-in pack fires on a real command and not on its benign look-alike; a user's rule
(``--rules``) on file events fires with the acting process; repeats by one process within the
suppression window become one alert and, when the window closes, one repeat alert with the
count; SIGHUP loads a new rule set, and a bad one is refused while the old rules keep running.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import AgentProc, UserIds, get, py_child, run_child, write_config

pytestmark = [pytest.mark.root]

BASE64_RULE_ID = "e2072cab-8c9a-459b-b63c-40ae79e27031"   # SigmaHQ: Decode Base64 Encoded Text

FILE_RULE = """
title: Test marker file written
id: 5a0f3c1e-7d2b-4c8e-9f10-000000000001
status: test
description: a file whose name ends in .marker is written in the test tree
logsource:
    product: linux
    category: file_event
detection:
    selection:
        TargetFilename|endswith: '.marker'
    condition: selection
level: high
tags:
    - attack.persistence
    - attack.t1546.004
"""

SECOND_RULE = """
title: Test second marker
id: 5a0f3c1e-7d2b-4c8e-9f10-000000000002
status: test
logsource:
    product: linux
    category: file_event
detection:
    selection:
        TargetFilename|endswith: '.second'
    condition: selection
level: medium
"""


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-alerts-", dir="/var/tmp")).resolve()
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def config(scratch: Path, rules_dir: Path, window: int, builtin: bool = True) -> Path:
    """The agent's config: the scratch tree watched, the rules of ``rules_dir`` (and the
    built-in pack unless ``builtin`` is false: tests that count matches of their own rules
    keep the pack's rules, which other processes may trigger meanwhile, out)."""
    watched = scratch / "w"
    watched.mkdir(exist_ok=True)
    return write_config(scratch / "vigil.yaml", scratch, [{"path": str(watched)}],
                        rules={"paths": [str(rules_dir)], "suppress_window": window,
                               "builtin": builtin})


def by_rule(rule_id: str) -> object:
    return lambda e: get(e, "rule.id") == rule_id


def test_builtin_rule_fires_on_a_real_command_not_on_its_look_alike(scratch: Path) -> None:
    rules = scratch / "rules"
    rules.mkdir()
    agent = AgentProc(["--config", str(config(scratch, rules, 0))],
                      db=scratch / "state" / "baseline.db").start()
    try:
        agent.probe(scratch / "w", timeout=60)
        encode = run_child(["/usr/bin/base64", "/etc/hostname"])   # benign: encodes
        decode = run_child(["/usr/bin/base64", "-d", "/dev/null"])
        (alert,) = agent.wait_for(by_rule(BASE64_RULE_ID), alerts=True, timeout=15)
        agent.settle(scratch / "w")
    finally:
        rc, summary = agent.stop()
    assert rc == 0
    assert get(alert, "process.pid") == decode.pid
    assert get(alert, "process.executable") == "/usr/bin/base64"
    assert get(alert, "process.command_line") == "/usr/bin/base64 -d /dev/null"
    assert get(alert, "process.parent.pid") == os.getpid()
    assert get(alert, "user.name") == "root"
    assert get(alert, "event.kind") == "alert"
    assert get(alert, "event.action") == "exec"
    assert get(alert, "rule.name") == "Decode Base64 Encoded Text"
    assert get(alert, "rule.ruleset") == "sigmahq"
    assert get(alert, "vigil.rule.level") == "low"
    assert get(alert, "event.severity") == 21
    assert get(alert, "threat.framework") == "MITRE ATT&CK"
    assert "T1027" in get(alert, "threat.technique.id")
    assert not [a for a in agent.alerts if get(a, "process.pid") == encode.pid]
    assert summary is not None and summary.counts["alerts"] >= 1


def test_user_rule_on_file_events_and_suppression(scratch: Path) -> None:
    rules = scratch / "rules"
    rules.mkdir()
    (rules / "marker.yml").write_text(FILE_RULE)
    window = 3
    agent = AgentProc(["--config", str(config(scratch, rules, window, builtin=False))],
                      db=scratch / "state" / "baseline.db").start()
    w = scratch / "w"
    try:
        agent.probe(w, timeout=60)
        child = py_child(f"for i in range(5):\n    open({str(w)!r} + f'/f{{i}}.marker', 'w')"
                         ".write('x')\n")
        other = py_child(f"open({str(w)!r} + '/x.markerz', 'w').write('x')\n")
        rule = by_rule("5a0f3c1e-7d2b-4c8e-9f10-000000000001")
        first = agent.wait_for(rule, alerts=True, timeout=15)
        repeat = agent.wait_for(lambda e: rule(e) and get(e, "vigil.alert.repeat") is True,
                                alerts=True, timeout=window + 15)
    finally:
        rc, summary = agent.stop()
    assert rc == 0
    alerts = [a for a in agent.alerts if rule(a)]
    assert len(alerts) == 2, [get(a, "file.path") for a in alerts]
    a = first[0]
    assert get(a, "file.path") == str(w / "f0.marker")
    assert get(a, "process.pid") == child.pid
    assert get(a, "vigil.alert.count") == 1
    assert get(a, "rule.ruleset") == "sigma"
    assert get(a, "vigil.rule.level") == "high"
    assert get(a, "threat.technique.subtechnique.id") == ["T1546.004"]
    assert get(a, "threat.tactic.name") == ["Persistence"]
    # created + modified for each of the five files: ten matches, the first alerted
    (r,) = repeat
    assert get(r, "process.pid") == child.pid
    assert get(r, "vigil.alert.count") == 9
    assert get(r, "file.path") == str(w / "f4.marker")
    assert not [x for x in agent.alerts if get(x, "process.pid") == other.pid]
    assert summary is not None
    assert summary.counts["suppressed"] == 9 and summary.counts["matches"] == 10


def test_sighup_reloads_rules_and_refuses_a_bad_set(scratch: Path) -> None:
    rules = scratch / "rules"
    rules.mkdir()
    (rules / "marker.yml").write_text(FILE_RULE)
    agent = AgentProc(["--config", str(config(scratch, rules, 0))],
                      db=scratch / "state" / "baseline.db").start()
    w = scratch / "w"
    second = by_rule("5a0f3c1e-7d2b-4c8e-9f10-000000000002")
    try:
        agent.probe(w, timeout=60)
        (rules / "second.yml").write_text(SECOND_RULE)
        (w / "before.second").write_text("x")        # not loaded yet: no alert
        agent.settle(w)
        assert not [a for a in agent.alerts if second(a)]
        os.kill(agent.pid, signal.SIGHUP)
        (line,) = agent.wait_log("configuration reloaded", timeout=15)
        assert "rules: " in line and "rules loaded" in line, line
        (w / "after.second").write_text("x")
        a = agent.wait_for(second, alerts=True, timeout=15)[0]   # created, then modified
        assert get(a, "file.path") == str(w / "after.second")

        (rules / "broken.yml").write_text("title: broken\nlogsource: {}\ndetection:\n"
                                          "  sel: {a: b}\n  condition: nosuch\n")
        os.kill(agent.pid, signal.SIGHUP)
        agent.wait_log("reload refused", timeout=15)
        assert any("broken.yml:" in ln for ln in agent.stderr_lines), agent.stderr_lines
        (w / "still.marker").write_text("x")         # the old set still runs
        agent.wait_for(lambda e: get(e, "file.path") == str(w / "still.marker"),
                       alerts=True, timeout=15)
    finally:
        rc, _ = agent.stop()
    assert rc == 0


def test_a_rule_path_outside_the_configured_directories_is_watched_for_the_rule(
        scratch: Path) -> None:
    """A file rule bounded to a path nobody configured: the kernel watches it for the rule
    (watch-only), the rule fires, and nothing there is reported as telemetry."""
    rules = scratch / "rules"
    rules.mkdir()
    drop = scratch / "drop"
    drop.mkdir()
    (rules / "drop.yml").write_text(FILE_RULE.replace(
        "TargetFilename|endswith: '.marker'", f"TargetFilename|startswith: '{drop}/stage'"))
    agent = AgentProc(["--config", str(config(scratch, rules, 0))],
                      db=scratch / "state" / "baseline.db").start()
    w = scratch / "w"
    try:
        agent.probe(w, timeout=60)
        child = py_child(f"open({str(drop)!r} + '/stage2.bin', 'w').write('x')\n"
                         f"open({str(drop)!r} + '/other.bin', 'w').write('x')\n")
        a = agent.wait_for(by_rule("5a0f3c1e-7d2b-4c8e-9f10-000000000001"), alerts=True,
                           timeout=15)[0]
        agent.settle(w)
    finally:
        rc, _ = agent.stop()
    assert rc == 0
    assert get(a, "file.path") == str(drop / "stage2.bin")
    assert get(a, "process.pid") == child.pid
    assert not [e for e in agent.events if str(drop) in str(get(e, "file.path", ""))], \
        "a watch-only path was reported as telemetry"
    assert not [x for x in agent.alerts if get(x, "file.path") == str(drop / "other.bin")]


DROP_THEN_EXEC = "11b6cf61-9940-481a-a4c5-07ba2129a7aa"
REFUSED_BURST = "c364acb5-c01d-4537-a96a-7bbf0b49ec79"


def test_shipped_correlation_file_dropped_in_dev_shm_then_run(scratch: Path) -> None:
    """The built-in pack's temporal_ordered correlation: a program written to /dev/shm and
    run within a minute is one alert grouped by its path; one written and not run is none,
    and neither base rule alerts on its own (generate: false)."""
    rules = scratch / "rules"
    rules.mkdir()
    tag = scratch.name
    dropped, idle = Path(f"/dev/shm/{tag}-payload"), Path(f"/dev/shm/{tag}-idle")
    agent = AgentProc(["--config", str(config(scratch, rules, 0))],
                      db=scratch / "state" / "baseline.db").start()
    try:
        agent.probe(scratch / "w", timeout=60)
        writer = py_child(f"import shutil\nshutil.copyfile('/usr/bin/true', {str(dropped)!r})\n"
                          f"os.chmod({str(dropped)!r}, 0o755)\n"
                          f"open({str(idle)!r}, 'wb').write(b'data')\n")
        runner = run_child([str(dropped)])
        (a,) = agent.wait_for(by_rule(DROP_THEN_EXEC), alerts=True, timeout=15)
        agent.settle(scratch / "w")
    finally:
        rc, _ = agent.stop()
        dropped.unlink(missing_ok=True)
        idle.unlink(missing_ok=True)
    assert rc == 0
    assert get(a, "vigil.alert.group") == {"path": str(dropped)}
    assert get(a, "vigil.rule.kind") == "correlation"
    assert get(a, "vigil.alert.category") == "correlation"
    assert get(a, "process.pid") == runner.pid     # the exec that completed it
    related = get(a, "vigil.alert.related")
    assert related[0]["TargetFilename"] == str(dropped) and related[0]["ProcessId"] == \
        str(writer.pid)
    assert related[-1]["Image"] == str(dropped)
    # the file written and not run is in no correlation alert (other rules of the pack may
    # see the writer's command line, which names it: a keyword rule matched '-s' in a
    # random scratch name once)
    assert [x for x in agent.alerts if get(x, "rule.id") == DROP_THEN_EXEC] == [a]
    base = {"b9215317-d512-4a7b-af7b-862efdfc3b55", "16f2feb9-826a-414e-b999-68d06c782a2b"}
    assert not [x for x in agent.alerts if get(x, "rule.id") in base]


def test_shipped_correlation_refused_changes_by_one_user(scratch: Path,
                                                        test_user: UserIds) -> None:
    """The built-in event_count correlation: four refused writes to /etc/shadow by an
    unprivileged user are no alert, the fifth within the minute is one, grouped by user.
    (The opens fail with EACCES: /etc/shadow is never changed.)"""
    rules = scratch / "rules"
    rules.mkdir()
    agent = AgentProc(["--config", str(config(scratch, rules, 0))],
                      db=scratch / "state" / "baseline.db").start()
    attempt = ("import errno\ntry:\n    open('/etc/shadow', 'ab')\nexcept PermissionError:\n"
               "    pass\nelse:\n    raise SystemExit('/etc/shadow was writable')\n")
    try:
        agent.probe(scratch / "w", timeout=60)
        for _ in range(4):
            py_child(attempt, user=test_user.ids)
        agent.settle(scratch / "w")   # /etc/shadow is watched for the rule, not reported
        assert not [x for x in agent.alerts if get(x, "rule.id") == REFUSED_BURST]
        last = py_child(attempt, user=test_user.ids)
        (a,) = agent.wait_for(by_rule(REFUSED_BURST), alerts=True, timeout=15)
    finally:
        rc, _ = agent.stop()
    assert rc == 0
    assert get(a, "vigil.alert.group") == {"user.id": str(test_user.uid)}
    assert get(a, "vigil.alert.count") == 5
    assert get(a, "process.pid") == last.pid and get(a, "file.path") == "/etc/shadow"
    assert len(get(a, "vigil.alert.related")) == 5


def test_an_ignored_name_in_a_watched_tree_still_reaches_the_rules(scratch: Path) -> None:
    """`ignore` keeps a name out of the telemetry and the baseline, not out of detection: a
    file named like an editor swap file (ignored by the default config) in a watched tree
    fires a rule on it, and is still not reported as an event."""
    rules = scratch / "rules"
    rules.mkdir()
    (rules / "swp.yml").write_text(FILE_RULE.replace("'.marker'", "'.swp'"))
    cfg = config(scratch, rules, 0, builtin=False)
    text = cfg.read_text() + "ignore: ['*.swp']\n"
    cfg.write_text(text)
    agent = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db").start()
    w = scratch / "w"
    try:
        agent.probe(w, timeout=60)
        child = py_child(f"open({str(w)!r} + '/.payload.swp', 'w').write('x')\n")
        a = agent.wait_for(by_rule("5a0f3c1e-7d2b-4c8e-9f10-000000000001"), alerts=True,
                           timeout=15)[0]
        agent.settle(w)
    finally:
        rc, _ = agent.stop()
    assert rc == 0
    assert get(a, "file.path") == str(w / ".payload.swp") and get(a, "process.pid") == child.pid
    assert not [e for e in agent.events if str(get(e, "file.path", "")).endswith(".swp")]
