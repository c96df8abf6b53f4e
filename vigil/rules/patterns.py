"""RE2 pattern text for the rule engine's atoms: what the per-event set searches.

Owns the translation of Sigma string values (literal runs, ``*``, ``?``, case folding) into
RE2 patterns over one value or inside the joined record (``FS name NS value`` per field, no
wildcard crossing FS), the RE2 options, and the prefilters that let a regex atom trigger its
rules from the same set: the literals every match must contain (``-(W|R)`` -> ``-W``, ``-R``),
or the whole regex when it has no anchors. A prefilter may hit more often than its regex
(never less); the regex itself is checked by the rule (vigil.rules.compiler).
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Final

import re2

from vigil.rules.model import STAR, RegexValue, StringValue, Wildcard


def re2_options() -> re2.Options:
    o = re2.Options()
    o.log_errors = False
    o.max_mem = 64 << 20
    return o


class _EscapeTable(dict[int, str]):
    """str.translate's table for RE2 literals, filled as characters are met: ASCII letters,
    digits, ``_`` and printable non-ASCII stay; other printable ASCII gets a backslash; the
    rest is written ``\\x{HEX}``."""

    def __missing__(self, o: int) -> str:
        ch = chr(o)
        if (ch.isalnum() and o < 128) or ch == "_" or (o >= 128 and ch.isprintable()):
            out = ch
        elif 32 <= o < 127:
            out = "\\" + ch
        else:
            out = f"\\x{{{o:x}}}"
        self[o] = out
        return out


_ESCAPES = _EscapeTable()


def _escape(text: str) -> str:
    return text.translate(_ESCAPES)


FIELD_SEP: Final = "\x1e"   # between fields of the joined record (see matcher.joined)
NAME_SEP: Final = "\x1f"    # between a field's name and its value
KEY_SEP: Final = "\x1d"     # between the engine key and the field name (the name's scope)


def scope(key: str) -> str:
    """The prefix of a key's field names in the joined record: the records of all keys of an
    event can be searched at once by one set (matcher.Screen), each atom in its own key. A
    short code of the key, not its name: every byte of a field's prefix is searched in every
    record. Two keys with one code would only let the Screen pass a key for nothing, which
    its own matcher then decides."""
    return f"{zlib.crc32(key.encode()) & 0xFFFF:04x}{KEY_SEP}"


def string_pattern(v: StringValue, fold: str = "unicode", joined: bool = False) -> str:
    """The RE2 pattern of a Sigma string over the whole value: ``*`` any run (newlines too),
    ``?`` one character. ``fold='ascii'`` folds only ASCII letters (SQLite's LIKE does; the
    differential test uses it to explain SQLite's disagreements on other letters).
    ``joined``: the body of the pattern for the joined record, where the value ends at
    FIELD_SEP and no wildcard crosses it."""
    parts = list(v.parts)
    head = "" if joined else r"\A"
    tail = _escape(FIELD_SEP) if joined else r"\z"
    if parts and parts[0] == Wildcard(STAR):
        parts.pop(0)
        head = f"[^{_escape(FIELD_SEP)}]*" if joined else ""
    if parts and parts[-1] == Wildcard(STAR):
        parts.pop()
        tail = ""
    one = f"[^{_escape(FIELD_SEP)}]" if joined else "."
    body = []
    for p in parts:
        if isinstance(p, Wildcard):
            body.append(one + "*" if p.kind == STAR else one)
        elif fold == "ascii" and not v.cased:
            body.append("".join(f"[{c.lower()}{c.upper()}]" if c.isascii() and c.isalpha()
                                else _escape(c) for c in p))
        else:
            body.append(_escape(p))
    flags = "s" if v.cased or fold == "ascii" else "is"
    return f"(?{flags}:{head}{''.join(body)}{tail})"


def joined_pattern(fld: str, v: StringValue, fold: str = "unicode") -> str:
    """``FIELD_SEP name NAME_SEP value``: a string atom inside the joined record."""
    return f"{_escape(FIELD_SEP + fld + NAME_SEP)}{string_pattern(v, fold, joined=True)}"


def keyword_pattern(v: StringValue, fold: str = "unicode", within: str = "") -> str:
    """A keyword (field-less) atom inside the joined record: in the value of any field (of
    the ``within`` scope)."""
    return (f"{_escape(FIELD_SEP + within)}[^{_escape(FIELD_SEP + NAME_SEP)}]*"
            f"{_escape(NAME_SEP)}{string_pattern(v, fold, joined=True)}")


def _has_anchor(pattern: str) -> bool | None:
    """Whether a regex uses anchors, word boundaries, look-around or counted repeats
    beyond 3 (None: not sure, e.g. RE2-only syntax Python's parser does not read)."""
    import re._constants as C
    import re._parser as P

    try:
        tree = P.parse(pattern)
    except Exception:   # any parse failure: no prefilter, the regex is checked directly
        return None

    def walk(items: Any) -> bool:
        for op, av in items:
            if op == C.AT:
                return True
            if op == C.BRANCH and any(walk(b) for b in av[1]):
                return True
            if op == C.SUBPATTERN and walk(av[-1]):
                return True
            if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
                lo, hi, sub = av
                # counted repeats multiply the automaton's states ('(.){200,}'): in the
                # one per-event set they would cost every event more than the regex saves
                if lo > 3 or (hi != C.MAXREPEAT and hi > 3) or walk(sub):
                    return True
            if op in (C.ASSERT, C.ASSERT_NOT, C.ATOMIC_GROUP, C.GROUPREF_EXISTS):
                return True
        return False
    return walk(tree)


MAX_LITERALS: Final = 32


def required_literals(pattern: str) -> tuple[set[str], bool] | None:
    """Strings of which every match of the regex contains one (``-(W|R)`` -> {-W, -R}), the
    longest such set found in the top-level sequence, and whether the regex ignores case
    somewhere (an inline ``(?i)``); None when there is none."""
    import re._constants as C
    import re._parser as P

    try:
        tree = P.parse(pattern)
    except Exception:   # RE2-only syntax: no prefilter
        return None

    def whole(items: Any) -> set[str] | None:
        """The strings a sequence can only be, if it is made of literals only."""
        out = {""}
        for op, av in items:
            alts = piece(op, av)
            if alts is None:
                return None
            out = {a + b for a in out for b in alts}
            if len(out) > MAX_LITERALS:
                return None
        return out

    def piece(op: Any, av: Any) -> set[str] | None:
        if op == C.LITERAL:
            return {chr(av)}
        if op == C.SUBPATTERN:
            return whole(av[-1])
        if op == C.BRANCH:
            out: set[str] = set()
            for b in av[1]:
                w = whole(b)
                if w is None:
                    return None
                out |= w
            return out if len(out) <= MAX_LITERALS else None
        if op == C.IN and all(o == C.LITERAL for o, _ in av) and len(av) <= 4:
            return {chr(a) for _, a in av}
        return None

    nocase = bool(tree.state.flags & C.SRE_FLAG_IGNORECASE) or ("(?" in pattern and any(
        "i" in m for m in re.findall(r"\(\?([a-zA-Z-]+)[:)]", pattern)))
    best: set[str] | None = None

    def offer(cand: set[str]) -> None:
        nonlocal best
        if cand and "" not in cand and (best is None or min(map(len, cand)) >
                                        min(map(len, best))):
            best = cand

    run: set[str] = {""}
    for op, av in tree:
        alts = piece(op, av)
        if alts is not None and len({a + b for a in run for b in alts}) <= MAX_LITERALS:
            run = {a + b for a in run for b in alts}
            continue
        offer(run)
        run = {""}
        if op in (C.MAX_REPEAT, C.MIN_REPEAT) and av[0] >= 1:
            sub_ = whole(av[2])
            if sub_ is not None:
                offer(sub_)
    offer(run)
    return None if best is None else (best, nocase)


def literal_prefilters(fld: str, v: RegexValue) -> list[tuple[str, int]] | None:
    """Joined-record patterns for the required literals of a regex (case-insensitive with
    ``i``): the regex can only match a value holding one of them."""
    found = required_literals(v.pattern)
    if found is None:
        return None
    lits, nocase = found
    flags = "is" if "i" in v.flags or nocase else "s"
    return [(f"{_escape(FIELD_SEP + fld + NAME_SEP)}(?{flags}:[^{_escape(FIELD_SEP)}]*"
             f"{_escape(lit)})", len(lit)) for lit in sorted(lits)]


def regex_prefilter(fld: str, v: RegexValue) -> tuple[str, int] | None:
    """A pattern for the joined record that matches whenever the regex matches the field's
    value (and sometimes when it does not: its ``.`` may run into the next field), so the
    regex can trigger its rules from the one per-event set and be checked for real only
    then. A regex anchored at its start (``^``) and/or end (``$``) and nowhere else is
    anchored to the value's ends in the joined record (NAME_SEP, FIELD_SEP); None for
    regexes with other anchors, boundaries or multi-line flags, which mean something else
    there. With the pattern, how many ends (0-2) it is anchored at."""
    head, body, tail = _anchored(v)
    if body is None:
        return None
    flags = f"?{v.flags}:" if v.flags else "?:"
    lead = "" if head else f"[^{_escape(FIELD_SEP)}]*?"
    return (f"{_escape(FIELD_SEP + fld + NAME_SEP)}{lead}({flags}{body})"
            f"{_escape(FIELD_SEP) if tail else ''}", head + tail)


def _anchored(v: RegexValue) -> tuple[bool, str | None, bool]:
    """(anchored at the start, the regex without its end anchors or None, at the end)."""
    if _has_anchor(v.pattern) is False:
        return False, v.pattern, False
    if "m" in v.flags:
        return False, None, False
    import re._constants as C
    import re._parser as P

    try:
        tree = list(P.parse(v.pattern))
    except Exception:   # RE2-only syntax: no prefilter
        return False, None, False
    head = bool(tree) and tree[0] == (C.AT, C.AT_BEGINNING) and v.pattern.startswith("^")
    tail = bool(tree) and tree[-1] == (C.AT, C.AT_END) and v.pattern.endswith("$") \
        and (len(v.pattern) - len(v.pattern.rstrip("$\\"))) == 1
    body = v.pattern[1 if head else 0:len(v.pattern) - (1 if tail else 0)]
    if not (head or tail) or not body or _has_anchor(body) is not False:
        return False, None, False
    return head, body, tail


def regex_pattern(v: RegexValue) -> str:
    return f"(?{v.flags}){v.pattern}" if v.flags else v.pattern
