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
        if isinstance(v, Mapping):
            flatten(v, key + ".", out)
        elif isinstance(v, list):
            if v and all(not isinstance(x, Mapping | list) for x in v):
                out[key] = " ".join(_text(x) for x in v)
        elif v is not None:
            out[key] = _text(v)
    return out


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def vigil_records(doc: Mapping[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """The (engine key, record) pairs of Vigil's own logsource for one ECS document."""
    event = doc.get("event")
    if not isinstance(event, Mapping) or event.get("kind") != "event":
        return []
    cat = CATEGORIES.get(str(event.get("dataset")))
    return [(ENGINE_KEY[cat], flatten(doc))] if cat is not None else []


def engine_key(product: str | None, category: str | None) -> str | None:
    """The Engine's category key of a rule of Vigil's own logsource, else None."""
    if product == PRODUCT and category in ENGINE_KEY:
        return ENGINE_KEY[category]
    return None
