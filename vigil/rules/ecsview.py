"""Vigil's own logsource: rules over Vigil's ECS fields, for what Sysmon's taxonomy lacks.

Sigma's Linux taxonomy (Sysmon for Linux) has no file mode, owner, failed attempt, FIM
before/after, privilege change, tampering event or typed shell command. Rules that need them
are written with ``logsource: {product: vigil, category: file | process | network |
privilege | tampering | shell}`` and name Vigil's ECS fields by their dotted path
(``file.mode``, ``event.action``, ``process.executable``, ``event.outcome``,
``vigil.file.operation``, ``vigil.shell.command``...).
Owns that view: which Vigil events feed which of these categories, and an ECS document
flattened to ``{dotted.path: text}`` (lists joined by a space; absent and empty fields stay
absent). Unlike the Sysmon view, failed attempts feed it too (``event.outcome: failure``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from vigil.rules.who import is_who_path

PRODUCT: Final = "vigil"
CATEGORIES: Final = {"vigil.file": "file", "vigil.process": "process",
                     "vigil.network": "network", "vigil.privilege": "privilege",
                     "vigil.tampering": "tampering", "vigil.shell": "shell"}
# the Engine keys rules by category alone: these names stay apart from Sysmon's categories
ENGINE_KEY: Final = {"file": "vigil:file", "process": "vigil:process",
                     "network": "vigil:network", "privilege": "vigil:privilege",
                     "tampering": "vigil:tampering", "shell": "vigil:shell"}


def flatten(doc: Mapping[str, Any], prefix: str = "", out: dict[str, str] | None = None
            ) -> dict[str, str]:
    out = {} if out is None else out
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if type(v) is dict:   # ECS documents are plain dicts and lists (no abc checks: hot)
            flatten(v, key + ".", out)
        elif type(v) is list:
            if v and all(type(x) is not dict and type(x) is not list for x in v):
                out[key] = " ".join(_text(x) for x in v)
        elif v is not None:
            out[key] = _text(v)
    return out


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def ecs_value(doc: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    """The text of one ECS field as the view gives it (None: absent or not a value)."""
    cur: Any = doc
    for p in path:
        if type(cur) is not dict:
            return None
        cur = cur.get(p)
    return ecs_text(cur)


def ecs_text(v: Any) -> str | None:
    """An ECS value's text in the view: lists of values joined by a space; None for
    nothing, objects and lists of them."""
    if v is None or type(v) is dict:
        return None
    if type(v) is list:
        if not v or any(type(x) is dict or type(x) is list for x in v):
            return None
        return " ".join(_text(x) for x in v)
    return _text(v)


Paths = tuple[tuple[str, tuple[str, ...]], ...]   # (field name, ECS path split)
Plan = tuple[Paths, Paths]   # the fields from the who-data, the others (vigil.rules.who)
Fields = Mapping[str, Plan | None]


def split_paths(paths: Paths) -> Plan:
    return (tuple(p for p in paths if is_who_path(p[1])),
            tuple(p for p in paths if not is_who_path(p[1])))


def field_paths(fields: set[str] | None) -> Plan | None:
    """What ``vigil_parts`` needs for one key: the dotted fields its rules read, split once
    (None: every field, for rules with keyword searches that read any value)."""
    if fields is None:
        return None
    return split_paths(tuple((f, tuple(f.split("."))) for f in sorted(fields)))


def vigil_key(doc: Mapping[str, Any]) -> str | None:
    """The engine key of Vigil's own logsource this document feeds, if any."""
    event = doc.get("event")
    if type(event) is not dict or event.get("kind") != "event":
        return None
    cat = CATEGORIES.get(str(event.get("dataset")))
    return None if cat is None else ENGINE_KEY[cat]


def vigil_part(doc: Mapping[str, Any], plan: Plan | None, who: bool) -> dict[str, str]:
    """The record of Vigil's own logsource for one document: the fields from its who-data
    (``who``) or the others. With ``plan`` (``field_paths``), only the fields the rules
    read are made: the whole document flattened costs several times the matching."""
    if plan is None:
        flat = flatten(doc)
        return {k: v for k, v in flat.items() if is_who_path(tuple(k.split(".", 2))) == who}
    return {f: v for f, path in plan[0 if who else 1] if (v := ecs_value(doc, path)) is not None}


def engine_key(product: str | None, category: str | None) -> str | None:
    """The Engine's category key of a rule of Vigil's own logsource, else None."""
    if product == PRODUCT and category in ENGINE_KEY:
        return ENGINE_KEY[category]
    return None
