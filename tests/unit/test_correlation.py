"""Sigma correlation rules (vigil.rules.correlation, correlation_doc, windows; their loading in
vigil.rules.loader): FILE:LINE errors for bad correlation documents and references, and each
type's semantics on the real engine (Engine.build + match -> CorrelationEngine.feed): group-by,
timespan, expiry, overflow, late events, order, aliases, chains, ``generate``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vigil.cli import main
from vigil.rules.correlation import (
    MAX_CHAIN,
    MAX_SAMPLES,
    CorrelationEngine,
    CorrelationMatch,
)
from vigil.rules.errors import RuleError
from vigil.rules.loader import LoadResult, load_paths, load_text
from vigil.rules.matcher import Engine
from vigil.rules.schema import correlation_schema
from vigil.rules.windows import Group, digest

S = 10**9


def base(name: str, needle: str, n: int) -> str:
    return f"""\
title: Step {name}
id: 00000000-0000-4000-8000-00000000000{n}
name: {name}
status: test
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: '{needle}'
    condition: selection
"""


BASE = "---\n".join([base("step_a", "step_a", 1), base("step_b", "step_b", 2),
                     base("step_c", "step_c", 3)])


def corr(ctype: str, rules: tuple[str, ...] = ("step_a",), cond: str | None = None,
         group: tuple[str, ...] = ("User",), span: str = "10s", extra: str = "",
         head: str = "") -> str:
    lines = ["title: Correlated", "id: 0e95725d-7320-415d-80f7-004da920fc11", head,
             "correlation:", f"    type: {ctype}", "    rules:",
             *[f"        - {r}" for r in rules],
             "    group-by:", *[f"        - {g}" for g in group], f"    timespan: {span}"]
    if cond is not None:
        lines += ["    condition:", *[f"        {c}" for c in cond.split(";")]]
    return "\n".join(x for x in lines if x) + "\n" + extra


class Rig:
    """Rule and correlation text -> the real engine; ``ev`` matches and feeds one event."""

    def __init__(self, tmp_path: Path, *texts: str, max_groups: int = 10_000) -> None:
        self.res = loaded(tmp_path, BASE, *texts)
        self.engine = Engine.build(self.res.rules)
        self.ce = CorrelationEngine(self.res.correlations, self.res.rules,
                                    max_groups=max_groups)
        assert not self.ce.refused

    def ev(self, t: float, cmd: str, **rec: str) -> list[CorrelationMatch]:
        record = {"CommandLine": cmd, **rec}
        out: list[CorrelationMatch] = []
        for r in self.engine.match("process_creation", record):
            out += self.ce.feed(r, record, int(t * S))
        return out

    def titles(self, ms: list[CorrelationMatch]) -> list[str]:
        return [m.correlation.title for m in ms]


def loaded(tmp_path: Path, *texts: str) -> LoadResult:
    for i, t in enumerate(texts):
        (tmp_path / f"d{i}.yml").write_text(t)
    res = load_paths([tmp_path])
    assert not res.refused, [str(e) for e in res.refused]
    return res


# --- loading ------------------------------------------------------------------------------

SPEC_EXAMPLE = """\
title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
status: experimental
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
falsepositives:
    - Unlikely
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 3
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: 'login-failed'
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
name: successful_login
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: 'login-ok'
    condition: selection
