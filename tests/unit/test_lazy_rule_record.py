"""A base rule's record reaches the correlations whole only when one keeps it
(vigil.rules.lazyrecord): read, it is the whole record; a correlation whose group table is
full keeps nothing and never makes it."""

from __future__ import annotations

from vigil.config import RulesConfig
from vigil.rules.correlation import CorrelationEngine
from vigil.rules.lazyrecord import LazyRecord, whole
from vigil.rules.model import Rule
from vigil.rules.ruleset import build_ruleset

WHOLE = {"TargetFilename": "/tmp/a", "Image": "/usr/bin/cc", "User": "root"}


class Maker:
    def __init__(self, rec: dict[str, str]) -> None:
        self.rec, self.calls = rec, 0

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        return dict(self.rec)


def test_read_as_a_mapping_it_is_the_whole_record() -> None:
    make = Maker(WHOLE)
    rec = LazyRecord({"TargetFilename": "/tmp/a"}, frozenset({"TargetFilename"}), make)
    assert rec.get("TargetFilename") == "/tmp/a" and rec["TargetFilename"] == "/tmp/a"
    assert make.calls == 0   # a field it holds: not made
    assert rec.get("User") == "root" and make.calls == 1
    assert dict(rec) == WHOLE and len(rec) == 3 and rec == WHOLE
    assert make.calls == 1   # made once
    assert whole(rec) == WHOLE and whole(WHOLE) is WHOLE


def test_a_field_read_but_absent_is_absent_in_both() -> None:
    make = Maker({"Image": "/x"})
    rec = LazyRecord({}, frozenset({"TargetFilename"}), make)
    assert rec.get("TargetFilename") is None and "TargetFilename" not in rec
    assert make.calls == 0   # absent from the fields it holds: absent from the whole
    assert "Image" in rec and make.calls == 1


def _tmp_rule(name: str = "vigil_tmp_file_written"
              ) -> tuple[CorrelationEngine, Rule, list[Rule]]:
    rs = build_ruleset(RulesConfig(min_level="informational"))
    ce = rs.correlations
    assert ce is not None
    rule = next(r for r in rs.rules if r.name == name)
    assert ce.wants(rule)
    return ce, rule, rs.rules


def test_a_kept_record_is_made_whole_and_an_overflowing_one_is_not() -> None:
    ce, rule, _ = _tmp_rule()
    ce.max_groups = 1
    names = frozenset({"TargetFilename", "Image"})
    first = Maker({**WHOLE, "TargetFilename": "/tmp/one"})
    ce.feed(rule, LazyRecord({"TargetFilename": "/tmp/one"}, names, first), 1)
    assert first.calls == 1   # a new group keeps it
    over = Maker({**WHOLE, "TargetFilename": "/tmp/two"})
    ce.feed(rule, LazyRecord({"TargetFilename": "/tmp/two"}, names, over), 2)
    assert over.calls == 0 and ce.counters()["overflow"] == 1
    again = Maker({**WHOLE, "TargetFilename": "/tmp/one"})
    ce.feed(rule, LazyRecord({"TargetFilename": "/tmp/one"}, names, again), 3)
    assert again.calls == 1   # its group keeps it too


def test_the_group_keeps_the_whole_record_not_the_lazy_one() -> None:
    """The dropper correlation's match shows the base record it kept: the whole one."""
    ce, rule, rules = _tmp_rule()
    ran = next(r for r in rules if r.name == "vigil_tmp_file_executed")
    make = Maker({**WHOLE, "TargetFilename": "/tmp/k"})
    ce.feed(rule, LazyRecord({"TargetFilename": "/tmp/k"}, frozenset({"TargetFilename"}),
                             make), 1)
    got = ce.feed(ran, {"Image": "/tmp/k"}, 2)
    assert [m.correlation.name for m in got] == ["vigil_tmp_drop_then_exec"]
    assert type(got[0].records[0]) is dict and got[0].records[0] == make.rec

