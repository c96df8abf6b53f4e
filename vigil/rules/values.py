"""Detection values: a ``field|modifier|...: value`` entry of a rule turned into typed tests.

Owns Sigma's string notation (``*`` and ``?`` wildcards, backslash escapes), the value
modifiers (contains, startswith, endswith, all, neq, cased, windash, base64, base64offset, re
with i/m/s, cidr, exists, lt/lte/gt/gte, fieldref) applied in the order written, the coercion
of integers and booleans to the text Sysmon logs carry, and the refusal of what the engine
cannot evaluate safely (a regular expression RE2 cannot compile: RE2 runs in linear time, so a
rule cannot stall the agent with catastrophic backtracking). Produces model.DetectionItem;
does not know where the values come from (YAML) nor how they are matched.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
from collections.abc import Sequence
from typing import Any, Final, Literal

import re2

from vigil.rules.model import (
    QMARK,
    STAR,
    CidrValue,
    CompareValue,
    DetectionItem,
    ExistsValue,
    FieldRefValue,
    NullValue,
    RegexValue,
    StringValue,
    Value,
    Wildcard,
)

_STAR: Final = Wildcard(STAR)
_QMARK: Final = Wildcard(QMARK)

WINDASH: Final = ("-", "/", "\u2013", "\u2014", "\u2015")
MAX_EXPANSION: Final = 4096   # windash variants of one value; beyond, the rule is refused
_WRAPS: Final = ("contains", "startswith", "endswith")
_CMP: Final = ("lt", "lte", "gt", "gte")
_RE_FLAGS: Final = ("i", "m", "s")
KNOWN_MODIFIERS: Final = frozenset(
    ("all", "neq", "cased", "windash", "base64", "base64offset", "re", "cidr", "exists",
     "fieldref", *_WRAPS, *_CMP, *_RE_FLAGS))
# In the specification but not evaluated (yet): refused by name rather than as unknown.
UNSUPPORTED_MODIFIERS: Final = frozenset(
    ("utf16le", "utf16be", "utf16", "wide", "expand", "minute", "hour", "day", "week",
     "month", "year"))


class ValueError_(Exception):
    """A value or modifier problem; the loader adds FILE:LINE."""


def parse_string(text: str) -> tuple[str | Wildcard, ...]:
    """Sigma's notation -> literal runs and wildcards.

    A backslash escapes ``*``, ``?`` and itself; before any other character it is a plain
    backslash (so ``C:\\Windows`` needs no doubling, and ``\\\\`` is one backslash).
    """
    parts: list[str | Wildcard] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "*?\\":
            buf.append(text[i + 1])
            i += 2
            continue
        if c in "*?":
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(_STAR if c == "*" else _QMARK)
        else:
            buf.append(c)
        i += 1
    if buf:
        parts.append("".join(buf))
    return _normalise(parts)


def _normalise(parts: Sequence[str | Wildcard]) -> tuple[str | Wildcard, ...]:
    """Adjacent literals joined, runs of ``*`` collapsed (``**`` means what ``*`` means)."""
    out: list[str | Wildcard] = []
    for p in parts:
        if isinstance(p, str):
            if not p:
                continue
            if out and isinstance(out[-1], str):
                out[-1] = out[-1] + p
                continue
        elif p == _STAR and out and out[-1] == _STAR:
            continue
        out.append(p)
    return tuple(out)


def _scalar_text(v: Any) -> str:
    """Integers and booleans as the text logs carry: ``4``, ``true``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float | str):
        return str(v)
    raise ValueError_(f"a value must be a string, number or boolean, got {type(v).__name__}")


def _plain(parts: tuple[str | Wildcard, ...], mod: str) -> str:
    if any(isinstance(p, Wildcard) for p in parts):
        raise ValueError_(f"'{mod}' cannot encode a value with wildcards")
    return "".join(p for p in parts if isinstance(p, str))


def base64_offsets(data: bytes) -> list[str]:
    """The three base64 renderings of ``data`` at byte offsets 0, 1 and 2 inside a longer
    string: characters that depend on the unknown bytes around it are cut off."""
    out = []
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + data).decode("ascii")
        head = (0, 2, 3)[shift]          # characters that still carry padding bits
        tail = (0, 3, 2)[(shift + len(data)) % 3]   # a partial last group ('=' and its mix)
        out.append(enc[head:len(enc) - tail])
    return out


def _windash(parts: tuple[str | Wildcard, ...]) -> list[tuple[str | Wildcard, ...]]:
    slots: list[list[str | Wildcard]] = []
    for p in parts:
        if isinstance(p, Wildcard):
            slots.append([p])
            continue
        for ch in p:
            slots.append(list(WINDASH) if ch in WINDASH else [ch])
    count = 1
    for s in slots:
        count *= len(s)
    if count > MAX_EXPANSION:
        raise ValueError_(f"'windash' would expand one value into {count} variants "
                          f"(at most {MAX_EXPANSION})")
    return [_normalise(list(combo)) for combo in itertools.product(*slots)]


def check_regex(pattern: str, flags: str = "") -> None:
    """Refuse what RE2 cannot compile (backreferences, look-around: they need backtracking)."""
    try:
        re2.compile(f"(?{flags}){pattern}" if flags else pattern)
    except re2.error as e:
        raise ValueError_(f"regular expression {pattern!r} refused by RE2 (linear-time "
                          f"engine): {e}") from None


