"""Vigil's own logsource: rules over Vigil's ECS fields, for what Sysmon's taxonomy lacks.

Sigma's Linux taxonomy (Sysmon for Linux) has no file mode, owner, failed attempt, or FIM
before/after. Rules that need them are written with ``logsource: {product: vigil, category:
file | process}`` and name Vigil's ECS fields by their dotted path (``file.mode``,
``event.action``, ``process.executable``, ``event.outcome``, ``vigil.file.operation``...).
Owns that view: which Vigil events feed which of these categories, and an ECS document
flattened to ``{dotted.path: text}`` (lists joined by a space; absent and empty fields stay
absent). Unlike the Sysmon view, failed attempts feed it too (``event.outcome: failure``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

PRODUCT: Final = "vigil"
CATEGORIES: Final = {"vigil.file": "file", "vigil.process": "process"}
# the Engine keys rules by category alone: these names stay apart from Sysmon's categories
ENGINE_KEY: Final = {"file": "vigil:file", "process": "vigil:process"}


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


def _value(doc: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    cur: Any = doc
    for p in path:
        if type(cur) is not dict:
            return None
        cur = cur.get(p)
    if cur is None or type(cur) is dict:
        return None
    if type(cur) is list:
        if not cur or any(type(x) is dict or type(x) is list for x in cur):
            return None
        return " ".join(_text(x) for x in cur)
    return _text(cur)


Fields = Mapping[str, tuple[tuple[str, tuple[str, ...]], ...] | None]


def field_paths(fields: set[str] | None) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    """What ``vigil_records`` needs for one key: the dotted fields its rules read, split once
    (None: every field, for rules with keyword searches that read any value)."""
    return None if fields is None else tuple((f, tuple(f.split("."))) for f in sorted(fields))


def vigil_records(doc: Mapping[str, Any], fields: Fields | None = None
                  ) -> list[tuple[str, dict[str, str]]]:
    """The (engine key, record) pairs of Vigil's own logsource for one ECS document. With
    ``fields`` (per key, from ``field_paths``), only the fields the rules read are made:
    the whole document flattened costs several times the matching."""
    event = doc.get("event")
    if not isinstance(event, Mapping) or event.get("kind") != "event":
        return []
    cat = CATEGORIES.get(str(event.get("dataset")))
    if cat is None:
        return []
    key = ENGINE_KEY[cat]
    paths = fields.get(key) if fields is not None else None
    if paths is None:
        return [(key, flatten(doc))]
    return [(key, {f: v for f, path in paths if (v := _value(doc, path)) is not None})]


def engine_key(product: str | None, category: str | None) -> str | None:
    """The Engine's category key of a rule of Vigil's own logsource, else None."""
    if product == PRODUCT and category in ENGINE_KEY:
        return ENGINE_KEY[category]
    return None
