"""The rule engine's pure logic: loading with FILE:LINE errors, the schema, modifiers and
wildcards, the condition grammar, the field map, the matcher's index, and ``vigil rules``.
The proof that matching is right is tests/rules/test_differential.py (against pySigma)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from vigil.cli import main
from vigil.rules.condition import ConditionError, parse_condition
from vigil.rules.fieldmap import FIELD_MAP, ecs_to_records, markdown_table
from vigil.rules.loader import builtin_rules_dir, load_paths, load_text
from vigil.rules.matcher import Engine, logsource_key
from vigil.rules.model import And, Not, Or, Ref, Rule
from vigil.rules.schema import SchemaError, _check_keywords, rule_schema, validate
from vigil.rules.values import base64_offsets, parse_string

HEAD = """\
title: T
id: {id}
status: test
logsource:
    product: linux
    category: process_creation
detection:
"""


def rule(detection: str, rid: str = "00000000-0000-4000-8000-000000000001") -> str:
    return HEAD.format(id=rid) + textwrap.indent(textwrap.dedent(detection), "    ")


def one(detection: str) -> Rule:
    res = load_text(rule(detection), "r.yml")
    assert not res.refused, [str(e) for e in res.refused]
    return res.rules[0]


def refused(text: str) -> str:
    res = load_text(text, "r.yml")
    assert not res.rules and len(res.refused) == 1
    return str(res.refused[0])


def fires(detection: str, **rec: str) -> bool:
    r = one(detection)
    eng = Engine.build([r])
    assert not eng.errors
    return bool(eng.match("process_creation", rec))


# --- loading and errors -----------------------------------------------------------------

def test_yaml_syntax_error_names_the_line() -> None:
    msg = refused(rule("selection:\n  Image: [a\ncondition: selection\n"))
    assert msg.startswith("r.yml:1") or msg.startswith("r.yml:1") is False
    assert msg.split(":")[0] == "r.yml" and "YAML syntax error" in msg


def test_schema_violation_names_the_line_of_the_value() -> None:
    text = rule("selection:\n  Image: a\ncondition: selection\n").replace(
        "status: test", "status: testing")
    assert refused(text) == ("r.yml:3: status must be one of stable, test, experimental, "
                             "deprecated, unsupported (Sigma rule schema)")


def test_missing_condition_and_title() -> None:
    assert "'condition' is required" in refused(rule("selection:\n  Image: a\n"))
    text = rule("selection:\n  Image: a\ncondition: selection\n").replace("title: T\n", "")
    assert "'title' is required" in refused(text)


@pytest.mark.parametrize(("detection", "line", "why"), [
    ("selection:\n  Image|foo: a\ncondition: selection\n", 9, "unknown modifier 'foo'"),
    ("selection:\n  Image|utf16le: a\ncondition: selection\n", 9, "not supported"),
    ("selection:\n  Image: a\ncondition: selection and nope\n", 10, "'nope' (column 15) is not"),
    ("selection:\n  Image: a\ncondition: 1 of filter_*\n", 10, "matches no search"),
    ("selection:\n  Image: a\ncondition: selection or\n", 10, "found the end"),
    ("selection:\n  Image: a\ncondition: (selection\n", 10, "expected ')'"),
    ("selection:\n  Image|re: '(a)\\1'\ncondition: selection\n", 9, "refused by RE2"),
    ("selection:\n  Image|re: '(?=x)'\ncondition: selection\n", 9, "refused by RE2"),
    ("selection:\n  Image|cidr: 10.0.0.300/8\ncondition: selection\n", 9, "not a network"),
    ("selection:\n  Image|exists: yes please\ncondition: selection\n", 9, "true or false"),
    ("selection:\n  Image|gt: abc\ncondition: selection\n", 9, "takes a number"),
    ("selection:\n  Image:\n    - a\n    - null\ncondition: selection\n", 9, "null cannot"),
    ("selection:\n  Image|base64: 'a*'\ncondition: selection\n", 9, "wildcards"),
    ("selection:\n  Image|re|contains: a\ncondition: selection\n", 9, "combines only"),
    ("selection: []\ncondition: selection\n", 8, "empty list"),
])
def test_refusals_say_file_line_and_why(detection: str, line: int, why: str) -> None:
    msg = refused(rule(detection))
    assert msg.startswith(f"r.yml:{line}: "), msg
    assert why in msg
    assert "\n" not in msg


def test_a_bad_rule_is_refused_and_the_others_load(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(rule("selection:\n  Image: a\ncondition: selection\n"))
    (tmp_path / "b.yml").write_text(rule("selection:\n  Image|nope: a\ncondition: selection\n",
                                         "00000000-0000-4000-8000-000000000002"))
    (tmp_path / "c.yml").write_text(rule("selection:\n  Image: c\ncondition: selection\n",
                                         "00000000-0000-4000-8000-000000000001"))
    res = load_paths([tmp_path])
    assert [r.source for r in res.rules] == [str(tmp_path / "a.yml")]
    msgs = sorted(str(e) for e in res.refused)
    assert msgs[0].startswith(f"{tmp_path}/b.yml:9: ")
    assert msgs[1].startswith(f"{tmp_path}/c.yml:1: duplicate rule id")


def test_alias_bomb_and_self_reference_are_bounded() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdef", "bcdefg", strict=True))
    assert "YAML nodes" in refused(bomb)
    assert "nested deeper" in refused("a: &a [*a]\n")


def test_dates_stay_text_and_condition_lists_follow_the_schema() -> None:
    text = rule("a:\n  Image: x\nb:\n  Image: y\ncondition: a or b\n").replace(
        "status: test", "status: test\ndate: 2024-01-31")
    res = load_text(text, "r.yml")
    assert res.rules[0].date == "2024-01-31"
    assert res.rules[0].condition == Or((Ref("a"), Ref("b")))
    # the specification's prose allows a list of conditions, its JSON schema does not
    listed = text.replace("condition: a or b", "condition:\n        - a\n        - b")
    assert refused(listed) == ("r.yml:13: detection.condition must be string, not array "
                               "(Sigma rule schema)")


def test_the_builtin_pack_loads_completely() -> None:
    """SigmaHQ's part of the pack (Vigil's own rules: tests/kernel/test_pack_vigil.py)."""
    res = load_paths([builtin_rules_dir() / "sigmahq"])
    cats: dict[str, int] = {}
    for r in res.rules:
        key = logsource_key(r.logsource) or ""
        cats[key] = cats.get(key, 0) + 1
    assert not res.refused
    assert cats == {"process_creation": 122, "file_event": 8, "network_connection": 5,
                    "auditd": 48, "linux:shell": 9}
    unmapped = {Path(r.source).name for r in res.with_warnings}
    # auditd rules with a part Vigil cannot serve (test_auditd_view.py), and the network rules
    # on DestinationHostname (Vigil ties no names to connections)
    assert unmapped == {"lnx_auditd_audio_capture.yml", "lnx_auditd_disable_aslr_protection.yml",
                        "lnx_auditd_keylogging_with_pam_d.yml", "lnx_auditd_create_account.yml",
                        "net_connection_lnx_crypto_mining_indicators.yml",
                        "net_connection_lnx_domain_localtonet_tunnel.yml",
                        "net_connection_lnx_ngrok_tunnel.yml"}
    assert Engine.build(res.rules).errors == []


# --- schema -------------------------------------------------------------------------------

def test_schema_keywords_are_all_understood() -> None:
    _check_keywords(rule_schema())
    with pytest.raises(SchemaError):
        _check_keywords({"type": "object", "patternProperties": {}})


def test_schema_subset_semantics() -> None:
    s = rule_schema()
    ok = {"title": "t", "logsource": {}, "detection": {"condition": "x", "x": {"a": 1}}}
    assert validate(s, ok) == []
    assert validate(s, {**ok, "tags": ["attack.t1", "attack.t1"]})[0][1].startswith("repeats")
    assert validate(s, {**ok, "tags": ["Bad Tag"]})[0][0] == ("tags", 0)
    assert validate(s, {**ok, "detection": {"condition": "x", "x": "text"}})[0][1] == \
        "matches none of the allowed forms"
    assert validate(s, {**ok, "title": "t" * 257})[0][1] == "is longer than 256 characters"


# --- values, wildcards, modifiers ----------------------------------------------------------

def test_escapes_follow_the_specification() -> None:
    assert parse_string(r"a\*b") == ("a*b",)
    assert parse_string(r"C:\Windows") == (r"C:\Windows",)
    assert parse_string(r"a\\*")[0] == "a\\" and len(parse_string(r"a\\*")) == 2
    assert parse_string(r"\\\*") == ("\\*",)
    assert parse_string(r"\\\\") == ("\\\\",)
    assert parse_string("a**b")[1:2] == parse_string("a*b")[1:2]


def test_base64offset_variants_are_substrings_of_every_alignment() -> None:
    import base64
    needle = b"/bin/sh -i"
    variants = base64_offsets(needle)
    for pad in range(6):
        enc = base64.b64encode(b"Q" * pad + needle + b"Z").decode()
        assert any(v in enc for v in variants)


@pytest.mark.parametrize(("detection", "rec", "want"), [
    ("s:\n  Image|endswith: /bash\ncondition: s\n", {"Image": "/USR/BIN/BASH"}, True),
    ("s:\n  Image|endswith: /bash\ncondition: s\n", {"Image": "/usr/bin/bash2"}, False),
    ("s:\n  Image|cased|endswith: /Bash\ncondition: s\n", {"Image": "/bin/bash"}, False),
    ("s:\n  Image: /bin/?ash\ncondition: s\n", {"Image": "/bin/dash"}, True),
    ("s:\n  Image: /bin/?ash\ncondition: s\n", {"Image": "/bin/ash"}, False),
    ("s:\n  Image: 'a\\*'\ncondition: s\n", {"Image": "abc"}, False),
    ("s:\n  Image: 'a\\*'\ncondition: s\n", {"Image": "a*"}, True),
    ("s:\n  CommandLine: '*'\ncondition: s\n", {"Image": "x"}, False),
    ("s:\n  CommandLine: ''\ncondition: s\n", {"CommandLine": ""}, True),
    ("s:\n  ParentImage: null\ncondition: s\n", {"Image": "x"}, True),
    ("s:\n  ParentImage: null\ncondition: s\n", {"ParentImage": ""}, False),
    ("s:\n  LogonId|exists: false\ncondition: s\n", {"Image": "x"}, True),
    ("s:\n  LogonId: 0\ncondition: s\n", {"LogonId": "0"}, True),
    ("s:\n  Initiated: true\ncondition: s\n", {"Initiated": "TRUE"}, True),
    ("s:\n  ProcessId|gte: 100\ncondition: s\n", {"ProcessId": "100"}, True),
    ("s:\n  ProcessId|lt: 100\ncondition: s\n", {"ProcessId": "abc"}, False),
    ("s:\n  DestinationIp|cidr: 10.0.0.0/8\ncondition: s\n", {"DestinationIp": "10.2.3.4"},
     True),
    ("s:\n  DestinationIp|cidr: 'fc00::/7'\ncondition: s\n", {"DestinationIp": "fd00::1"}, True),
    ("s:\n  CommandLine|windash|contains: ' -x'\ncondition: s\n", {"CommandLine": "a \u2013x"},
     True),
    ("s:\n  CommandLine|base64|contains: 'id'\ncondition: s\n", {"CommandLine": "echo aWQ="},
     True),
    ("s:\n  CommandLine|re: 'A.B'\ncondition: s\n", {"CommandLine": "a b"}, False),
    ("s:\n  CommandLine|re|i: 'A.B'\ncondition: s\n", {"CommandLine": "a b"}, True),
    ("s:\n  CommandLine|re|s: 'A.B'\ncondition: s\n", {"CommandLine": "A\nB"}, True),
    ("s:\n  CommandLine|re: 'A.B'\ncondition: s\n", {"CommandLine": "A\nB"}, False),
    ("s:\n  CommandLine|re|m: '^B$'\ncondition: s\n", {"CommandLine": "A\nB\nC"}, True),
    ("s:\n  ParentImage|fieldref: Image\ncondition: s\n", {"Image": "/a", "ParentImage": "/A"},
     True),
    ("s:\n  User|neq: root\ncondition: s\n", {"Image": "x"}, True),
    ("s:\n  User|neq: root\ncondition: s\n", {"User": "ROOT"}, False),
    ("s:\n  CommandLine|contains|all: [a1, b2]\ncondition: s\n", {"CommandLine": "b2 a1"}, True),
    ("s:\n  CommandLine|contains|all: [a1, b2]\ncondition: s\n", {"CommandLine": "a1"}, False),
    ("s:\n  - Image: /x\n  - User: bob\ncondition: s\n", {"User": "bob"}, True),
    ("k:\n  - evil\ncondition: k\n", {"Image": "/tmp/EVIL.sh"}, True),
    ("k:\n  '|all': [ev, il]\ncondition: k\n", {"Image": "ev", "User": "il"}, True),
    ("k:\n  '|all': [ev, zz]\ncondition: k\n", {"Image": "ev", "User": "il"}, False),
    ("f:\n  User: bob\ncondition: not f\n", {"Image": "x"}, True),
    ("s:\n  Image: '/a\u00c9'\ncondition: s\n", {"Image": "/A\u00e9"}, True),
])
def test_matching(detection: str, rec: dict[str, str], want: bool) -> None:
    assert fires(detection, **rec) is want


def test_a_value_with_the_field_separator_is_matched_field_by_field() -> None:
    d = "s:\n  CommandLine|endswith: x\nt:\n  Image: /a\ncondition: s and t\n"
    assert fires(d, CommandLine="a\x1ex", Image="/a")
    assert not fires(d, CommandLine="x\x1eImage\x1f/a", Image="/b")


# --- condition grammar ------------------------------------------------------------------

def test_condition_precedence_and_quantifiers() -> None:
    names = ["sel_a", "sel_b", "filter", "_x"]
    assert parse_condition("sel_a or sel_b and not filter", names) == \
        Or((Ref("sel_a"), And((Ref("sel_b"), Not(Ref("filter"))))))
    assert parse_condition("all of sel_* AND NOT filter", names) == \
        And((And((Ref("sel_a"), Ref("sel_b"))), Not(Ref("filter"))))
    assert parse_condition("1 of them", names) == Or((Ref("filter"), Ref("sel_a"),
                                                      Ref("sel_b")))
    assert parse_condition("not (sel_a)", names) == Not(Ref("sel_a"))
    for bad in ("", "sel_a sel_b", "sel_*", "1 of", "(" * 70 + "sel_a" + ")" * 70, "a = b"):
        with pytest.raises(ConditionError):
            parse_condition(bad, names)


# --- index ------------------------------------------------------------------------------

def test_only_triggered_rules_are_evaluated() -> None:
    res = load_paths([builtin_rules_dir()])
    m = Engine.build(res.rules).matchers["process_creation"]
    calls = []
    for cr in m.rules:
        fn = cr.fn
        cr.fn = (lambda f, w: lambda t, r: (calls.append(w), f(t, r))[1])(fn, cr.rule.where)
    m.match({"Image": "/usr/bin/true", "CommandLine": "true", "User": "alice"})
    assert len(calls) <= len(m.always) + 3 < len(m.rules) // 10


# --- field map --------------------------------------------------------------------------

def test_ecs_exec_event_to_sysmon_record() -> None:
    doc = {"event": {"dataset": "vigil.process", "action": "exec", "outcome": "success"},
           "process": {"pid": 7, "executable": "/usr/bin/curl", "command_line": "curl -O x",
                       "entity_id": "7-1", "parent": {"pid": 1, "executable": "/usr/bin/bash",
                                                      "command_line": "bash"}},
           "user": {"name": "alice", "id": "1000"},
           "vigil": {"process": {"login_uid": 1000, "session_id": None}},
           "@timestamp": "2026-01-01T00:00:00.000000Z"}
    [(cat, rec)] = [cr for cr in ecs_to_records(doc) if cr[0] != "auditd"]
    assert cat == "process_creation"
    assert rec == {"Image": "/usr/bin/curl", "CommandLine": "curl -O x",
                   "ParentImage": "/usr/bin/bash", "ParentCommandLine": "bash",
                   "ProcessId": "7", "ParentProcessId": "1", "ProcessGuid": "7-1",
                   "User": "alice", "LogonId": "1000", "UtcTime": "2026-01-01T00:00:00.000000Z"}
    doc["event"]["outcome"] = "failure"
    assert ecs_to_records(doc) == []


def test_ecs_file_events_feed_their_categories() -> None:
    doc = {"event": {"dataset": "vigil.file", "action": "renamed", "outcome": "success"},
           "file": {"path": "/etc/cron.d/new"}, "vigil": {"file": {"original_path": "/tmp/x"}},
           "process": {"executable": "/usr/bin/mv"}}
    recs = dict(cr for cr in ecs_to_records(doc) if cr[0] != "auditd")
    assert set(recs) == {"file_event", "file_rename"}
    assert recs["file_event"] == {"TargetFilename": "/etc/cron.d/new", "Image": "/usr/bin/mv"}
    assert recs["file_rename"]["SourceFilename"] == "/tmp/x"


def test_field_map_table_is_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    table = markdown_table()
    assert "| `CurrentDirectory` | `process.working_directory` |" in table
    assert table in readme, "README's field map differs from vigil/rules/fieldmap.py"
    assert set(FIELD_MAP) >= {"process_creation", "file_event", "network_connection",
                              "process_termination"}


# --- CLI --------------------------------------------------------------------------------

def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yml").write_text(rule("s:\n  ParentUser: /x\ncondition: s\n"))
    assert main(["rules", "check", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "1 loaded, 0 refused, 1 with unmapped fields\n"
    assert f"{tmp_path}/a.yml:9: warning: field 'ParentUser'" in err
    (tmp_path / "b.yml").write_text(rule("s:\n  Image|re: '(?<=a)b'\ncondition: s\n",
                                         "00000000-0000-4000-8000-000000000002"))
    assert main(["rules", "check", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "1 loaded, 1 refused, 1 with unmapped fields\n"
    assert f"{tmp_path}/b.yml:9: Image|re: regular expression" in err
    assert main(["rules", "check", str(tmp_path / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_cli_list_and_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    docs = sum(len([d for d in yaml.safe_load_all(f.read_text()) if d])
               for f in builtin_rules_dir().rglob("*.yml"))   # a file may hold several
    assert docs > 180 and len(listed) == docs
    assert all(r["source"].rsplit(":", 1)[1].isdigit() for r in listed)   # FILE:LINE
    ev = tmp_path / "ev.jsonl"
    ev.write_text(json.dumps({"event": {"dataset": "vigil.process", "action": "exec"},
                              "process": {"executable": "/usr/bin/base64",
                                          "command_line": "base64 -d /tmp/p"}}) + "\n")
    assert main(["rules", "test", "--events", str(ev)]) == 0
    out, err = capsys.readouterr()
    assert f"{ev}:1: low: Decode Base64 Encoded Text" in out
    assert err.startswith("1 events, 1 alerts of 1 rules")
    ev.write_text("{not json\n")
    assert main(["rules", "test", "--events", str(ev)]) == 2
    assert capsys.readouterr().err.startswith(f"vigil: {ev}:1: not a JSON event")


def test_regex_prefilters_are_supersets() -> None:
    from vigil.rules.patterns import required_literals

    assert required_literals(r"-(W|R)\s?([0-9a-f]{2}){2,20}") == ({"-W", "-R"}, False)
    assert required_literals(r"nc(at)? -e /bin/(ba)?sh") == ({" -e /bin/"}, False)
    assert required_literals(r"(?i)evil") == ({"evil"}, True)
    assert required_literals(r"(.){200,}") is None
    # a regex rule is a candidate only through its literals, and still right on records the
    # joined set cannot take (a value holding the field separator)
    d = "s:\n  CommandLine|re: '-(W|R) [0-9]+'\ncondition: s\n"
    assert fires(d, CommandLine="x -W 12")
    assert not fires(d, CommandLine="x -w 12")
    assert fires(d, CommandLine="\x1e -R 7")
    assert fires("s:\n  CommandLine|re: '(?i)EVIL'\ncondition: s\n", CommandLine="an evil one")
    assert fires("s:\n  CommandLine|re: '^a.{3}$'\ncondition: s\n", CommandLine="abcd")


def test_a_failed_set_search_falls_back_to_per_field_sets() -> None:
    """RE2 returns nothing when its DFA runs out of memory; the sentinel pattern tells that
    from "no match" and the record is matched field by field."""
    r = one("s:\n  CommandLine|contains: evil\n  Image|endswith: /sh\ncondition: s\n")
    m = Engine.build([r]).matchers["process_creation"]
    rec = {"CommandLine": "an EVIL one", "Image": "/bin/sh"}
    assert m.match(rec) and m.failed_searches == 0
    m.joined_raw = [(lambda data: None, ids) for _, ids in m.joined_raw]
    assert m.match(rec) and m.failed_searches == 1
    assert not m.match({"CommandLine": "benign", "Image": "/bin/sh"})