"""


def test_spec_example_loads(tmp_path: Path) -> None:
    res = loaded(tmp_path, SPEC_EXAMPLE)
    assert [r.name for r in res.rules] == ["failed_login", "successful_login"]
    outer, inner = res.correlations
    assert (outer.type, outer.rules, outer.group_by, outer.timespan_ns, outer.condition,
            outer.generate, outer.level, outer.falsepositives) == (
        "temporal_ordered", ("multiple_failed_login", "successful_login"), ("User",),
        600 * S, (("gte", 2),), False, "high", ("Unlikely",))
    assert (inner.name, inner.type, inner.condition, inner.where) == (
        "multiple_failed_login", "event_count", (("gte", 3),), f"{tmp_path}/d0.yml:16")
    assert outer.rules_lines == (7, 8) and not outer.warnings


def test_spec_example_runs_as_a_chain(tmp_path: Path) -> None:
    rig = Rig(tmp_path, SPEC_EXAMPLE)
    assert rig.ev(1, "login-failed", User="bob") == []
    assert rig.ev(2, "login-failed", User="eve") == []
    assert rig.ev(3, "login-failed", User="bob") == []
    assert rig.ev(4, "login-ok", User="bob") == []   # only 2 failures yet
    inner = rig.ev(5, "login-failed", User="bob")
    assert [(m.correlation.name, m.count, m.alert) for m in inner] == [
        ("multiple_failed_login", 3, False)]   # an input of the outer one only
    (outer,) = rig.ev(6, "login-ok", User="bob")
    assert (outer.correlation.type, outer.group, outer.count, outer.alert) == (
        "temporal_ordered", (("User", "bob"),), 2, True)
    assert (outer.first_ns, outer.last_ns) == (5 * S, 6 * S)
    assert outer.records[-1]["CommandLine"] == "login-ok"
    # generate: false (the default): both base rules are inputs only
    assert {r.name for r in rig.res.rules if rig.ce.suppresses(r)} == {"failed_login",
                                                                      "successful_login"}
    assert outer.summary()["group"] == {"User": "bob"}


@pytest.mark.parametrize(("text", "line", "what"), [
    (corr("event_count", cond="gte: 3", span="1w"), 9, "timespan '1w' is not a number"),
    (corr("event_count", cond="gte: 3", span="0s"), 9, "timespan '0s'"),
    (corr("value_sum", cond="gt: 3;field: x"), 4, "correlation type 'value_sum' is not "
     "supported"),
    (corr("nonsense", cond="gte: 3"), 4, "correlation.type must be one of"),
    (corr("event_count"), 3, "'condition' is required (Sigma correlation schema)"),
    (corr("event_count", cond="gte: 3", group=()).replace("    group-by:\n", ""), 3,
     "'group-by' is required"),
    (corr("event_count", cond="most: 3"), 11, "'most' is no condition criterion"),
    (corr("event_count", cond="gte: many"), 11, "gte must be a whole number"),
    (corr("event_count", cond="gte: true"), 11, "gte must be a whole number"),
    (corr("event_count", cond="gte: 5000"), 11, "counts above 1000 are not supported"),
    (corr("event_count", cond="lt: 1"), 10, "the condition can never hold"),
    (corr("event_count", cond="gt: 5;lt: 4"), 10, "the condition can never hold"),
    (corr("event_count", cond="gte: 3;field: User"), 12, "'field' belongs to value_count"),
    (corr("value_count", cond="gte: 3"), 10, "a value_count condition needs 'field'"),
    (corr("value_count", cond="gte: 3;field: []"), 12, "field must be a field name"),
    (corr("temporal", ("step_a", "step_b"), cond="gte: 3"), 11, "can never hold (of 2"),
    (corr("temporal_ordered", ("step_a", "step_b"), cond="gte: 1"), 11,
     "temporal_ordered correlation needs all its 2 rules in order"),
    (corr("temporal", ("step_a", "step_b"), group=("ip",),
          extra="    aliases:\n        ip:\n            step_a: SourceIp\n"), 12,
     "alias 'ip' does not say which field it is for 'step_b'"),
    (corr("temporal", ("step_a", "step_b"), group=("ip",),
          extra="    aliases:\n        ip:\n            step_a: SourceIp\n"
                "            step_x: DestinationIp\n            step_b: x\n"), 14,
     "alias 'ip' names 'step_x', which is not in the correlation's rules"),
    (corr("event_count", cond="gte: 3").replace("title: Correlated", "title: [x]"), 1,
     "title must be string"),
    (corr("event_count", cond="gte: 3", head="tags: attack.t1110"), 3,
     "tags must be a list of strings"),
])
def test_bad_correlation_is_refused_with_its_line(text: str, line: int, what: str) -> None:
    res = load_text(text, "mr.yml")
    assert not res.correlations and len(res.refused) == 1, [str(e) for e in res.refused]
    msg = str(res.refused[0])
    assert msg.startswith(f"mr.yml:{line}: ") and what in msg, msg


@pytest.mark.parametrize(("text", "line", "what"), [
    (corr("event_count", ("step_a", "nothing"), cond="gte: 3"), 7,
     "'nothing' is no loaded rule's or correlation's id or name"),
    (corr("event_count", ("step_a", "00000000-0000-4000-8000-000000000001"), cond="gte: 3"),
     7, "are the same rule"),
    (corr("event_count", ("step_a", "Correlated"), cond="gte: 3", head="name: Correlated"),
     8, "'Correlated' is this correlation itself"),
])
def test_bad_reference_is_refused_with_its_line(tmp_path: Path, text: str, line: int,
                                                 what: str) -> None:
    (tmp_path / "base.yml").write_text(BASE)
    (tmp_path / "mr.yml").write_text(text)
    res = load_paths([tmp_path])
    assert len(res.rules) == 3 and not res.correlations
    (e,) = res.refused
    assert str(e).startswith(f"{tmp_path}/mr.yml:{line}: ") and what in str(e), str(e)


def test_loops_and_chains_through_refused_correlations_are_refused(tmp_path: Path) -> None:
    loop = (corr("event_count", ("two",), cond="gte: 2", head="name: one")
            + "---\n" + corr("event_count", ("one",), cond="gte: 2", head="name: two")
            .replace("fc11", "fc12")
            + "---\n" + corr("temporal", ("two", "step_a"), head="name: three")
            .replace("fc11", "fc13"))
    (tmp_path / "base.yml").write_text(BASE)
    (tmp_path / "mr.yml").write_text(loop)
    res = load_paths([tmp_path])
    assert not res.correlations
    msgs = sorted(str(e) for e in res.refused)
    assert msgs == [
        f"{tmp_path}/mr.yml:1: correlations refer to each other in a loop: "
        f"{tmp_path}/mr.yml:1 -> {tmp_path}/mr.yml:14 -> {tmp_path}/mr.yml:1",
        f"{tmp_path}/mr.yml:20: 'one' is a correlation that was refused ({tmp_path}/mr.yml:1)",
        f"{tmp_path}/mr.yml:33: 'two' is a correlation that was refused ({tmp_path}/mr.yml:14)",
    ]


def test_chains_deeper_than_the_limit_are_refused(tmp_path: Path) -> None:
    docs = [corr("event_count", ("step_a" if i == 0 else f"c{i - 1}",), cond="gte: 1",
                 head=f"name: c{i}").replace("fc11", f"{i:04x}")
            for i in range(MAX_CHAIN + 2)]
    (tmp_path / "base.yml").write_text(BASE)
    (tmp_path / "mr.yml").write_text("---\n".join(docs))
    res = load_paths([tmp_path])
    assert [c.name for c in res.correlations] == [f"c{i}" for i in range(MAX_CHAIN)]
    assert [str(e).split(": ", 1)[1] for e in res.refused] == [
        f"correlations chained more than {MAX_CHAIN} deep"] * 2
    (tmp_path / "ok").mkdir()   # the deepest chain allowed runs, level by level at once
    rig = Rig(tmp_path / "ok", "---\n".join(docs[:MAX_CHAIN]))
    assert [m.correlation.name for m in rig.ev(0, "step_a", User="u")] == [
        f"c{i}" for i in range(MAX_CHAIN)]


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "base.yml").write_text(BASE)
    (tmp_path / "mr.yml").write_text(corr("event_count", cond="gte: 3", head="name: step_b"))
    res = load_paths([tmp_path])
    assert [str(e) for e in res.refused] == [
        f"{tmp_path}/mr.yml:1: duplicate name step_b (first in {tmp_path}/base.yml:13)"]


def test_engine_refuses_correlations_whose_rules_are_gone(tmp_path: Path) -> None:
    res = loaded(tmp_path, BASE, corr("event_count", ("step_b",), cond="gte: 2"))
    ce = CorrelationEngine(res.correlations, [r for r in res.rules if r.name != "step_b"])
    assert not ce.correlations and [e.line for e in ce.refused] == [6]
    assert isinstance(ce.refused[0], RuleError)


def test_group_by_field_vigil_lacks_warns(tmp_path: Path) -> None:
    res = loaded(tmp_path, BASE, corr("event_count", cond="gte: 3",
                                      group=("ComputerName", "User")))
    (c,) = res.correlations
    assert [(line, w.split(":")[0]) for line, w in c.warnings] == [
        (7, "rule 'Step step_a' (" + str(tmp_path) + "/d0.yml")]
    assert "'ComputerName' is not in Vigil's field map" in c.warnings[0][1]


def test_correlation_schema_is_checked_keyword_by_keyword() -> None:
    schema = correlation_schema()
    assert "allOf" in schema["properties"]["correlation"]


def test_correlation_documents_survive_mutation() -> None:
    """Mangled correlation and filter documents load or are refused with FILE:LINE, never
    crash (the loader's fuzz contract, on the new document kinds)."""
    seeds = [SPEC_EXAMPLE.encode(), corr("value_count", cond="gte: 2;field: [A, B]").encode(),
             corr("temporal", ("step_a", "step_b"), group=("ip",), extra=(
                 "    aliases:\n        ip:\n            step_a: SourceIp\n"
                 "            step_b: DestinationIp\n")).encode()]
    rnd = random.Random(7)
    for data in seeds:
        lines = data.splitlines(keepends=True)
        for _ in range(60):
            b = bytearray(data)
            for _ in range(3):
                b[rnd.randrange(len(b))] = rnd.choice(b"|*?\\'\":-[]{}&!% 0x\n")
            i = rnd.randrange(len(lines))
            for variant in (bytes(b), b"".join(lines[:i] + lines[i + 1:])):
                try:
                    text = variant.decode()
                except UnicodeDecodeError:
                    continue
                res = load_text(text, "m.yml")
                for e in res.refused:
                    assert str(e).startswith("m.yml:") and "\n" not in str(e)
                CorrelationEngine(res.correlations, res.rules)


# --- event_count --------------------------------------------------------------------------

def test_event_count_per_group_within_the_timespan(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="gte: 3"))
    assert rig.ev(0, "step_a", User="bob") == []
    assert rig.ev(1, "step_a", User="eve") == []
    assert rig.ev(2, "step_a", User="bob") == []
    assert rig.ev(3, "step_b", User="bob") == []   # another rule: not counted
    (m,) = rig.ev(10, "step_a", User="bob")        # 0..10: inside 10s, inclusive
    assert (m.group, m.count, m.first_ns, m.last_ns, m.alert) == (
        (("User", "bob"),), 3, 0, 10 * S, True)
    assert [r["User"] for r in m.records] == ["bob"] * 3
    # the group starts afresh: three more events make the next match
    assert rig.ev(11, "step_a", User="bob") == [] and rig.ev(12, "step_a", User="bob") == []
    assert len(rig.ev(13, "step_a", User="bob")) == 1
    assert rig.ce.counters()["matches"] == 2


