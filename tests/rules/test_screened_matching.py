"""The detector's shortcut for events that pass the batch screen changes no result.

Such an event is matched for the keys the screen passed only, and a key with one record is
matched with the atoms the screen found in the event's text (not searched again); a base
rule's record reaches the correlations whole only when one keeps it (vigil.rules.lazyrecord).
Each is compared here with the exact path: every whole record of every key made
(``ecs_to_records``) and searched by its key's matcher; ``Detector.matching`` of one
document (no batch) is compared the same way.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.rules.screen_events import HOST, TS, process
from tests.rules.test_batch_screen import USER, _docs
from vigil.config import RulesConfig
from vigil.events.model import ExecEvent, FileEvent, FileOp
from vigil.outputs.ecs import to_ecs
from vigil.rules.detector import Detector
from vigil.rules.fieldmap import ecs_to_records
from vigil.rules.lazyrecord import LazyRecord
from vigil.rules.matcher import Screen
from vigil.rules.ruleset import RuleSet, build_ruleset


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return build_ruleset(RulesConfig(min_level="informational"))


def _burst(n: int, root: str = "/tmp/build") -> list[dict[str, Any]]:
    """A program's file activity in /tmp: every event fires the dropper correlation's base
    rule (a file written in a temporary directory), so its shape goes hot."""
    p = process(300, 1000, b"/usr/bin/cc", [b"cc", b"-c", b"x.c"])
    out = []
    for i in range(n):
        a, b = f"{root}/o{i}".encode(), f"{root}/o{i}.tmp".encode()
        out += [to_ecs(FileEvent(TS + i, FileOp.CREATE, a, p, mode=0o644, inode=i + 1,
                                 device=1), HOST),
                to_ecs(FileEvent(TS + i, FileOp.MODIFY, a, p, inode=i + 1, device=1), HOST),
                to_ecs(FileEvent(TS + i, FileOp.RENAME, a, p, target_path=b, inode=i + 1,
                                 device=1), HOST),
                to_ecs(FileEvent(TS + i, FileOp.DELETE, b, p, inode=i + 1, device=1), HOST)]
    return out


def _exact(det: Detector, doc: dict[str, Any]) -> list[tuple[str, str, int, dict[str, str]]]:
    """(rule, key, record index, whole record) by every whole record of every key, each
    searched by its key's own matcher."""
    out: list[tuple[str, str, int, dict[str, str]]] = []
    seen: set[str] = set()
    index: dict[str, int] = {}
    for key, rec in ecs_to_records(doc):
        i = index[key] = index.get(key, -1) + 1
        for r in det.ruleset.engine.match(key, rec):
            if r.where not in seen:
                seen.add(r.where)
                out.append((r.where, key, i, rec))
    return out


def _shortcut(det: Detector, docs: list[dict[str, Any]]
              ) -> tuple[list[list[tuple[str, str, int, dict[str, str]]]], int]:
    """What the detector's batch path finds per document (the whole record made as the
    correlations would), and how many documents took the screen's atoms."""
    got: list[list[tuple[str, str, int, dict[str, str]]]] = [[] for _ in docs]
    with_atoms = 0
    for i, keys, atoms in det._screen.screened(docs):
        with_atoms += atoms is not None
        for rule, key, r, record in det._matches(docs[i], keys, atoms):
            names = det._names.get(key)
            whole = record if names is None else LazyRecord(
                record, names, lambda d=docs[i], k=key, j=r: ecs_to_records(d, (k,))[j][1])
            for n in names or ():
                assert whole.get(n) == ecs_to_records(docs[i], (key,))[r][1].get(n)
            got[i].append((rule.where, key, r, dict(whole)))
    return got, with_atoms


