"""The field map: Sigma's Linux taxonomy (Sysmon for Linux names) -> Vigil's ECS event fields.

Owns THE table (``FIELD_MAP``, data: one row per logsource category and Sysmon field, with the
ECS field it comes from or the reason Vigil cannot provide it), which Vigil event belongs to
which logsource category, and ``ecs_to_records``: one ECS JSON document (as ``vigil run -o
json`` prints it) -> the flat ``{SysmonName: text}`` record(s) rules are matched against,
and the event's auditd records (vigil.rules.auditd, which owns that view and its field table)
under the key ``auditd``, for the ``service: auditd`` rules. A rule never sees an ECS dict.
Also the load-time warnings for rules whose fields, logsource or (for auditd) record types
and system calls Vigil cannot provide. The README's two field-map tables are generated here
(``markdown_table``, ``auditd_markdown_table``), so they cannot drift. Typed shell commands
feed the category-less Linux keyword rules under a key of their own (vigil.rules.shellview).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any, Final

from vigil.events.model import FileOp
from vigil.rules.auditd import (
    AUDITD,
    AUDITD_FIELDS,
    SYSCALLS,
    TYPES,
    VARIANTS,
    audit_field,
    auditd_parts,
    auditd_who,
)
from vigil.rules.ecsview import (
    ENGINE_KEY,
    PRODUCT,
    Fields,
    Paths,
    Plan,
    engine_key,
    field_paths,
    split_paths,
    vigil_key,
    vigil_part,
)
from vigil.rules.model import DetectionItem, Rule, StringValue
from vigil.rules.shellview import SHELL_KEY, is_shell_event, is_shell_rule, shell_record
from vigil.rules.who import WhoCache

ENGINE_KEYS: Final = tuple(ENGINE_KEY.values())

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
    ("CurrentDirectory", "process.working_directory", "the exec's working directory"),
    ("Hashes", "process.hash.sha256", "as Sysmon writes it: SHA256=HEX (sha256 only)"),
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
    # ECS's source is who initiated (Initiated 'true': this host's process; 'false': the peer
    # of an accepted connection or of a datagram received).
    ("DestinationIp", "destination.ip", "an IPv4-mapped IPv6 address as its IPv4 address"),
    ("DestinationPort", "destination.port", ""),
    ("DestinationHostname", None, "Vigil does not tie connections to the names resolved "
                                  "before them (no DNS or /etc/hosts view)"),
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
    ("vigil.network", "connect"): ("network_connection",),
    ("vigil.network", "accept"): ("network_connection",),
    ("vigil.network", "udp-send"): ("network_connection",),
    ("vigil.network", "udp-receive"): ("network_connection",),
}

# Per engine key, the fields that take a handful of values, and how many: an atom there
# (``type: PATH``, ``event.action: created``) hits a large share of events, so it triggers a
# rule only when nothing more selective can (vigil.rules.compiler's choice of trigger atoms).
_ACTIONS: Final = len({op.action for op in FileOp}) + 2   # + exec, exit
FEW_VALUED: Final[dict[str, dict[str, int]]] = {
    "network_connection": {"Initiated": 2, "Protocol": 3},
    AUDITD: {"type": len(TYPES), "SYSCALL": len(SYSCALLS), "success": 2, "nametype": 5,
             "items": 4, "item": 4, "argc": 4},
    **{k: {"event.kind": 2, "event.category": 3, "event.type": 6, "event.action": _ACTIONS,
           "event.outcome": 2, "event.dataset": 4, "event.module": 1,
           "vigil.file.operation": len(FileOp), "network.direction": 2,
           "network.transport": 3, "network.type": 2}
       for k in ENGINE_KEYS},
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


def get_path(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = doc
    if len(path) == 1:
        return cur.get(path[0])
    for p in path:
        if type(cur) is not dict:   # ECS documents are plain dicts (no abc check: hot)
            return None
        cur = cur.get(p)
    return cur


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, dict | list):
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


SPLIT: Final[dict[str, Plan]] = {cat: split_paths(paths) for cat, paths in _COMPILED.items()}


def record(category: str, doc: Mapping[str, Any], paths: Paths | None = None) -> dict[str, str]:
    """The flat Sysmon-named record of ``doc`` for ``category``: absent ECS fields stay absent.
    ``paths``: only those fields (a part of a ``record_plans`` plan)."""
    out: dict[str, str] = {}
    for name, path in _COMPILED[category] if paths is None else paths:
        t = sysmon_text(name, get_path(doc, path))
        if t is not None:
            out[name] = t
    return out


def sysmon_text(name: str, v: Any) -> str | None:
    """The text of a Sysmon field from its ECS value (None: absent)."""
    if name == "Initiated" and isinstance(v, str):
        v = _DIRECTION.get(v)
    elif name == "Hashes" and isinstance(v, str):
        v = "SHA256=" + v.upper()   # Sysmon's text: ALGO=HEX, comma separated
    return _text(v)


def record_plans(read: Mapping[str, set[str] | None]) -> Fields:
    """Per engine key, the fields its records need (``read``: the fields its rules and the
    correlations fed by them read; None: every field, for rules with keyword searches),
    split once into those from the who-data and the others: the records of an event are
    made of those alone."""
    out: dict[str, Plan | None] = {}
    for key, names in read.items():
        if key in ENGINE_KEYS:
            out[key] = field_paths(names)
        elif key in _COMPILED:
            out[key] = None if names is None else \
                split_paths(tuple(np for np in _COMPILED[key] if np[0] in names))
    return out


def categories_of(doc: Mapping[str, Any]) -> tuple[str, ...]:
    event = doc.get("event")
    if type(event) is not dict or event.get("outcome") == "failure":
        return ()
    return CATEGORIES.get((str(event.get("dataset")), str(event.get("action"))), ())


Parts = list[tuple[str, dict[str, str], list[dict[str, str]]]]
_NO_WHO: Final[dict[str, str]] = {}   # shared, never changed


def keys_of(doc: Mapping[str, Any], wanted: Container[str | None] | None = None) -> list[str]:
    """The engine keys whose records ``doc`` may feed (a superset: an event no system call
    made, a scan's, feeds no auditd record), in ``wanted``."""
    event = doc.get("event")
    out = list(categories_of(doc))
    if type(event) is dict and event.get("dataset") in ("vigil.file", "vigil.process"):
        out.append(AUDITD)
    if (key := vigil_key(doc)) is not None:
        out.append(key)
    if is_shell_event(doc):
        out.append(SHELL_KEY)
    return out if wanted is None else [k for k in out if k in wanted]


def ecs_to_parts(doc: Mapping[str, Any], wanted: Container[str | None] | None = None,
                 plans: Fields | None = None, who: WhoCache | None = None) -> Parts:
    """The records of ``ecs_to_records`` per key, as (key, who part, records without it):
    the fields taken from the document's who-data (vigil.rules.who) apart, as they belong
    to the key's first record. With ``who``, each who part is made once per who-data."""
    return key_parts(doc, keys_of(doc, wanted), plans, who)


def key_parts(doc: Mapping[str, Any], keys: Iterable[str], plans: Fields | None = None,
              who: WhoCache | None = None) -> Parts:
    """``ecs_to_parts`` for ``keys``, some of the document's (``keys_of``), in its order."""
    made = who.values(doc) if who is not None else {}
    plans = plans or {}
    out: Parts = []
    for key in keys:
        if key == AUDITD:
            recs = auditd_parts(doc)
        elif key == SHELL_KEY:
            recs = [shell_record(doc)]
        elif key in ENGINE_KEYS:
            recs = [vigil_part(doc, plans.get(key), False)]
        else:
            recs = [record(key, doc, (plans.get(key) or SPLIT[key])[1])]
        if recs:   # an event no system call made has no auditd records
            w = made.get(key)
            if w is None:
                w = made[key] = who_part(key, doc, plans)
            out.append((key, w, recs))
    return out


def who_part(key: str, doc: Mapping[str, Any], plans: Fields) -> dict[str, str]:
    """The fields of ``key``'s first record taken from the document's who-data."""
    if key == AUDITD:
        return auditd_who(doc)
    if key == SHELL_KEY:   # the typed line alone: no who-data to search
        return _NO_WHO
    if key in ENGINE_KEYS:
        return vigil_part(doc, plans.get(key), True)
    return record(key, doc, (plans.get(key) or SPLIT[key])[0])


def merged(who: dict[str, str], records: list[dict[str, str]]) -> list[dict[str, str]]:
    """A key's whole records from ``ecs_to_parts``: the who part joins the first."""
    return [{**records[0], **who}, *records[1:]] if records else []


def ecs_to_records(doc: Mapping[str, Any], wanted: Container[str | None] | None = None,
                   fields: Fields | None = None) -> list[tuple[str, dict[str, str]]]:
    """Every (logsource key, flat record) one Vigil ECS event feeds: its Sysmon-named
    records, each of its auditd records as ``("auditd", record)``, and its record of Vigil's
    own logsource (vigil.rules.ecsview). With ``wanted`` (the keys some rule is keyed by),
    only those are built: an event costs nothing for views no rule reads; ``fields`` (from
    ``record_plans``) limits the Sysmon records and Vigil's own to the fields read."""
    return [(key, r) for key, who, recs in ecs_to_parts(doc, wanted, fields)
            for r in merged(who, recs)]


def coverage_warnings(rule: Rule) -> list[tuple[int, str]]:
    """Why (part of) a rule cannot fire on Vigil's events, with the line: its logsource, or
    each field the field map does not provide."""
    return [(line if line else rule.line, w) for line, w in _coverage(rule)]


def _coverage(rule: Rule) -> list[tuple[int, str]]:
    ls = rule.logsource
    if ls.product == PRODUCT:
        if engine_key(ls.product, ls.category) is None:
            return [(rule.logsource_line, f"logsource product '{PRODUCT}' has the categories "
                     f"{', '.join(ENGINE_KEY)}, not '{ls.category}'")]
        return []   # any dotted ECS field of Vigil's events
    if ls.product not in (None, "linux"):
        return [(rule.logsource_line,
                 f"logsource product '{ls.product}': Vigil provides Linux events only")]
    if ls.service == AUDITD and ls.category is None:
        return _auditd_coverage(rule)
    if ls.service is not None:
        return [(rule.logsource_line,
                 f"logsource service '{ls.service}' is not provided by Vigil yet")]
    if is_shell_rule(rule):
        return []   # keywords over typed shell commands (vigil.rules.shellview)
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


def _plain(it: DetectionItem) -> list[str]:
    """The item's values that are plain text (no wildcard, not a regex...)."""
    return [p for v in it.values if isinstance(v, StringValue) and (p := v.plain) is not None]


def _auditd_coverage(rule: Rule) -> list[tuple[int, str]]:
    """auditd fields Vigil does not give, in the record types a search asks for (its
    ``type``), record types it never makes, and system calls it never names."""
    out: dict[tuple[int, str], None] = {}
    for s in rule.searches.values():
        for alt in s.alternatives:
            types: set[str] | None = None
            for it in alt:
                if it.field == "type" and not it.negate and not it.all and _plain(it) \
                        and len(_plain(it)) == len(it.values):
                    types = {v.upper() for v in _plain(it)}
                    gone = sorted(types - set(TYPES))
                    if gone:
                        what = ", ".join(f"'{t}'" for t in gone)
                        out[(it.line, f"auditd records of type {what} are not made by Vigil "
                                      f"(its view has {', '.join(TYPES)} records)")] = None
            for it in alt:
                if it.field is None or it.field == "type":
                    continue
                for w in _field_warnings(it, types):
                    out[(it.line, w)] = None
    return sorted(out, key=lambda lw: lw[0])


def _field_warnings(it: DetectionItem, types: set[str] | None) -> list[str]:
    assert it.field is not None
    f = audit_field(it.field)
    if f is None:
        return [f"field '{it.field}' is not in Vigil's auditd view"]
    if not f.sources:
        return [f"field '{it.field}' is not provided by Vigil for auditd: "
                + "; ".join(f.missing.values())]
    if types is not None and types & set(TYPES) and not types & set(f.sources):
        why = "; ".join(w for t, w in f.missing.items() if t in types)
        return [f"field '{it.field}' is not provided by Vigil in "
                + ", ".join(sorted(types & set(TYPES))) + " records" + (f": {why}" if why
                                                                         else "")]
    if it.field != "SYSCALL" or it.negate:
        return []
    names = {v.lower() for v in _plain(it)}
    out = []
    for n in sorted(names - SYSCALLS):
        instead = VARIANTS.get(n)
        if instead is None:
            out.append(f"SYSCALL '{n}' is never given: Vigil sees execs and file changes, "
                       "not this system call")
        elif not set(instead.split(" or ")) & names:
            out.append(f"SYSCALL '{n}' is never given: Vigil names the call '{instead}' (it "
                       "does not know the variant)")
    return out


def auditd_markdown_table() -> str:
    """The auditd view's fields as the README shows them."""
    cols = (*TYPES, "other records")
    lines = ["| auditd field | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for f in AUDITD_FIELDS:
        cells = [f.sources.get(t) or (f"— ({f.missing[t]})" if t in f.missing else "")
                 for t in cols[:-1]]
        other = [f"{t}: — ({w})" for t, w in f.missing.items() if t not in cols]
        lines.append(f"| {f.label} | " + " | ".join((*cells, "; ".join(other))) + " |")
    return "\n".join(lines)


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
