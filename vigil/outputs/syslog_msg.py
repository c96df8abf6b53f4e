"""RFC 5424 syslog messages made from Vigil's events.

Owns the message text: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG``, the
severity of each event, the structured data (``vigil@32473``) and the two text formats of the
MSG part (the ECS JSON document, or a compact ``key=value`` line). The OCSF document, when
asked for, comes from vigil.outputs.ocsf. Sending and spooling are elsewhere
(vigil.outputs.syslog, vigil.outputs.spool).

- PRI = facility * 8 + severity. Severity: an alert's from its rule's level (critical 2,
  high 3, medium 4, low 5, informational 6); ``events-lost`` and failed scans 4 (warning);
  FIM changes, privilege changes and tampering 5 (notice); the other events 6 (info).
- PROCID is the agent's pid; MSGID the event's action (``created``, ``exec``...), ``alert``
  for alerts.
- The SD element's first parameter is ``seq``: the spool's sequence number, consecutive across
  restarts, so a receiver can check order and drop duplicates (a gap is a drop, counted).
- MSG is UTF-8 without the BOM RFC 5424 asks for: JSON parsers downstream (Filebeat,
  Logstash, Splunk's) take a BOM for garbage, and rsyslog, journald and logger send none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson

# The SD-ID's enterprise number: 32473 is the one RFC 5612 reserves for documentation. A
# product shipped to others registers its own Private Enterprise Number at IANA.
ENTERPRISE_NUMBER: Final = 32473
SD_ID: Final = f"vigil@{ENTERPRISE_NUMBER}"
_SEQ_MARK: Final = f'[{SD_ID} seq="'.encode()

FACILITY_MAX: Final = 23
SD_VALUE_MAX: Final = 1024     # characters of one SD value: the header stays small (datagrams)
_LEVEL_SEVERITY: Final = {"critical": 2, "high": 3, "medium": 4, "low": 5, "informational": 6}
_NOTICE_DATASETS: Final = ("vigil.fim", "vigil.privilege", "vigil.tampering")
_WARNING_ACTIONS: Final = ("events-lost", "scan-failed", "scan-incomplete")

# (SD parameter or line key, path in the ECS document); the line uses the ECS names
_FIELDS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("kind", "event.kind", ("event", "kind")),
    ("action", "event.action", ("event", "action")),
    ("outcome", "event.outcome", ("event", "outcome")),
    ("rule", "rule.name", ("rule", "name")),
    ("rule_id", "rule.id", ("rule", "id")),
    ("level", "vigil.rule.level", ("vigil", "rule", "level")),
    ("path", "file.path", ("file", "path")),
    ("old_path", "vigil.file.original_path", ("vigil", "file", "original_path")),
    ("pid", "process.pid", ("process", "pid")),
    ("exe", "process.executable", ("process", "executable")),
    ("user", "user.name", ("user", "name")),
    ("uid", "user.id", ("user", "id")),
    ("euser", "process.user.name", ("process", "user", "name")),
    ("ppid", "process.parent.pid", ("process", "parent", "pid")),
    ("src_ip", "source.ip", ("source", "ip")),
    ("src_port", "source.port", ("source", "port")),
    ("dst", "destination.address", ("destination", "address")),
    ("dst_port", "destination.port", ("destination", "port")),
    ("container", "container.id", ("container", "id")),
    ("lost_kind", "vigil.drops.kind", ("vigil", "drops", "kind")),
    ("lost", "vigil.drops.count", ("vigil", "drops", "count")),
)
_LINE_ONLY: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("process.command_line", ("process", "command_line")),
    ("error.code", ("error", "code")),
)


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    v: Any = doc
    for k in path:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
        if v is None:
            return None
    return v


def severity(doc: dict[str, Any]) -> int:
    """The RFC 5424 severity (0 emergency .. 7 debug) of an ECS document."""
    ev = doc.get("event") or {}
    if ev.get("kind") == "alert":
        level = _get(doc, ("vigil", "rule", "level"))
        return _LEVEL_SEVERITY.get(level, 4)
    if ev.get("action") in _WARNING_ACTIONS:
        return 4
    if ev.get("dataset") in _NOTICE_DATASETS:
        return 5
    return 6


def sd_escape(value: str) -> str:
    """An SD-PARAM value: ``"``, ``\\`` and ``]`` escaped with a backslash (RFC 5424 6.3.3)."""
    if '"' in value or "\\" in value or "]" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return value


