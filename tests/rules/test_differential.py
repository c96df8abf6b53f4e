"""Differential test of the rule engine: Vigil's matches == pySigma + SQLite's, pair by pair.

Every shipped rule (vigil/data/rules) and the edge-case rules of tests/rules/edge_rules (the
modifiers and condition forms the shipped Linux rules do not use) are converted to SQL by
pySigma's SQLite backend and run over the corpus (tests/rules/corpus.py: recorded exec events
and edge cases generated from the rules) in SQLite; Vigil's compiled engine matches the same
records. The (event, rule) match sets must be equal. A disagreement passes only when one of
the EXPLAINED checks below proves that the SQL side is the one that is wrong, for a reason
the backend documents itself (its README, "Limitations"); every other one fails the test.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.rules import oracle
from tests.rules.corpus import corpus
from vigil.rules.loader import builtin_rules_dir, load_paths
from vigil.rules.matcher import Engine
from vigil.rules.model import CidrValue, Rule

pytestmark = pytest.mark.slow
EDGE = Path(__file__).parent / "edge_rules"
Record = dict[str, str]


@dataclass
class Outcome:
    rules: list[Rule]
    events: list[tuple[str, Record]]
    converted: dict[str, oracle.SqlRule]
    not_converted: dict[str, str]
    vigil: set[tuple[str, int]]
    sql: set[tuple[str, int]]
    ascii_engine: Engine


def _ascii_case(o: Outcome, rule: Rule, i: int) -> bool:
    """SQLite folds case for ASCII letters only ("Case folding (NOCASE, LIKE) is ASCII
    only"): Vigil folds Unicode. Explained when Vigil restricted to ASCII folding agrees with
    SQLite on this pair."""
    cat, rec = o.events[i]
    if not any(not c.isascii() and c.lower() != c.upper() for v in rec.values() for c in v):
        return False   # no letter outside ASCII that has a case: folding cannot be the cause
    ascii_says = any(r.id == rule.id for r in o.ascii_engine.match(cat, rec))
    return ascii_says == ((rule.id, i) in o.sql) != ((rule.id, i) in o.vigil)


def _cidr_text(o: Outcome, rule: Rule, i: int) -> bool:
    """The backend expands a CIDR into text prefixes (``127.%``: "SQLite has no network
    type"), so SQL puts any text starting with the prefix in the network; Vigil reads the
    value as an address. Explained when the rule tests a CIDR on a field whose value here is
    not an IP address."""
    rec = o.events[i][1]
    for s in rule.searches.values():
        for alt in s.alternatives:
            for it in alt:
                if it.field in rec and any(isinstance(v, CidrValue) for v in it.values):
                    try:
                        ipaddress.ip_address(rec[it.field])
                    except ValueError:
                        return True
    return False


EXPLAINED: dict[str, Callable[[Outcome, Rule, int], bool]] = {
    "SQLite folds ASCII case only": _ascii_case,
    "SQL CIDR as text prefixes": _cidr_text,
}


@pytest.fixture(scope="module")
def outcome() -> Outcome:
    loaded = load_paths([builtin_rules_dir(), EDGE])
    assert not loaded.refused, [str(e) for e in loaded.refused]
    rules = loaded.rules
    events = corpus(rules)
    by_file: dict[str, dict[str, str]] = {}
    for r in rules:
        assert r.id is not None and r.logsource.category is not None
        by_file.setdefault(r.source, {})[r.id] = r.logsource.category
    converted: dict[str, oracle.SqlRule] = {}
    not_converted: dict[str, str] = {}
    for src, cats in by_file.items():
        for rid, q in oracle.convert(Path(src), cats).items():
            if isinstance(q, str):
                not_converted[rid] = q
            else:
                converted[rid] = q
    columns: dict[str, set[str]] = {}
    for r in rules:
        columns.setdefault(r.logsource.category or "", set()).update(r.fields())
    db, index = oracle.database(events, columns)
    sql = {(rid, i) for rid, q in converted.items() for i in oracle.run(db, index, q)}
    engine = Engine.build(rules)
    assert not engine.errors
    vigil = {(r.id or "", i) for i, (cat, rec) in enumerate(events)
             for r in engine.match(cat, rec) if r.id in converted}
    return Outcome(rules, events, converted, not_converted, vigil, sql,
                   Engine.build(rules, fold="ascii"))


def test_every_rule_converts(outcome: Outcome) -> None:
    assert outcome.not_converted == {}
    assert len(outcome.converted) == len(outcome.rules)


def test_same_matches_as_sqlite(outcome: Outcome) -> None:
    o = outcome
    by_id = {r.id: r for r in o.rules}
    explained: Counter[str] = Counter()
    unexplained = []
    for rid, i in sorted(o.vigil ^ o.sql):
        rule = by_id[rid]
        why = next((name for name, check in EXPLAINED.items() if check(o, rule, i)), None)
        if why is None:
            unexplained.append(f"{rule.where} {rule.title!r}: vigil={(rid, i) in o.vigil} "
                               f"sql={(rid, i) in o.sql} on {o.events[i][1]!r}")
        else:
            explained[why] += 1
    print(f"\ndifferential: {len(o.events)} events x {len(o.converted)} rules = "
          f"{len(o.events) * len(o.converted)} pairs; matches: vigil {len(o.vigil)}, "
          f"sql {len(o.sql)}, both {len(o.vigil & o.sql)}; disagreements "
          f"{len(o.vigil ^ o.sql)} (explained: {dict(explained)}, unexplained: "
          f"{len(unexplained)})")
    assert not unexplained, "\n".join(unexplained[:40])


def test_the_corpus_exercises_every_rule(outcome: Outcome) -> None:
    """Equal match sets prove little if nothing matches: every rule must fire on some event
    of the corpus (in both engines) and stay silent on most."""
    fired = Counter(rid for rid, _ in outcome.vigil & outcome.sql)
    silent = [r.where for r in outcome.rules if fired[r.id] == 0]
    assert not silent
    n = len(outcome.events)
    noisy = [r.where for r in outcome.rules if fired[r.id] > n // 2]
    assert not noisy


def test_recorded_events_are_in_the_corpus(outcome: Outcome) -> None:
    cats = Counter(cat for cat, _ in outcome.events)
    assert cats["process_creation"] > 0 and cats["file_event"] > 0
    assert any(rec.get("Image", "").startswith("/usr/bin/") and "ParentImage" in rec
               for _, rec in outcome.events)