def test_event_count_forgets_events_older_than_the_timespan(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="gt: 2"))
    for t in (0, 6, 10.5, 16.6):   # never three within 10s
        assert rig.ev(t, "step_a", User="bob") == []
    assert len(rig.ev(17, "step_a", User="bob")) == 1   # 10.5, 16.6, 17


def test_event_count_without_group_by_is_one_group(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="gte: 2", group=()).replace(
        "    group-by:\n", "    group-by: []\n"))
    assert rig.ev(0, "step_a", User="bob") == []
    (m,) = rig.ev(1, "step_a")
    assert m.group == () and m.count == 2


def test_records_are_bounded(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="gte: 15"))
    ms = [m for i in range(15) for m in rig.ev(i * 0.1, "step_a", User="bob", N=str(i))]
    (m,) = ms
    assert m.count == 15 and len(m.records) == MAX_SAMPLES
    assert [r["N"] for r in m.records] == [str(i) for i in range(5, 15)]


def test_events_lacking_a_group_by_field_are_counted_apart(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="gte: 2"))
    assert rig.ev(0, "step_a") == [] and rig.ev(1, "step_a") == []
    assert rig.ce.counters()["missing_field"] == 2 and rig.ce.counters()["groups"] == 0


def test_slightly_late_events_count_and_too_late_ones_do_not(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="gte: 3"))
    assert rig.ev(20, "step_a", User="bob") == []
    assert rig.ev(5, "step_a", User="bob") == []      # 15s before the newest: late
    assert rig.ce.counters()["late"] == 1
    assert rig.ev(14, "step_a", User="bob") == []     # 6s before: in the window
    (m,) = rig.ev(12, "step_a", User="bob")
    assert (m.first_ns, m.last_ns, m.count) == (12 * S, 20 * S, 3)


