"""The detection stage as pure logic: rule sets from config, matches -> alerts, suppression
windows and their repeat alerts, reloads, the ECS and pretty forms of an alert, ATT&CK tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.config import ConfigError, RulesConfig, load_config
from vigil.events.model import ExecEvent, FileEvent, FileOp, Process
from vigil.outputs.ecs_alert import alert_to_ecs
from vigil.outputs.pretty import PrettySink
from vigil.rules.alert import ruleset_of
from vigil.rules.attack import threat
from vigil.rules.detector import Detector
from vigil.rules.loader import builtin_rules_dir
from vigil.rules.ruleset import build_ruleset

S = 1_000_000_000
RULE = """
title: Curl to a pipe
id: 11111111-2222-3333-4444-555555555555
status: test
description: curl run with -o /dev/stdout
author: A. One, B. Two
references: [https://example.org/one, https://example.org/two]
logsource: {product: linux, category: process_creation}
detection:
    selection:
        Image|endswith: /curl
        CommandLine|contains: /dev/stdout
    condition: selection
level: high
tags: [attack.execution, attack.command-and-control, attack.t1105, attack.t1059.004]
"""
QUIET = RULE.replace("11111111-2222-3333-4444-555555555555",
                     "99999999-2222-3333-4444-555555555555").replace(
    "level: high", "level: informational").replace("Curl to a pipe", "Quiet one")


def proc(pid: int, start: int = 7, args: list[bytes] | None = None) -> Process:
    return Process(pid=pid, tid=pid, ppid=1, start_time=start, parent_start_time=1, uid=0, gid=0,
                   euid=0, egid=0, auid=1000, session_id=3, comm=b"curl", cgroup_id=0,
                   mnt_ns=0, executable=b"/usr/bin/curl",
                   args=args or [b"curl", b"-o", b"/dev/stdout", b"http://198.51.100.1/"],
                   user_name="root", enriched=True)


def ruleset(tmp_path: Path, *texts: str, **kw: object) -> Detector:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    for i, t in enumerate(texts):
        (d / f"r{i}.yml").write_text(t)
    window = int(kw.pop("window", 60))   # type: ignore[call-overload]
    cfg = RulesConfig(builtin=False, paths=(d,), **kw)   # type: ignore[arg-type]
    return Detector(build_ruleset(cfg), window, host={"name": "h"})


def test_a_match_is_an_alert_and_the_benign_look_alike_is_not(tmp_path: Path) -> None:
    det = ruleset(tmp_path, RULE)
    hit = ExecEvent(10 * S, proc(100))
    benign = ExecEvent(10 * S, proc(101, args=[b"curl", b"-o", b"/tmp/out", b"x"]))
    alerts = det.process([benign, hit])
    assert [a.event["process"]["pid"] for a in alerts] == [100]
    assert alerts[0].rule.title == "Curl to a pipe" and alerts[0].category == "process_creation"
    assert det.counters()["matches"] == 1


def test_repeats_by_one_process_are_one_alert_then_one_repeat_with_the_count(
        tmp_path: Path) -> None:
    det = ruleset(tmp_path, RULE, window=60)
    p = proc(100)
    first = det.process([ExecEvent(10 * S, p)])
    assert len(first) == 1
    assert det.process([ExecEvent((10 + i) * S, p) for i in range(1, 5)]) == []
    other = det.process([ExecEvent(12 * S, proc(200))])   # another process: its own alert
    assert len(other) == 1
    assert det.tick(69 * S) == []                         # the window is still open
    (repeat,) = det.tick(70 * S)
    assert repeat.repeat and repeat.count == 4 and repeat.first_ns == 10 * S
    assert repeat.timestamp_ns == 14 * S
    assert det.counters() == {"matches": 6, "alerts": 3, "suppressed": 4, "rules": 1}
    # after the window, the same process alerts again at once
    assert len(det.process([ExecEvent(80 * S, p)])) == 1
    assert det.close() == []                              # nothing suppressed in that one


def test_window_zero_alerts_every_match(tmp_path: Path) -> None:
    det = ruleset(tmp_path, RULE, window=0)
    p = proc(100)
    assert len(det.process([ExecEvent(i * S, p) for i in range(3)])) == 3
    assert det.tick(100 * S) == [] and det.counters()["suppressed"] == 0


def test_reload_closes_the_open_windows(tmp_path: Path) -> None:
    det = ruleset(tmp_path, RULE, window=60)
    p = proc(100)
    det.process([ExecEvent(i * S, p) for i in range(3)])
    (repeat,) = det.swap(build_ruleset(RulesConfig(builtin=False, paths=(tmp_path / "rules",))))
    assert repeat.count == 2


def test_disabled_and_minimum_level(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, RULE, QUIET, min_level="low").ruleset
    assert [r.title for r in rs.rules] == ["Curl to a pipe"] and rs.below_level == 1
    rs = ruleset(tmp_path, RULE, QUIET, min_level="informational",
                 disabled=("Curl to a pipe", "nope")).ruleset
    assert [r.title for r in rs.rules] == ["Quiet one"] and rs.disabled == 1
    assert rs.unknown_disabled == ("nope",)
    assert rs.describe() == "1 rules loaded, 1 disabled"


def test_a_bad_rule_is_refused_and_the_others_run(tmp_path: Path) -> None:
    bad = "title: bad\nlogsource: {category: process_creation}\ndetection:\n" \
          "  sel: {Image|nosuchmodifier: x}\n  condition: sel\n"
    rs = ruleset(tmp_path, RULE, bad).ruleset
    assert len(rs.rules) == 1
    (err,) = rs.refused
    assert "r1.yml:4" in str(err) and "nosuchmodifier" in str(err)


def test_alert_as_ecs(tmp_path: Path) -> None:
    det = ruleset(tmp_path, RULE)
    (a,) = det.process([ExecEvent(10 * S, proc(100))])
    doc = alert_to_ecs(a)
    assert doc["event"]["kind"] == "alert" and doc["event"]["action"] == "exec"
    assert doc["event"]["severity"] == 73
    assert doc["rule"]["id"] == "11111111-2222-3333-4444-555555555555"
    assert doc["rule"]["name"] == "Curl to a pipe"
    assert doc["rule"]["reference"] == "https://example.org/one"
    assert doc["rule"]["author"] == ["A. One", "B. Two"]
    assert doc["rule"]["ruleset"] == "sigma"
    assert doc["vigil"]["rule"]["level"] == "high"
    assert doc["vigil"]["alert"]["count"] == 1
    assert doc["process"]["command_line"] == "curl -o /dev/stdout http://198.51.100.1/"
    assert doc["threat"]["tactic"] == {"name": ["Execution", "Command and Control"],
                                       "id": ["TA0002", "TA0011"]}
    assert doc["threat"]["technique"]["id"] == ["T1105", "T1059"]
    assert doc["threat"]["technique"]["subtechnique"] == {"id": ["T1059.004"],
                                                          "name": ["Unix Shell"]}
    assert doc["tags"][0] == "attack.execution"
    assert a.event["event"]["kind"] == "event", "the matched event's document was changed"


def test_pretty_alert_line(tmp_path: Path) -> None:
    det = ruleset(tmp_path, RULE)
    (a,) = det.process([ExecEvent(10 * S, proc(100))])
    line = PrettySink(1, colour=False).line(a)
    assert "ALERT HIGH" in line and "Curl to a pipe" in line
    assert "exec curl -o /dev/stdout http://198.51.100.1/ by root pid 100 /usr/bin/curl" in line


def test_file_events_feed_file_rules(tmp_path: Path) -> None:
    rule = RULE.replace("process_creation", "file_event").replace(
        "        Image|endswith: /curl\n        CommandLine|contains: /dev/stdout",
        "        TargetFilename|startswith: /etc/cron.d/")
    det = ruleset(tmp_path, rule, window=0)
    ev = FileEvent(5 * S, FileOp.CREATE, b"/etc/cron.d/job", proc(100))
    failed = FileEvent(5 * S, FileOp.CREATE, b"/etc/cron.d/job2", proc(100), errno=13)
    alerts = det.process([ev, failed])
    assert [a.event["file"]["path"] for a in alerts] == ["/etc/cron.d/job"]


def test_attack_tags() -> None:
    t = threat(["attack.defense-impairment", "attack.t1685", "attack.g0032", "attack.s0002",
                "cve.2021-1234", "attack.t1548.001"])
    ecs = t.to_ecs()
    assert ecs is not None
    assert ecs["tactic"] == {"name": ["Defense Impairment"]}   # no id known: none guessed
    assert ecs["technique"]["id"] == ["T1685", "T1548"]
    assert "name" not in ecs["technique"]                        # T1685 has no known name
    assert threat(["cve.2021-1234"]).to_ecs() is None


def test_ruleset_names() -> None:
    pack = builtin_rules_dir()
    assert ruleset_of(str(pack / "sigmahq" / "linux" / "x.yml")) == "sigmahq"
    assert ruleset_of("/etc/vigil/rules/x.yml") == "sigma"


@pytest.mark.parametrize("text, where, what", [
    ("rules: {min_level: loud}\n", ":1:", "'min_level' must be one of"),
    ("rules:\n  paths: [/nonexistent/rules]\n", ":2:", "does not exist"),
    ("rules:\n  suppres_window: 5\n", ":2:", "did you mean 'suppress_window'"),
    ("rules:\n  paths: [relative/x]\n", ":2:", "must be an absolute path"),
    ("rules:\n  suppress_window: soon\n", ":2:", "'suppress_window' must be seconds"),
])
def test_rules_config_errors(tmp_path: Path, text: str, where: str, what: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert f"{f}{where}" in str(e.value) and what in str(e.value)


def test_rules_config_defaults_and_values(tmp_path: Path) -> None:
    assert load_config(None).rules == RulesConfig()
    f = tmp_path / "c.yaml"
    f.write_text(f"rules:\n  builtin: false\n  paths: [{tmp_path}]\n  disabled: [x]\n"
                 "  min_level: high\n  suppress_window: 2m\n")
    assert load_config(f).rules == RulesConfig(builtin=False, paths=(tmp_path,),
                                               disabled=("x",), min_level="high",
                                               suppress_window=120)


def test_rules_test_replays_through_the_detector_with_correlations(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`vigil rules test` on the shipped event_count correlation: five refused writes by one
    user in a minute are one alert; four by another are none."""
    import json

    from vigil.cli import main

    def failed(uid: int, second: int) -> str:
        return json.dumps({"@timestamp": f"2026-12-07T10:00:{second:02d}.000000Z",
                           "event": {"kind": "event", "dataset": "vigil.file",
                                     "action": "modified", "outcome": "failure"},
                           "file": {"path": "/etc/shadow"}, "user": {"id": str(uid)},
                           "process": {"pid": 40 + second, "executable": "/usr/bin/python3"}})

    ev = tmp_path / "ev.jsonl"
    ev.write_text("\n".join([failed(1000, s) for s in range(5)]
                            + [failed(1001, s) for s in range(4)]) + "\n")
    corr = builtin_rules_dir() / "vigil" / "correlations" / "failed_sensitive_writes.yml"
    assert main(["rules", "test", str(corr), "--events", str(ev), "--json"]) == 0
    out, err = capsys.readouterr()
    alerts = [json.loads(line) for line in out.splitlines()]
    assert [a["at"] for a in alerts] == [f"{ev}:5"], out
    doc = alerts[0]["alert"]
    assert doc["rule"]["id"] == "c364acb5-c01d-4537-a96a-7bbf0b49ec79"
    assert doc["vigil"]["alert"]["group"] == {"user.id": "1000"}
    assert doc["vigil"]["alert"]["count"] == 5 and doc["process"]["pid"] == 44
    assert err.startswith("9 events, 1 alerts of 1 rules")