def _text(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def _sd(v: Any) -> str:
    """An SD value: at most SD_VALUE_MAX characters (the whole is in MSG), escaped."""
    return sd_escape(_text(v)[:SD_VALUE_MAX])


def _params(obj: dict[str, Any] | None, names: tuple[tuple[str, str], ...]) -> str:
    if not obj:
        return ""
    out = ""
    for key, name in names:
        v = obj.get(key)
        if v is not None:
            out += f' {name}="{_sd(v)}"'
    return out


_EVENT: Final = (("kind", "kind"), ("action", "action"), ("outcome", "outcome"))
_RULE: Final = (("name", "rule"), ("id", "rule_id"))
_FILE: Final = (("path", "path"),)
_PROC: Final = (("pid", "pid"), ("executable", "exe"))
_USER: Final = (("name", "user"), ("id", "uid"))
_SRC: Final = (("ip", "src_ip"), ("port", "src_port"))
_DST: Final = (("address", "dst"), ("port", "dst_port"))
_CONTAINER: Final = (("id", "container"),)
_DROPS: Final = (("kind", "lost_kind"), ("count", "lost"))


class _WhoCache:
    """The SD parameters of a process and its user, made once per process: the ECS renderer
    shares one ``process`` and ``user`` dict between a process's events (their ids are the
    key; the dicts are kept, so an id is not reused while cached)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._map: dict[tuple[int, int], tuple[object, object, str]] = {}

    def get(self, proc: dict[str, Any] | None, user: dict[str, Any] | None) -> str:
        key = (id(proc), id(user))
        hit = self._map.get(key)
        if hit is not None and hit[0] is proc and hit[1] is user:
            return hit[2]
        text = _params(proc, _PROC) + _params(user, _USER)
        if proc:
            pu = proc.get("user")
            if pu and pu.get("name") is not None:
                text += f' euser="{_sd(pu["name"])}"'
            parent = proc.get("parent")
            if parent and parent.get("pid") is not None:
                text += f' ppid="{parent["pid"]}"'
        if len(self._map) >= self._size:
            self._map.clear()
        self._map[key] = (proc, user, text)
        return text


_WHO = _WhoCache()


def structured_data(doc: dict[str, Any], seq: int) -> str:
    """``[vigil@32473 seq="N" ...]``: the key fields, in _FIELDS' order."""
    vigil = doc.get("vigil") or {}
    rule = doc.get("rule")
    level = (vigil.get("rule") or {}).get("level") if rule else None
    vfile = vigil.get("file")
    old = vfile.get("original_path") if vfile else None
    return "".join((
        f'[{SD_ID} seq="{seq}"',
        _params(doc.get("event"), _EVENT),
        _params(rule, _RULE),
        f' level="{_sd(level)}"' if level is not None else "",
        _params(doc.get("file"), _FILE),
        f' old_path="{_sd(old)}"' if old is not None else "",
        _WHO.get(doc.get("process"), doc.get("user")),
        _params(doc.get("source"), _SRC),
        _params(doc.get("destination"), _DST),
        _params(doc.get("container"), _CONTAINER),
        _params(vigil.get("drops"), _DROPS),
        "]"))


def _kv_value(v: Any) -> str:
    s = _text(v)
    if not s or any(c in s for c in ' "=\\\n\r\t'):
        s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
             .replace("\r", "\\r").replace("\t", "\\t")
        return f'"{s}"'
    return s


def line_text(doc: dict[str, Any]) -> str:
    """The compact MSG: ``key=value`` pairs with ECS names, values quoted when they hold a
    space, a quote, ``=`` or a backslash; never a newline."""
    out = []
    for _, key, path in _FIELDS:
        v = _get(doc, path)
        if v is not None:
            out.append(f"{key}={_kv_value(v)}")
    for key, path in _LINE_ONLY:
        v = _get(doc, path)
        if v is not None:
            out.append(f"{key}={_kv_value(v)}")
    return " ".join(out)


def _printable(s: str, limit: int) -> str:
    """A header field: printable US-ASCII, at most ``limit`` characters; ``-`` if empty."""
    s = "".join(c for c in s if "!" <= c <= "~")[:limit]
    return s or "-"


class Formatter:
    """Makes the messages of one output: its facility, app name and MSG format."""

    def __init__(self, facility: int, app_name: str, fmt: str, hostname: str) -> None:
        if not 0 <= facility <= FACILITY_MAX:
            raise ValueError(f"syslog facility {facility} is not 0..{FACILITY_MAX}")
        self.fmt = fmt
        self._pri = facility * 8
        self._head = f"{_printable(hostname, 255)} {_printable(app_name, 48)} {os.getpid()}"
        self._msgids: dict[object, str] = {}

    def message(self, doc: dict[str, Any], seq: int, body: bytes) -> bytes:
        return b"".join(self._parts(doc, seq, body))

    def frame(self, doc: dict[str, Any], seq: int, body: bytes) -> bytes:
        """The message framed for the spool, ``LEN SP MSG``, in one copy."""
        head, body = self._parts(doc, seq, body)
        return b"".join((b"%d " % (len(head) + len(body)), head, body))

    def _parts(self, doc: dict[str, Any], seq: int, body: bytes) -> tuple[bytes, bytes]:
        ev = doc.get("event") or {}
        raw = "alert" if ev.get("kind") == "alert" else ev.get("action") or "-"
        msgid = self._msgids.get(raw)
        if msgid is None:
            msgid = self._msgids[raw] = _printable(str(raw), 32)
            if len(self._msgids) > 1024:
                self._msgids.clear()
        head = (f"<{self._pri + severity(doc)}>1 {doc.get('@timestamp') or '-'} {self._head} "
                f"{msgid} {structured_data(doc, seq)} ")
        return head.encode(), body

    def bodies(self, docs: list[dict[str, Any]],
               other: Callable[[], Iterable[dict[str, Any]]] | None = None,
               ecs_json: Callable[[], list[bytes]] | None = None) -> list[bytes]:
        """The MSG parts of a batch: ECS JSON (``ecs_json()``'s, shared with the other
        sinks, when given), the line, or ``other()``'s documents (OCSF)."""
        if self.fmt == "line":
            return [line_text(d).encode() for d in docs]
        if self.fmt == "json" or other is None:
            return ecs_json() if ecs_json is not None else [orjson.dumps(d) for d in docs]
        return [orjson.dumps(d) for d in other()]


def seq_valid(msg: bytes, seq: int) -> bool:
    """Whether a spooled message is the one numbered ``seq`` (the spool's recovery check)."""
    if not msg.startswith(b"<"):
        return False
    return msg.find(_SEQ_MARK + b"%d\"" % seq, 0, 1024) > 0
