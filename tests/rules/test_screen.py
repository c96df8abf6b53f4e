"""The detector's shortcuts change no result: the Screen (one search over all the records of an
event, which lets most events skip matching), the who cache (the fields from an event's
who-data made and searched once per who-data) and the records limited to the fields the rules
read find exactly the (event, rule) pairs that matching every whole record of every event
through every rule finds (``Engine.match`` over ``ecs_to_records``, which the differential
test holds to pySigma's SQLite backend).

The events: the recorded corpus (real commands under the agent: execs, file changes, failed
attempts, many of them made to hit the auditd rules), and file events made here of every
absolute path the pack's file rules name, each by operation, by two processes whose events
share their who-data (so the cache is hit), both a root shell and a user's program.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rules.corpus import RECORDED, RECORDED_AUDITD
from tests.rules.screen_events import HOST, TS, process, rule_paths
from vigil.config import RulesConfig
from vigil.events.model import FileEvent, FileOp
from vigil.outputs.ecs import to_ecs
from vigil.rules.detector import Detector
from vigil.rules.fieldmap import ecs_to_records
from vigil.rules.ruleset import RuleSet, build_ruleset


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return build_ruleset(RulesConfig(min_level="informational"))


def _file_docs(rs: RuleSet) -> Iterator[dict[str, Any]]:
    shell = process(100, 0, b"/usr/bin/bash", [b"bash"])
    user = process(200, 1000, b"/usr/bin/python3", [b"python3", b"x.py"])
    for path in rule_paths(rs):
        raw = path.encode()
        for p in (shell, user):
            for op, kw in ((FileOp.CREATE, {"mode": 0o4755}), (FileOp.MODIFY, {}),
                           (FileOp.DELETE, {}), (FileOp.CHMOD, {"mode": 0o2755}),
                           (FileOp.RENAME, {"target_path": raw + b".new"}),
                           (FileOp.OPEN, {"errno": 13})):
                yield to_ecs(FileEvent(TS, op, raw, p, inode=7, device=1,
                                       **kw), HOST)  # type: ignore[arg-type]


def _recorded() -> list[dict[str, Any]]:
    return [json.loads(line) for f in (RECORDED, RECORDED_AUDITD)
            for line in Path(f).read_text("utf-8").splitlines()]


def _every_record(rs: RuleSet, doc: dict[str, Any]) -> set[str]:
    return {r.where for key, rec in ecs_to_records(doc) for r in rs.engine.match(key, rec)}


def test_screened_matching_finds_every_match(ruleset: RuleSet) -> None:
    det = Detector(ruleset, 0, host=HOST)
    docs = [*_recorded(), *_file_docs(ruleset)]
    matched = screened_out = 0
    for doc in docs:
        want = _every_record(ruleset, doc)
        got = [r.where for r, _, _ in det.matching(doc)]
        assert sorted(got) == sorted(want), json.dumps(doc)[:300]
        matched += len(want)
        screened_out += not want
    # not vacuous: many (event, rule) pairs, and events the screen had to let through and
    # others it could drop
    print(f"{len(docs)} events, {matched} matches, {screened_out} events matching no rule, "
          f"{det.who_hits} met the who-data of an earlier one")
    assert matched > 1_000 and screened_out > 500 and det.who_hits > 1_000


def test_the_screen_lets_few_events_through(ruleset: RuleSet) -> None:
    """What the screen is for: ordinary file events of one process (a burst) reach no
    record matching at all."""
    det = Detector(ruleset, 0, host=HOST)
    p = process(300, 0, b"/usr/bin/cp", [b"cp", b"-a", b"a", b"b"])
    engine = ruleset.engine
    calls = 0
    originals = {k: m.match for k, m in engine.matchers.items()}

    def counting(m_match: Any) -> Any:
        def f(rec: dict[str, str]) -> Any:
            nonlocal calls
            calls += 1
            return m_match(rec)
        return f

    try:
        for k, m in engine.matchers.items():
            m.match = counting(originals[k])  # type: ignore[method-assign]
        for i in range(200):
            doc = to_ecs(FileEvent(TS, FileOp.CREATE, f"/srv/data/f{i}".encode(), p, inode=i,
                                   device=1), HOST)
            assert det.matching(doc) == []
    finally:
        for k, m in engine.matchers.items():
            m.match = originals[k]  # type: ignore[method-assign]
    assert calls == 0