# --- value_count --------------------------------------------------------------------------

def test_value_count_counts_distinct_values(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("value_count", cond="gte: 3;field: Image"))
    assert rig.ev(0, "step_a", User="bob", Image="/bin/a") == []
    assert rig.ev(1, "step_a", User="bob", Image="/bin/a") == []   # same value
    assert rig.ev(2, "step_a", User="eve", Image="/bin/b") == []   # other group
    assert rig.ev(3, "step_a", User="bob", Image="/bin/b") == []
    assert rig.ev(4, "step_a", User="bob") == []                    # no value: not counted
    (m,) = rig.ev(5, "step_a", User="bob", Image="/bin/c")
    assert m.count == 3 and m.group == (("User", "bob"),)
    assert rig.ce.counters()["missing_field"] == 1


def test_value_count_forgets_values_older_than_the_timespan(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("value_count", cond="gte: 3;field: Image"))
    assert rig.ev(0, "step_a", User="bob", Image="/bin/a") == []
    assert rig.ev(5, "step_a", User="bob", Image="/bin/b") == []
    assert rig.ev(11, "step_a", User="bob", Image="/bin/c") == []   # /bin/a aged out
    (m,) = rig.ev(12, "step_a", User="bob", Image="/bin/a")         # seen again: counts
    assert m.count == 3 and (m.first_ns, m.last_ns) == (5 * S, 12 * S)


