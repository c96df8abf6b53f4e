"""The batch screen changes no result: the text it searches for an event (made from a plan per
shape of event, not from the records) is the text of the event's records, part for part, and
screening a whole batch at once lets through every event that fires a rule, so the detector
finds exactly the (event, rule) pairs that matching every whole record of every event finds.

The events: the recorded corpus (real commands under the agent), file events of every
operation made here (failed ones, renames, links, a scan's result, no inode, values holding
the joined text's separators, a non-text path), network events, and file events on every path
the pack's rules name, by two processes whose events share their who-data.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rules.corpus import RECORDED, RECORDED_AUDITD
from tests.rules.screen_events import HOST, TS, process, rule_paths
from vigil.config import RulesConfig
from vigil.events.model import FileEvent, FileOp, NetEvent, NetOp
from vigil.outputs.ecs import to_ecs
from vigil.rules.detector import Detector
from vigil.rules.fieldmap import ecs_to_parts, ecs_to_records, get_path, who_part
from vigil.rules.matcher import logsource_key
from vigil.rules.patterns import FIELD_SEP
from vigil.rules.ruleset import RuleSet, build_ruleset, compile_rules


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return build_ruleset(RulesConfig(min_level="informational"))


SHELL = process(100, 0, b"/usr/bin/bash", [b"bash"])
USER = process(200, 1000, b"/usr/bin/python3", [b"python3", b"x.py"])


def _file_events(paths: list[str]) -> Iterator[FileEvent]:
    for path in paths:
        raw = path.encode()
        for p in (SHELL, USER):
            for op in FileOp:
                kw: dict[str, Any] = {}
                if op in (FileOp.RENAME, FileOp.LINK):
                    kw["target_path"] = raw + b".new"
                if op in (FileOp.CREATE, FileOp.CHMOD):
                    kw["mode"] = 0o4755
                yield FileEvent(TS, op, raw, p, inode=7, device=1, **kw)
                yield FileEvent(TS, op, raw, p, inode=0, device=1, errno=13, **kw)


def _odd_docs() -> Iterator[dict[str, Any]]:
    """Documents the plans must not get wrong: separators in values, a scan's result, a
    relative name, no inode, non-text values."""
    for path in (b"/tmp/a\x1eb", b"/tmp/a\x1fb", b"rel/name", b"noslash", b"/"):
        for op in (FileOp.CREATE, FileOp.RENAME, FileOp.DELETE, FileOp.MODIFY):
            kw: dict[str, Any] = {"target_path": path + b"\x1e"} if op == FileOp.RENAME else {}
            yield to_ecs(FileEvent(TS, op, path, USER, inode=3, device=1, **kw), HOST)
    base = to_ecs(FileEvent(TS, FileOp.CREATE, b"/tmp/x", USER, inode=5, device=1), HOST)
    for change in ({"file": {**base["file"], "path": 7}},
                   {"file": {**base["file"], "inode": None}},
                   {"file": {**base["file"], "inode": "12\x1e"}},
                   {"vigil": {**base["vigil"], "file": {**base["vigil"]["file"],
                                                          "source": "scan"}}},
                   {"vigil": {**base["vigil"], "file": {**base["vigil"]["file"],
                                                          "operation": ["create"]}}},
                   {"event": {**base["event"], "action": "created\x1e"}},
                   {"error": {"code": "EACCES\x1e"},
                    "event": {**base["event"], "outcome": "failure"}}):
        yield {**base, **change}


def _net_docs() -> Iterator[dict[str, Any]]:
    lo = bytes([127, 0, 0, 1]) + bytes(12)
    for i, op in enumerate(NetOp):
        for p in (SHELL, USER):
            yield to_ecs(NetEvent(TS, op, p, 2, 6, lo, 40000 + i, lo, (4444, 22, 53)[i % 3]),
                         HOST)


def _recorded() -> list[dict[str, Any]]:
    return [json.loads(line) for f in (RECORDED, RECORDED_AUDITD)
            for line in Path(f).read_text("utf-8").splitlines()]


def _docs(rs: RuleSet) -> list[dict[str, Any]]:
    return [*_recorded(), *(to_ecs(ev, HOST) for ev in _file_events(rule_paths(rs))),
            *_odd_docs(), *_net_docs()]


def _parts(text: str) -> collections.Counter[str]:
    return collections.Counter(FIELD_SEP + p for p in text.split(FIELD_SEP)[1:])


def test_planned_text_is_the_records_text(ruleset: RuleSet) -> None:
    det = Detector(ruleset, 0, host=HOST)
    screen, matchers = det._screen, ruleset.engine.matchers
    planned = 0
    for doc in _docs(ruleset):
        planned_ = screen.planned(doc)
        want_keys = []
        want: collections.Counter[str] = collections.Counter()
        unsearchable = False
        for key, who, recs in ecs_to_parts(doc, matchers.keys(), det._fields):
            want_keys.append(key)
            for r in (who, *recs):
                for p in matchers[key].joined_parts(r):
                    unsearchable |= p.count(FIELD_SEP) != 1
                    want[p] += 1
        if planned_ is None:   # left to the records, which the detector matches for real
            continue
        shape, text = planned_
        planned += 1
        assert list(shape.keys) == want_keys, json.dumps(doc)[:300]
        whos = [p for k in shape.keys for p in matchers[k].joined_parts(who_part(k, doc,
                                                                                 det._fields))]
        got = _parts("".join(whos) + shape.const + text)
        if unsearchable:   # a who part's value holds FS: the screen lets the event through
            assert any(p.count(FIELD_SEP) != 1 for p in whos), json.dumps(doc)[:300]
            continue
        assert got == want, json.dumps(doc)[:300]
    assert planned > 1_000   # not vacuous: most file and network events have a plan


def test_batches_find_every_match(ruleset: RuleSet) -> None:
    docs = _docs(ruleset)
    want = [sorted({r.where for key, rec in ecs_to_records(doc)
                    for r in ruleset.engine.match(key, rec)}) for doc in docs]
    assert sum(map(len, want)) > 1_000
    for size in (1, 7, 512):
        det = Detector(ruleset, 0, host=HOST)
        got: list[list[str]] = []
        for i in range(0, len(docs), size):
            batch = docs[i:i + size]
            cands = set(det._screen.candidates(batch))
            for j, doc in enumerate(batch):
                found = sorted(r.where for r, _, _ in det.matching(doc))
                assert j in cands or not found, json.dumps(doc)[:300]
                got.append(found)
        assert got == want


def test_a_burst_is_one_search(ruleset: RuleSet) -> None:
    """What the batch screen is for: one program's ordinary file events, a batch of them,
    are decided by one search, and none reaches the records."""
    det = Detector(ruleset, 0, host=HOST)
    p = process(300, 0, b"/usr/bin/cp", [b"cp", b"-a", b"a", b"b"])
    docs = [to_ecs(FileEvent(TS, op, f"/srv/data/f{i}".encode(), p, inode=i + 1, device=1,
                             target_path=f"/srv/data/g{i}".encode()
                             if op == FileOp.RENAME else None), HOST)
            for i in range(128) for op in (FileOp.CREATE, FileOp.MODIFY, FileOp.RENAME,
                                           FileOp.DELETE)]
    assert det._screen.candidates(docs[:4]) == []   # the who-data and shapes met once
    det._screen.searches = 0
    assert det._screen.candidates(docs[4:]) == []
    assert det._screen.searches == 1
    assert det.process_documents([(TS, d) for d in docs]) == []


def test_a_hot_shape_still_finds_every_match(ruleset: RuleSet) -> None:
    """Execs through the process rules alone (no auditd view, so execs have a plan): most
    pass the batch search, so their shape goes hot and skips it; the matches stay the same."""
    rs = build_ruleset(RulesConfig(min_level="informational"))
    keep = [r for r in rs.rules if logsource_key(r.logsource) == "process_creation"]
    rs.engine, rs.rules, _ = compile_rules(keep)
    rs.correlations = None
    docs = [d for d in _recorded() if get_path(d, ("event", "action")) == "exec"] * 4
    want = [sorted({r.where for key, rec in ecs_to_records(doc)
                    for r in rs.engine.match(key, rec)}) for doc in docs]
    assert sum(map(len, want)) > 100
    det = Detector(rs, 0, host=HOST)
    got: list[list[str]] = []
    for i in range(0, len(docs), 64):
        batch = docs[i:i + 64]
        cands = set(det._screen.candidates(batch))
        for j, doc in enumerate(batch):
            found = sorted(r.where for r, _, _ in det.matching(doc))
            assert j in cands or not found, json.dumps(doc)[:300]
            got.append(found)
    assert got == want
    assert any(s.hot for s in det._screen._shapes.values() if s is not None
               and not isinstance(s, list))
