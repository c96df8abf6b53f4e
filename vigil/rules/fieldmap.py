"""The field map: Sigma's Linux taxonomy (Sysmon for Linux names) -> Vigil's ECS event fields.

Owns THE table (``FIELD_MAP``, data: one row per logsource category and Sysmon field, with the
ECS field it comes from or the reason Vigil cannot provide it), which Vigil event belongs to
which logsource category, and ``ecs_to_records``: one ECS JSON document (as ``vigil run -o
json`` prints it) -> the flat ``{SysmonName: text}`` record(s) rules are matched against. A
rule never sees an ECS dict. Also the load-time warnings for rules whose fields or logsource
Vigil cannot provide. The README's field-map table is generated from this one
(``markdown_table``), so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from vigil.rules.model import Rule

# A row: Sysmon field -> ECS dotted path, or None and why Vigil has no such value (yet).
Row = tuple[str, str | None, str]

_PROCESS: Final[tuple[Row, ...]] = (
    ("Image", "process.executable", ""),
    ("CommandLine", "process.command_line", "arguments joined by spaces"),
    ("ParentImage", "process.parent.executable", ""),
    ("ParentCommandLine", "process.parent.command_line", ""),
    ("ProcessId", "process.pid", ""),
    ("ParentProcessId", "process.parent.pid", ""),
    ("ProcessGuid", "process.entity_id", "pid + start time"),
    ("ParentProcessGuid", "process.parent.entity_id", ""),
    ("User", "user.name", "real user"),
    ("LogonId", "vigil.process.login_uid", "the audit login uid (unset: absent)"),
    ("TerminalSessionId", "vigil.process.session_id", "the audit session id"),
    ("UtcTime", "@timestamp", ""),
    ("CurrentDirectory", None, "Vigil's exec events carry no working directory yet"),
    ("Hashes", None, "Vigil's exec events carry no executable hash"),
    ("OriginalFileName", None, "PE version metadata: Windows only"),
    ("Product", None, "PE version metadata: Windows only"),
    ("Company", None, "PE version metadata: Windows only"),
    ("Description", None, "PE version metadata: Windows only"),
    ("FileVersion", None, "PE version metadata: Windows only"),
    ("IntegrityLevel", None, "Windows only"),
    ("LogonGuid", None, "Windows only"),
    ("ParentUser", None, "Vigil's exec events carry no parent user"),
)

_FILE: Final[tuple[Row, ...]] = (
    ("TargetFilename", "file.path", "canonical; a rename's new name"),
    ("Image", "process.executable", ""),
    ("ProcessId", "process.pid", ""),
    ("ProcessGuid", "process.entity_id", ""),
    ("User", "user.name", "real user"),
    ("UtcTime", "@timestamp", ""),
    ("CreationUtcTime", None, "Vigil reports no file creation time"),
)

_NETWORK: Final[tuple[Row, ...]] = (
    # Vigil has no network events yet (a later issue); the rows name the ECS fields they
    # will carry, so the rules load and are mapped already.
    ("DestinationIp", "destination.ip", ""),
    ("DestinationPort", "destination.port", ""),
    ("DestinationHostname", "destination.domain", ""),
    ("SourceIp", "source.ip", ""),
    ("SourcePort", "source.port", ""),
    ("Initiated", "network.direction", "'true' when egress, 'false' when ingress"),
    ("Protocol", "network.transport", ""),
    ("Image", "process.executable", ""),
    ("ProcessId", "process.pid", ""),
    ("ProcessGuid", "process.entity_id", ""),
    ("User", "user.name", "real user"),
    ("UtcTime", "@timestamp", ""),
)

_TERMINATION: Final[tuple[Row, ...]] = (
    ("Image", "process.executable", ""),
    ("ProcessId", "process.pid", ""),
    ("ProcessGuid", "process.entity_id", ""),
    ("User", "user.name", "real user"),
    ("UtcTime", "@timestamp", ""),
)

FIELD_MAP: Final[dict[str, tuple[Row, ...]]] = {
    "process_creation": _PROCESS,
    "process_termination": _TERMINATION,
    "file_event": _FILE,
    "file_change": _FILE,
    "file_delete": _FILE,
    "file_rename": (*_FILE, ("SourceFilename", "vigil.file.original_path", "the old name")),
    "network_connection": _NETWORK,
}

# Vigil event (dataset, action) -> the logsource categories it feeds. Sysmon's FileCreate
# (file_event) fires when a file is created or overwritten, so new names and written files
# count; failed attempts (event.outcome: failure) feed no category.
CATEGORIES: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("vigil.process", "exec"): ("process_creation",),
    ("vigil.process", "exit"): ("process_termination",),
    ("vigil.file", "created"): ("file_event",),
    ("vigil.file", "modified"): ("file_event", "file_change"),
    ("vigil.file", "truncated"): ("file_change",),
    ("vigil.file", "renamed"): ("file_event", "file_rename"),
    ("vigil.file", "hardlink-created"): ("file_event",),
    ("vigil.file", "symlink-created"): ("file_event",),
    ("vigil.file", "deleted"): ("file_delete",),
}

_DIRECTION: Final = {"egress": "true", "outbound": "true", "ingress": "false",
                     "inbound": "false"}

_COMPILED: Final[dict[str, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    cat: tuple((name, tuple(path.split("."))) for name, path, _ in rows if path is not None)
    for cat, rows in FIELD_MAP.items()
}
_PROVIDED: Final[dict[str, dict[str, str | None]]] = {
    cat: {name: (None if path is not None else why) for name, path, why in rows}
    for cat, rows in FIELD_MAP.items()
}


def _get(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = doc
    if len(path) == 1:
        return cur.get(path[0])
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    return cur


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, dict | list):
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def record(category: str, doc: Mapping[str, Any]) -> dict[str, str]:
    """The flat Sysmon-named record of ``doc`` for ``category``: absent ECS fields stay absent."""
    out: dict[str, str] = {}
    for name, path in _COMPILED[category]:
        v = _get(doc, path)
        if name == "Initiated" and isinstance(v, str):
            v = _DIRECTION.get(v)
        t = _text(v)
        if t is not None:
            out[name] = t
    return out


def categories_of(doc: Mapping[str, Any]) -> tuple[str, ...]:
    event = doc.get("event")
    if not isinstance(event, Mapping) or event.get("outcome") == "failure":
        return ()
    return CATEGORIES.get((str(event.get("dataset")), str(event.get("action"))), ())


def ecs_to_records(doc: Mapping[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Every (logsource category, flat record) one Vigil ECS event feeds."""
    return [(c, record(c, doc)) for c in categories_of(doc)]


