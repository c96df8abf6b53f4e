"""RFC 5424 messages of the syslog output: header, PRI from the event, structured data and its
escapes, the JSON and line bodies; checked against the RFC's grammar (a regex of its ABNF)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from vigil.events.model import LostEvents
from vigil.outputs.batch import ecs_document
from vigil.outputs.syslog_msg import (
    ENTERPRISE_NUMBER,
    Formatter,
    line_text,
    sd_escape,
    seq_valid,
    severity,
)
from vigil.rules.alert import Alert, RuleInfo

HOST = {"name": "web-1", "hostname": "web-1"}
# RFC 5424 section 6: HEADER SP STRUCTURED-DATA [SP MSG]
_SD_VALUE = r'"(?:[^"\\\]]|\\["\\\]])*"'
_SD_ELEMENT = rf"\[[!-~]{{1,32}}(?: [!#-<>-\\^-~]{{1,32}}={_SD_VALUE})*\]"
RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)"
    rb"|-) (?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) "
    rb"(?P<msgid>[!-~]{1,32}) (?P<sd>(?:" + _SD_ELEMENT.encode() + rb")+|-)(?: (?P<msg>.*))?$",
    re.S)


def file_doc(path: str, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@timestamp": "2026-12-07T12:00:00.123456Z",
        "event": {"kind": "event", "category": ["file"], "action": "created",
                  "outcome": "success", "dataset": "vigil.file"},
        "file": {"path": path}, "process": {"pid": 4242, "executable": "/usr/bin/touch"},
        "user": {"id": "0", "name": "root"}}
    doc.update(extra)
    return doc


def parse(m: bytes) -> re.Match[bytes]:
    got = RFC5424.match(m)
    assert got is not None, m
    return got


def sd_params(sd: bytes) -> dict[str, str]:
    out = {}
    for k, v in re.findall(rb' ([^= \]"]+)="((?:[^"\\\]]|\\.)*)"', sd):
        out[k.decode()] = re.sub(rb"\\(.)", rb"\1", v).decode()
    return out


def test_header_and_structured_data() -> None:
    f = Formatter(13, "vigil", "json", "web-1")
    doc = file_doc("/etc/passwd")
    body = f.bodies([doc])[0]
    m = parse(f.message(doc, 17, body))
    assert int(m["pri"]) == 13 * 8 + 6
    assert m["ts"] == b"2026-12-07T12:00:00.123456Z"
    assert (m["host"], m["app"], m["procid"], m["msgid"]) == (
        b"web-1", b"vigil", str(os.getpid()).encode(), b"created")
    assert m["sd"].startswith(f'[vigil@{ENTERPRISE_NUMBER} seq="17" '.encode())
    assert sd_params(m["sd"]) == {"seq": "17", "kind": "event", "action": "created",
                                  "outcome": "success", "path": "/etc/passwd", "pid": "4242",
                                  "exe": "/usr/bin/touch", "user": "root", "uid": "0"}
    assert orjson.loads(m["msg"]) == doc
    assert seq_valid(f.message(doc, 17, body), 17)
    assert not seq_valid(f.message(doc, 17, body), 18)


@pytest.mark.parametrize("path", ['/tmp/a"b', "/tmp/a]b", "/tmp/a\\b", '/x/"]\\"]', "/tmp/é ü"])
def test_sd_values_are_escaped(path: str) -> None:
    f = Formatter(1, "vigil", "json", "h")
    doc = file_doc(path)
    m = parse(f.message(doc, 1, b"{}"))
    assert sd_params(m["sd"])["path"] == path


def test_sd_escape_rules() -> None:
    assert sd_escape('a"b]c\\d') == 'a\\"b\\]c\\\\d'
    assert sd_escape("plain") == "plain"


def test_severity_from_the_event() -> None:
    lost = ecs_document(LostEvents(1_000_000_000, "file", 12), HOST)
    assert severity(lost) == 4
    f = Formatter(4, "vigil", "json", "h")
    m = parse(f.message(lost, 3, b"{}"))
    assert int(m["pri"]) == 4 * 8 + 4 and m["msgid"] == b"events-lost"
    assert sd_params(m["sd"])["lost"] == "12"
    for level, sev in (("critical", 2), ("high", 3), ("medium", 4), ("low", 5),
                       ("informational", 6)):
        a = Alert(1_000_000_000, RuleInfo("r-1", "Shadow read", level), "file",
                  file_doc("/etc/shadow"))
        doc = ecs_document(a, HOST)
        assert severity(doc) == sev
        m = parse(f.message(doc, 1, b"{}"))
        assert m["msgid"] == b"alert"
        p = sd_params(m["sd"])
        assert (p["rule"], p["rule_id"], p["level"], p["kind"]) == (
            "Shadow read", "r-1", level, "alert")
    fim = file_doc("/etc/x")
    fim["event"]["dataset"] = "vigil.fim"
    assert severity(fim) == 5
    assert severity(file_doc("/etc/x")) == 6


def test_line_format() -> None:
    doc = file_doc('/tmp/with space/"q"=x\n', process={
        "pid": 7, "executable": "/bin/sh", "command_line": "sh -c 'echo hi'"})
    line = line_text(doc)
    assert "\n" not in line
    assert line.startswith("event.kind=event event.action=created event.outcome=success ")
    assert 'file.path="/tmp/with space/\\"q\\"=x\\n"' in line
    assert "process.pid=7 process.executable=/bin/sh" in line
    assert "process.command_line=\"sh -c 'echo hi'\"" in line
    f = Formatter(13, "vigil", "line", "h")
    m = parse(f.message(doc, 5, f.bodies([doc])[0]))
    assert m["msg"] == line.encode()


def test_header_fields_are_printable_ascii() -> None:
    f = Formatter(13, "vigil", "json", "höst name")
    doc = file_doc("/x")
    doc["event"]["action"] = "a b"
    m = parse(f.message(doc, 1, b"{}"))
    assert m["host"] == b"hstname" and m["msgid"] == b"ab"


def test_facility_out_of_range() -> None:
    with pytest.raises(ValueError, match="facility 24"):
        Formatter(24, "vigil", "json", "h")


def test_unusable_tls_file_is_a_clear_error(tmp_path: Path) -> None:
    from vigil.config.model import SyslogOutput, TlsConfig
    from vigil.kernel.errors import VigilError
    from vigil.outputs.syslog import SyslogSink

    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    out = SyslogOutput(address="tls://127.0.0.1:6514", scheme="tls", host="127.0.0.1",
                       port=6514, tls=TlsConfig(ca_file=bad))
    with pytest.raises(VigilError, match=r"tls://127.0.0.1:6514: its TLS files cannot be used"):
        SyslogSink(out, tmp_path / "spool")
    assert not (tmp_path / "spool").exists()