def test_value_count_of_several_fields_counts_combinations(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("value_count", cond="gte: 2;field: [Image, ProcessId]"))
    assert rig.ev(0, "step_a", User="u", Image="/a", ProcessId="1") == []
    assert rig.ev(1, "step_a", User="u", Image="/a", ProcessId="1") == []
    assert len(rig.ev(2, "step_a", User="u", Image="/a", ProcessId="2")) == 1


def test_distinct_values_held_per_group_are_bounded() -> None:
    g = Group(0)
    for i in range(500):   # a new value each time unit, 11 within the span: never 50
        assert g.distinct(i, {}, digest((str(i),)), 10, 50) is None
        assert len(g.values) <= 50
    assert digest(("a", "bc")) != digest(("ab", "c"))


# --- temporal -----------------------------------------------------------------------------

def test_temporal_needs_every_rule_in_any_order(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("temporal", ("step_a", "step_b", "step_c")))
    assert rig.ev(0, "step_c", User="bob") == []
    assert rig.ev(1, "step_a", User="bob") == []
    assert rig.ev(2, "step_a", User="bob") == []
    assert rig.ev(3, "step_b", User="eve") == []      # other user
    (m,) = rig.ev(4, "step_b", User="bob")
    assert (m.count, m.first_ns, m.last_ns) == (3, 0, 4 * S)
    assert [r["CommandLine"] for r in m.records] == ["step_c", "step_a", "step_b"]