@pytest.mark.parametrize("size", [1, 16, 512])
def test_the_shortcut_finds_what_every_record_finds(ruleset: RuleSet, size: int) -> None:
    docs = _docs(ruleset) + _burst(300) + _docs(ruleset)[:2000]
    det = Detector(ruleset, 0, host=HOST)
    exact = Detector(ruleset, 0, host=HOST)
    want = [_exact(exact, d) for d in docs]
    assert sum(map(len, want)) > 2_000
    got: list[list[tuple[str, str, int, dict[str, str]]]] = []
    shortcut = 0
    for i in range(0, len(docs), size):
        g, n = _shortcut(det, docs[i:i + size])
        got += g
        shortcut += n
    for doc, g, w in zip(docs, got, want, strict=True):
        assert g == w, json.dumps(doc)[:300]
    assert shortcut > 1_000   # not vacuous: the burst's hot shape took it


def test_one_document_alone_finds_what_every_record_finds(ruleset: RuleSet) -> None:
    """``matching`` without the batch: the whole event screened, a key with one record
    matched with its atoms among the event's."""
    det = Detector(ruleset, 0, host=HOST)
    docs = _docs(ruleset) + _burst(50)
    for doc in docs:
        want = [(w, key, i) for w, key, i, _ in _exact(det, doc)]
        assert [(r.where, key, i) for r, key, i in det.matching(doc)] == want, \
            json.dumps(doc)[:300]


def test_a_hot_burst_takes_the_shortcut_and_matches_every_event(ruleset: RuleSet) -> None:
    """The case the shortcut is for: after the first batches the burst's shapes are hot,
    each event is searched alone, and its one key's record is matched with those atoms;
    the base rule matches each file written (created, modified, renamed: not deleted)."""
    det = Detector(ruleset, 0, host=HOST)
    docs = _burst(256)
    _shortcut(det, docs[:512])
    got, with_atoms = _shortcut(det, docs[512:])
    assert with_atoms >= len(docs[512:]) * 3 // 4 * 9 // 10
    tmp = [[w for w, key, _, _ in g if key == "file_event" and "dropped_and_executed" in w]
           for g in got]
    assert [bool(t) for t in tmp] == [d["event"]["action"] != "deleted" for d in docs[512:]]


def test_a_shared_scope_code_turns_the_atoms_shortcut_off(ruleset: RuleSet,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Two keys with one scope code could lend each other atoms: the Screen then says it is
    not ``scoped``, and the records are searched as before, with the same results."""
    import vigil.rules.matcher as matcher
    monkeypatch.setattr(matcher, "scope", lambda key: "0000\x1d")
    screen = Screen(ruleset.engine.matchers)
    assert not screen.scoped
    assert ruleset.engine.screen is not None and ruleset.engine.screen.scoped


def test_a_wrong_atom_set_would_be_seen(ruleset: RuleSet) -> None:
    """The shortcut's answer comes from the atoms it is given: atoms missing the base
    rule's would lose the match the exact path finds (what the tests above compare)."""
    det = Detector(ruleset, 0, host=HOST)
    doc = _burst(1)[0]
    want = [r.where for r, _, _ in det.matching(doc)]
    assert any("dropped_and_executed" in w for w in want)
    got = [r.where for r, _, _, _ in det._matches(doc, ("file_event",), set())]
    assert got != want


def test_the_correlation_keeps_whole_records(ruleset: RuleSet) -> None:
    """A file dropped in /tmp and run: the correlation's alert shows the whole base
    records, as ecs_to_records makes them, though the match was made of fields read."""
    det = Detector(ruleset, 0, host=HOST)
    burst = _burst(64, "/tmp/drop")
    run = process(301, 1000, b"/tmp/drop/o63.tmp", [b"/tmp/drop/o63.tmp"])
    exec_doc = to_ecs(ExecEvent(TS + 100, run), HOST)
    alerts = det.process_documents([(TS, d) for d in burst] + [(TS + 100, exec_doc)])
    corr = [a for a in alerts if a.category == "correlation"]
    assert len(corr) == 1, alerts
    renamed = [d for d in burst if d["event"]["action"] == "renamed"][-1]
    whole = dict(ecs_to_records(renamed, ("file_event",))[0][1])
    assert corr[0].related[0] == whole
    assert set(whole) > set(det._names["file_event"])   # more than the fields read
    assert USER.pid != run.pid
