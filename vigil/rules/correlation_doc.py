"""A Sigma correlation document -> correlation.Correlation, for vigil.rules.loader.

Owns what the correlation JSON schema leaves open, checked with FILE:LINE errors: the
supported types (the metric types of specification 2.1, ``value_sum``, ``value_avg`` and
``value_percentile``, are refused by name), the timespan's form (a number and s, m, h or d),
the condition's criteria (``gt``, ``gte``, ``lt``, ``lte``, ``eq``, ``neq``, ANDed; ``field``
for value_count; counts up to correlation.MAX_COUNT; a condition that can never hold),
temporal types' default condition (all rules), and aliases (every rule of the correlation
named, for an alias used in ``group-by``). References are resolved later, across files
(correlation.resolve).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from vigil.rules.correlation import MAX_COUNT, OPS, TYPES, Correlation, Op, holds
from vigil.rules.errors import RuleError

_UNIT_NS: Final = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_TIMESPAN: Final = re.compile(r"([1-9][0-9]{0,8})([smhd])")

Where = Callable[[tuple[Any, ...]], int]   # a path in the document -> its line
Err = Callable[[tuple[Any, ...], str], RuleError]


def parse_timespan(text: str) -> int:
    """``90m`` -> nanoseconds; ValueError for anything but a number and one of s, m, h, d."""
    m = _TIMESPAN.fullmatch(text)
    if m is None:
        raise ValueError(f"timespan {text!r} is not a number followed by s, m, h or d "
                         f"(e.g. 90m)")
    return int(m.group(1)) * _UNIT_NS[m.group(2)]


def _strings(data: Mapping[str, Any], key: str, err: Err, one: bool = False
             ) -> tuple[str, ...]:
    """A list of strings (``one``: or a single string, as the schema allows
    falsepositives)."""
    v = data.get(key)
    if v is None:
        return ()
    if one and isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise err((key,), f"{key} must be a list of strings")
    return tuple(v)


def build(data: Mapping[str, Any], source: str, line: Where) -> Correlation:
    """A correlation from a document the correlation schema accepted."""
    def err(path: tuple[Any, ...], msg: str) -> RuleError:
        return RuleError(msg, source=source, line=line(path))

    c: Mapping[str, Any] = data["correlation"]
    ctype = c["type"]
    if ctype not in TYPES:
        raise err(("correlation", "type"), f"correlation type '{ctype}' is not supported "
                  f"(Vigil runs {', '.join(TYPES)})")
    refs = tuple(c["rules"])
    if not refs:
        raise err(("correlation", "rules"), "the correlation refers to no rule")
    try:
        span = parse_timespan(c["timespan"])
    except ValueError as e:
        raise err(("correlation", "timespan"), str(e)) from None
    group_by = tuple(c.get("group-by", ()))
    cond, fields = _condition(c, ctype, len(refs), err)
    aliases = _aliases(c, refs, group_by, err)
    for key in ("name",):
        if key in data and (not isinstance(data[key], str) or len(data[key]) > 256):
            raise err((key,), f"{key} must be text of at most 256 characters")
    return Correlation(
        title=data["title"], id=data.get("id"), name=data.get("name"), type=ctype, rules=refs,
        group_by=group_by, timespan_ns=span, condition=cond, source=source,
        line=line(("title",)), field=fields, aliases=aliases,
        generate=bool(c.get("generate", False)), timespan_text=c["timespan"],
        level=data.get("level"), status=data.get("status"),
        description=data.get("description"), author=data.get("author"),
        references=tuple(data.get("references", ())), tags=_strings(data, "tags", err),
        falsepositives=_strings(data, "falsepositives", err, one=True), date=data.get("date"),
        modified=data.get("modified"),
        rules_lines=tuple(line(("correlation", "rules", i)) for i in range(len(refs))),
        group_by_line=line(("correlation", "group-by")),
        field_line=line(("correlation", "condition", "field")))


def _condition(c: Mapping[str, Any], ctype: str, nrules: int,
               err: Err) -> tuple[tuple[tuple[Op, int], ...], tuple[str, ...]]:
    path = ("correlation", "condition")
    raw = c.get("condition")
    if raw is None:
        if ctype in ("event_count", "value_count"):
            raise err(("correlation",), f"a {ctype} correlation needs a condition")
        return (("gte", nrules),), ()
    crit: list[tuple[Op, int]] = []
    fields: tuple[str, ...] = ()
    for key, v in raw.items():
        if key == "field":
            if ctype != "value_count":
                raise err((*path, key), "'field' belongs to value_count correlations only")
            vals = [v] if isinstance(v, str) else v
            if not isinstance(vals, list) or not vals or \
                    not all(isinstance(x, str) and x for x in vals):
                raise err((*path, key), "field must be a field name or a list of them")
            fields = tuple(vals)
            continue
        op = next((o for o in OPS if o == key), None)
        if op is None:
            raise err((*path, key), f"'{key}' is no condition criterion (gt, gte, lt, lte, "
                      f"eq, neq; field for value_count)")
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise err((*path, key), f"{key} must be a whole number >= 0, not {v!r}")
        if v > MAX_COUNT:
            raise err((*path, key), f"{key} {v}: counts above {MAX_COUNT} are not supported "
                      f"(a group keeps that many timestamps or values at most)")
        crit.append((op, v))
    if not crit:
        raise err(path, "the condition has no criterion (gt, gte, lt, lte, eq, neq)")
    if ctype == "value_count" and not fields:
        raise err(path, "a value_count condition needs 'field'")
    cond = tuple(crit)
    top = nrules if ctype.startswith("temporal") else MAX_COUNT + 1
    ok = [n for n in range(1, top + 1) if all(holds(op, n, k) for op, k in cond)]
    if not ok:
        what = f"of {nrules} rules" if ctype.startswith("temporal") else "a count is >= 1"
        raise err(path, f"the condition can never hold ({what})")
    if ctype == "temporal_ordered" and ok != [nrules]:
        raise err(path, f"a temporal_ordered correlation needs all its {nrules} rules in "
                  f"order: its condition can only be gte: {nrules} (or left out)")
    if ctype.startswith("temporal") and ok == list(range(ok[0], nrules + 1)):
        cond = (("gte", ok[0]),)   # the same counts (at most nrules), decided at once
    return cond, fields


def _aliases(c: Mapping[str, Any], refs: tuple[str, ...], group_by: tuple[str, ...],
             err: Err) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for alias, mapping in c.get("aliases", {}).items():
        path = ("correlation", "aliases", alias)
        for ref, fld in mapping.items():
            if ref not in refs:
                raise err((*path, ref), f"alias '{alias}' names '{ref}', which is not in the "
                          f"correlation's rules")
            if not isinstance(fld, str) or not fld:
                raise err((*path, ref), f"alias '{alias}': the field for '{ref}' must be a "
                          f"field name")
        missing = [r for r in refs if r not in mapping]
        if alias in group_by and missing:
            raise err(path, f"alias '{alias}' does not say which field it is for "
                      f"{', '.join(repr(m) for m in missing)}")
        out[alias] = dict(mapping)
    return out