def test_temporal_rules_too_far_apart_do_not_match(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("temporal", ("step_a", "step_b")))
    assert rig.ev(0, "step_a", User="bob") == []
    assert rig.ev(10.5, "step_b", User="bob") == []
    assert len(rig.ev(11, "step_a", User="bob")) == 1


def test_temporal_with_a_count_of_rules(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("temporal", ("step_a", "step_b", "step_c"), cond="gte: 2"))
    assert rig.ev(0, "step_a", User="bob") == [] and rig.ev(1, "step_a", User="bob") == []
    assert [m.count for m in rig.ev(2, "step_c", User="bob")] == [2]


def test_temporal_ordered_needs_the_listed_order(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("temporal_ordered", ("step_a", "step_b", "step_c")))
    assert rig.ev(0, "step_b", User="bob") == []
    assert rig.ev(1, "step_c", User="bob") == []
    assert rig.ev(2, "step_a", User="bob") == []
    assert rig.ev(3, "step_c", User="bob") == []   # b has not come after a yet
    assert rig.ev(4, "step_b", User="bob") == []
    (m,) = rig.ev(5, "step_c", User="bob")
    assert (m.count, m.first_ns, m.last_ns) == (3, 2 * S, 5 * S)
    assert [r["CommandLine"] for r in m.records] == ["step_a", "step_b", "step_c"]


def test_temporal_conditions_meaning_at_least_k_rules_are_decided_at_once(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("temporal_ordered", ("step_a", "step_b"), cond="eq: 2"),
              corr("temporal", ("step_a", "step_b", "step_c"), cond="gt: 1;lte: 3")
              .replace("fc11", "fc12"))
    assert [c.condition for c in rig.ce.correlations] == [(("gte", 2),), (("gte", 2),)]
    assert rig.ev(0, "step_b", User="bob") == []
    assert rig.titles(rig.ev(1, "step_a", User="bob")) == ["Correlated"]   # temporal only
    assert [m.correlation.type for m in rig.ev(2, "step_b", User="bob")] == [
        "temporal_ordered"]


def test_temporal_ordered_within_the_timespan(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("temporal_ordered", ("step_a", "step_b")))
    assert rig.ev(0, "step_a", User="bob") == []
    assert rig.ev(11, "step_b", User="bob") == []   # too late after the a
    assert rig.ev(12, "step_a", User="bob") == []
    assert len(rig.ev(12, "step_b", User="bob")) == 1   # the same time counts as after


def test_temporal_ordered_judges_event_times_not_arrival(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("temporal_ordered", ("step_a", "step_b")))
    assert rig.ev(5, "step_b", User="bob") == []
    assert rig.ev(6, "step_a", User="bob") == []
    assert rig.ev(4, "step_b", User="bob") == []   # arrives after a, happened before it
    assert rig.ce.counters()["matches"] == 0


def test_aliases_group_different_fields(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("temporal", ("step_a", "step_b"), group=("ip",), extra=(
        "    aliases:\n        ip:\n            step_a: SourceIp\n"
        "            step_b: DestinationIp\n")))
    assert rig.ev(0, "step_a", SourceIp="10.0.0.1") == []
    assert rig.ev(1, "step_b", DestinationIp="10.0.0.2", SourceIp="10.0.0.1") == []
    (m,) = rig.ev(2, "step_b", DestinationIp="10.0.0.1")
    assert m.group == (("ip", "10.0.0.1"),)


# --- fixed windows (lt, lte, eq, neq) -----------------------------------------------------

def test_upper_bounds_are_judged_when_the_window_closes(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="lt: 3"))
    assert rig.ev(0, "step_a", User="bob") == [] and rig.ev(1, "step_a", User="bob") == []
    for t in (0, 1, 2):
        assert rig.ev(t, "step_a", User="eve") == []
    assert rig.ce.expire(10 * S) == []                 # not over yet (inclusive)
    (m,) = rig.ce.expire(11 * S)                       # eve had 3: no match
    assert (m.group, m.count, m.first_ns, m.last_ns) == ((("User", "bob"),), 2, 0, 1 * S)
    assert rig.ce.counters()["expired"] == 2 and rig.ce.counters()["groups"] == 0


