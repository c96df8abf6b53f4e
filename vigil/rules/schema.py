"""Validation of a Sigma document against its JSON schema shipped in vigil/data/sigma.

Owns a small JSON-schema evaluator for exactly the keywords the three shipped schemas (rules,
filters, correlations) use (type, required, properties, additionalProperties, items, oneOf,
anyOf, allOf, if/then/else, const, enum, minLength, maxLength, minItems, maxItems, pattern,
uniqueItems; format, title, description and $schema are annotations). A keyword it does not
know makes loading the schema fail, so a newer schema cannot be half-checked in silence; the
correlation schema's few words written where JSON Schema expects keywords (``gt``, ``field``,
... inside ``anyOf``: no keyword, so JSON Schema ignores them) are named and ignored the same
way, and the loader checks the correlation condition itself (vigil.rules.correlation_doc).
Why not the ``jsonschema`` package: the agent runs on monitored hosts, and this subset is ~100
lines with no dependency (jsonschema pulls attrs, referencing and a Rust extension);
tests/unit/test_rules_schema.py checks it against the shipped rules.

Errors name the JSON path of the offending value; the loader turns the path into a line.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from functools import cache
from pathlib import Path
from typing import Any, Final

Path_ = tuple[str | int, ...]

_ANNOTATIONS: Final = frozenset(("$schema", "title", "description", "format", "$comment"))
_KEYWORDS: Final = frozenset(("type", "required", "properties", "additionalProperties", "items",
                              "oneOf", "anyOf", "allOf", "if", "then", "else", "const", "enum",
                              "minLength", "maxLength", "minItems", "maxItems", "pattern",
                              "uniqueItems")) | _ANNOTATIONS
SCHEMA_FILE: Final = "sigma-detection-rule-schema.json"
FILTER_SCHEMA_FILE: Final = "sigma-filters-schema.json"
CORRELATION_SCHEMA_FILE: Final = "sigma-correlation-rules-schema.json"
# Not keywords: the correlation schema writes the condition's criteria (and, in a ``then``,
# a property) where a keyword belongs; JSON Schema ignores unknown words, and so do we.
_CORRELATION_NON_KEYWORDS: Final = frozenset(("gt", "gte", "lt", "lte", "eq", "neq", "field",
                                              "condition"))


class SchemaError(Exception):
    """The schema itself uses something this evaluator does not implement."""


def _is_type(v: Any, t: str) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, int | float) and not isinstance(v, bool)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "null":
        return v is None
    raise SchemaError(f"unknown type {t!r}")


def _check_keywords(schema: Any, ignored: frozenset[str] = frozenset()) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"a schema must be an object, got {schema!r}")
    unknown = set(schema) - _KEYWORDS - ignored
    if unknown:
        raise SchemaError(f"unsupported schema keywords: {', '.join(sorted(unknown))}")
    for key in ("properties",):
        for sub in schema.get(key, {}).values():
            _check_keywords(sub, ignored)
    for key in ("additionalProperties", "items", "if", "then", "else"):
        if key in schema:
            _check_keywords(schema[key], ignored)
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(key, []):
            _check_keywords(sub, ignored)


def _type_name(v: Any) -> str:
    for t in ("object", "array", "string", "boolean", "integer", "number", "null"):
        if _is_type(v, t):
            return t
    return type(v).__name__


def validate(schema: Any, value: Any, path: Path_ = ()) -> list[tuple[Path_, str]]:
    """Every violation, as (path of the value, message); empty when the value conforms."""
    if schema is True:
        return []
    if schema is False:
        return [(path, "is not allowed here")]
    errs: list[tuple[Path_, str]] = []
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_is_type(value, x) for x in types):
            return [(path, f"must be {' or '.join(types)}, not {_type_name(value)}")]
    if "const" in schema and value != schema["const"]:
        errs.append((path, f"must be {schema['const']!r}"))
    if "enum" in schema and value not in schema["enum"]:
        errs.append((path, f"must be one of {', '.join(map(repr, schema['enum']))}"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append((path, f"is longer than {schema['maxLength']} characters"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            errs.append((path, f"is shorter than {schema['minLength']} characters"))
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            errs.append((path, f"{value!r} does not match {schema['pattern']!r}"))
    if isinstance(value, dict):
        for req in schema.get("required", []):
            if req not in value:
                errs.append((path, f"'{req}' is required"))
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            sub = props.get(k, extra)
            errs.extend(validate(sub, v, (*path, k)))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errs.append((path, f"needs at least {schema['minItems']} item(s)"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errs.append((path, f"has more than {schema['maxItems']} items"))
        if "items" in schema:
            for i, v in enumerate(value):
                errs.extend(validate(schema["items"], v, (*path, i)))
        if schema.get("uniqueItems"):
            seen: list[Any] = []
            for i, v in enumerate(value):
                if v in seen:
                    errs.append(((*path, i), f"repeats {v!r} (items must be unique)"))
                seen.append(v)
    if "anyOf" in schema and not any(not validate(s, value, path) for s in schema["anyOf"]):
        errs.append((path, "matches none of the allowed forms"))
    for sub in schema.get("allOf", []):
        errs.extend(validate(sub, value, path))
    if "if" in schema:
        branch = "then" if not validate(schema["if"], value, path) else "else"
        if branch in schema:
            errs.extend(validate(schema[branch], value, path))
    if "oneOf" in schema:
        ok = [s for s in schema["oneOf"] if not validate(s, value, path)]
        if len(ok) != 1:
            consts = [s["const"] for s in schema["oneOf"] if "const" in s]
            if not ok and len(consts) == len(schema["oneOf"]):
                errs.append((path, f"must be one of {', '.join(map(str, consts))}"))
            else:
                errs.append((path, f"matches {len(ok)} of the allowed forms, not exactly one"))
    return errs


@cache
def _pattern(p: str) -> re.Pattern[str]:
    return re.compile(p)


def _load(name: str, ignored: frozenset[str] = frozenset()) -> dict[str, Any]:
    try:
        text = importlib.resources.files("vigil").joinpath(f"data/sigma/{name}") \
            .read_text("utf-8")
    except (NotADirectoryError, FileNotFoundError, ModuleNotFoundError):
        text = (Path(__file__).parent.parent / "data" / "sigma" / name).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    _check_keywords(schema, ignored)
    return schema


@cache
def rule_schema() -> dict[str, Any]:
    """The shipped Sigma detection-rule schema, its keywords checked once."""
    return _load(SCHEMA_FILE)


@cache
def filter_schema() -> dict[str, Any]:
    """The shipped Sigma filter schema."""
    return _load(FILTER_SCHEMA_FILE)


@cache
def correlation_schema() -> dict[str, Any]:
    """The shipped Sigma correlation-rule schema (its non-keywords ignored, see above)."""
    return _load(CORRELATION_SCHEMA_FILE, _CORRELATION_NON_KEYWORDS)