def build_item(spec: str, raw: Any, line: int) -> DetectionItem:
    """One map entry (``spec`` = ``Field|mod|...``, ``raw`` its YAML value) or, with a spec
    that is only modifiers (``|all``) or empty, a keyword list."""
    name, *mods = spec.split("|")
    field: str | None = name or None
    for m in mods:
        if m in UNSUPPORTED_MODIFIERS:
            raise ValueError_(f"modifier '{m}' is not supported by Vigil's engine yet")
        if m not in KNOWN_MODIFIERS:
            raise ValueError_(f"unknown modifier '{m}' in '{spec}'")
    if len(set(mods)) != len(mods):
        raise ValueError_(f"a modifier is repeated in '{spec}'")
    raws: list[Any] = list(raw) if isinstance(raw, list) else [raw]
    if not raws:
        raise ValueError_(f"'{spec}' has an empty list of values")
    if any(r is None for r in raws):
        if len(raws) > 1:
            raise ValueError_("null cannot be part of a list of values (use its own selection)")
        if mods:
            raise ValueError_(f"null takes no modifiers ('{spec}')")
        if field is None:
            raise ValueError_("a keyword cannot be null")
        return DetectionItem(field, (), (NullValue(),), line=line)
    if any(isinstance(r, dict | list) for r in raws):
        raise ValueError_(f"the values of '{spec}' must be strings or numbers, not nested "
                          "lists or maps")
    values = _apply(field, mods, raws)
    return DetectionItem(field, tuple(mods), tuple(values), all="all" in mods,
                         negate="neq" in mods, line=line)


def _apply(field: str | None, mods: list[str], raws: list[Any]) -> list[Value]:
    kind = next((m for m in mods if m in ("re", "cidr", "exists", "fieldref", *_CMP)), None)
    if kind is not None and field is None:
        raise ValueError_(f"'{kind}' needs a field")
    cased = "cased" in mods
    if kind == "re":
        if any(m not in ("re", "all", "neq", *_RE_FLAGS) for m in mods):
            raise ValueError_(f"'re' combines only with i, m, s, all and neq, not "
                              f"{'|'.join(mods)}")
        flags = "".join(f for f in _RE_FLAGS if f in mods)
        out_re: list[Value] = []
        for r in raws:
            if not isinstance(r, str):
                raise ValueError_(f"a regular expression must be a string, got {r!r}")
            check_regex(r, flags)
            out_re.append(RegexValue(r, flags))
        return out_re
    if any(m in _RE_FLAGS for m in mods):
        raise ValueError_("modifiers i, m and s apply only after 're'")
    if kind in ("cidr", "exists", *_CMP):
        others = [m for m in mods if m not in (kind, "all", "neq")]
        if others:
            raise ValueError_(f"'{kind}' does not combine with {'|'.join(others)}")
        return [_typed(kind, r) for r in raws]
    if kind == "fieldref":
        mode: Literal["eq", "startswith", "endswith", "contains"] = "eq"
        for m in mods:
            if m in _WRAPS:
                mode = m  # type: ignore[assignment]
            elif m not in ("fieldref", "all", "neq", "cased"):
                raise ValueError_(f"'fieldref' does not combine with '{m}'")
        if any(not isinstance(r, str) for r in raws):
            raise ValueError_("'fieldref' takes field names")
        return [FieldRefValue(r, mode, cased) for r in raws]
    out: list[Value] = []
    for r in raws:
        variants = [parse_string(_scalar_text(r))]
        for m in mods:
            if m == "contains":
                variants = [_normalise([_STAR, *v, _STAR]) for v in variants]
            elif m == "startswith":
                variants = [_normalise([*v, _STAR]) for v in variants]
            elif m == "endswith":
                variants = [_normalise([_STAR, *v]) for v in variants]
            elif m == "windash":
                variants = [w for v in variants for w in _windash(v)]
            elif m == "base64":
                variants = [(base64.b64encode(_plain(v, m).encode()).decode("ascii"),)
                            for v in variants]
            elif m == "base64offset":
                variants = [(o,) for v in variants for o in base64_offsets(_plain(v, m).encode())]
        seen: set[tuple[str | Wildcard, ...]] = set()
        for v in variants:
            if v not in seen:
                seen.add(v)
                out.append(StringValue(v, cased))
    return out


def _typed(kind: str, r: Any) -> Value:
    if kind == "exists":
        if not isinstance(r, bool):
            raise ValueError_(f"'exists' takes true or false, got {r!r}")
        return ExistsValue(r)
    if kind == "cidr":
        if not isinstance(r, str):
            raise ValueError_(f"'cidr' takes a network such as 10.0.0.0/8, got {r!r}")
        try:
            return CidrValue(ipaddress.ip_network(r, strict=False))
        except ValueError:
            raise ValueError_(f"'{r}' is not a network (cidr)") from None
    if isinstance(r, bool) or not isinstance(r, int | float):
        raise ValueError_(f"'{kind}' takes a number, got {r!r}")
    return CompareValue(kind, r)  # type: ignore[arg-type]