def test_a_later_event_closes_a_fixed_window(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="eq: 2"))
    assert rig.ev(0, "step_a", User="bob") == [] and rig.ev(3, "step_a", User="bob") == []
    (m,) = rig.ev(10.5, "step_a", User="bob")   # opens the next window
    assert m.count == 2
    assert rig.ce.expire(30 * S) == []          # the new window held 1


def test_value_count_with_an_upper_bound(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("value_count", cond="neq: 1;lte: 2;field: Image"))
    for t, img in ((0, "/a"), (1, "/a"), (2, "/b")):
        assert rig.ev(t, "step_a", User="bob", Image=img) == []
    for t, img in ((0, "/a"), (1, "/b"), (2, "/c")):
        assert rig.ev(t, "step_a", User="eve", Image=img) == []
    assert [(m.group, m.count) for m in rig.ce.expire(100 * S)] == [((("User", "bob"),), 2)]


# --- state: expiry, overflow --------------------------------------------------------------

def test_expire_drops_aged_groups(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="gte: 2"))
    rig.ev(0, "step_a", User="bob")
    rig.ev(8, "step_a", User="eve")
    assert rig.ce.expire(15 * S) == []
    assert rig.ce.counters()["expired"] == 1 and rig.ce.counters()["groups"] == 1
    assert len(rig.ev(16, "step_a", User="eve")) == 1   # eve's state stayed
    assert rig.ev(16, "step_a", User="bob") == []       # bob's is gone


def test_groups_past_the_cap_are_counted_not_kept(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", cond="gte: 2"), max_groups=2)
    for u in ("a", "b", "c", "d"):
        rig.ev(0, "step_a", User=u)
    assert rig.ce.counters()["overflow"] == 2 and rig.ce.counters()["groups"] == 2
    assert rig.ev(1, "step_a", User="c") == []          # c was never kept
    assert len(rig.ev(1, "step_a", User="a")) == 1      # a was; its match frees a slot
    assert rig.ev(2, "step_a", User="c") == []
    assert rig.ce.counters() == {"overflow": 3, "expired": 0, "late": 0,
                                 "missing_field": 0, "matches": 1, "groups": 2}


# --- generate -----------------------------------------------------------------------------

def test_generate_true_lets_the_rules_alert(tmp_path: Path) -> None:
    rig = Rig(tmp_path, corr("event_count", ("step_a",), cond="gte: 2",
                             extra="    generate: true\n"),
              corr("event_count", ("step_b",), cond="gte: 2").replace("fc11", "fc12"))
    quiet = {r.name for r in rig.res.rules if rig.ce.suppresses(r)}
    assert quiet == {"step_b"}
    assert rig.ce.suppressed_rule_keys() == {r.where for r in rig.res.rules
                                             if r.name == "step_b"}
    assert rig.ce.wants(rig.res.rules[0]) and not rig.ce.wants(rig.res.rules[2])


# --- vigil rules --------------------------------------------------------------------------

def test_cli_counts_and_lists_correlations(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mr.yml").write_text(SPEC_EXAMPLE)
    assert main(["rules", "check", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert out == "2 loaded, 0 refused, 0 with unmapped fields, 2 correlations, 0 filters\n"
    assert main(["rules", "list", "--json", str(tmp_path)]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["kind"] for d in docs] == ["rule", "rule", "correlation", "correlation"]
    assert docs[2]["type"] == "temporal_ordered" and docs[3]["condition"] == "gte 3"
    (tmp_path / "bad.yml").write_text(corr("event_count", ("missing_rule",), cond="gte: 2"))
    assert main(["rules", "check", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "2 loaded, 1 refused, 0 with unmapped fields, 2 correlations, 0 filters\n"
    assert f"{tmp_path}/bad.yml:6: 'missing_rule' is no loaded rule's" in err