def coverage_warnings(rule: Rule) -> list[tuple[int, str]]:
    """Why (part of) a rule cannot fire on Vigil's events, with the line: its logsource, or
    each field the field map does not provide."""
    return [(line if line else rule.line, w) for line, w in _coverage(rule)]


def _coverage(rule: Rule) -> list[tuple[int, str]]:
    ls = rule.logsource
    if ls.product not in (None, "linux"):
        return [(rule.logsource_line,
                 f"logsource product '{ls.product}': Vigil provides Linux events only")]
    if ls.service is not None:
        return [(rule.logsource_line,
                 f"logsource service '{ls.service}' is not provided by Vigil yet")]
    if ls.category is None:
        return [(rule.logsource_line, "logsource names no category (log lines of the "
                 "product): not provided by Vigil yet")]
    if ls.category not in FIELD_MAP:
        return [(rule.logsource_line,
                 f"logsource category '{ls.category}' is not provided by Vigil yet")]
    provided = _PROVIDED[ls.category]
    out = []
    for f, line in sorted(rule.field_lines().items(), key=lambda x: (x[1], x[0])):
        if f not in provided:
            out.append((line, f"field '{f}' is not in Vigil's field map for {ls.category}"))
        elif provided[f] is not None:
            out.append((line, f"field '{f}' is not provided by Vigil for {ls.category}: "
                              f"{provided[f]}"))
    return out


def markdown_table() -> str:
    """The field map as the README shows it."""
    lines = ["| Sigma field | process_creation | file_event, file_change/delete/rename | "
             "network_connection | process_termination |", "|---|---|---|---|---|"]
    names: list[str] = []
    for rows in FIELD_MAP.values():
        names.extend(n for n, _, _ in rows if n not in names)

    def cell(cat: str, name: str) -> str:
        for n, path, why in FIELD_MAP[cat]:
            if n == name:
                return f"`{path}`" if path else f"— ({why})"
        return ""

    for n in names:
        lines.append(f"| `{n}` | {cell('process_creation', n)} | {cell('file_rename', n)} | "
                     f"{cell('network_connection', n)} | {cell('process_termination', n)} |")
    return "\n".join(lines)
