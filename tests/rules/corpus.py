"""The event corpus of the rules' differential test and benchmark.

Two parts: recorded Vigil events (corpus/exec_events.jsonl: `vigil run -o json --no-fim`
while real commands ran, host fields dropped; corpus/auditd_events.jsonl: execs and file
changes, failed attempts too, of commands the auditd rules look for and of look-alikes, made by
corpus/record_auditd.sh), turned into flat records by the field map (the auditd records too); and
edge cases generated from the rules themselves: for every value of every detection item an
event built to satisfy it (the other items of its map too), events satisfying all selections
at once and with each filter, and near misses of each of those (case changed, a character
dropped or added, the field missing or empty, Unicode look-alikes, SQL LIKE wildcards and
backslashes in the data, wildcards filled with nothing or with text). Which of them match is
decided by the two engines, never here.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re._constants as C  # the parser of the re module, for samples of rules' regexes
import re._parser as sre_parse
from collections.abc import Iterator
from pathlib import Path

from vigil.rules.fieldmap import ecs_to_records
from vigil.rules.matcher import logsource_key
from vigil.rules.model import (
    STAR,
    CidrValue,
    CompareValue,
    DetectionItem,
    ExistsValue,
    FieldRefValue,
    NullValue,
    RegexValue,
    Rule,
    StringValue,
    Value,
    Wildcard,
)

HERE = Path(__file__).parent
RECORDED = HERE / "corpus" / "exec_events.jsonl"
RECORDED_AUDITD = HERE / "corpus" / "auditd_events.jsonl"
KEYWORDS = "keywords"   # the field generated records carry a rule's keywords in
Record = dict[str, str]

_LOOKALIKE = str.maketrans({"a": "а", "e": "е", "o": "о", "c": "с", "p": "р", "x": "х",
                            "i": "і"})


def recorded(files: tuple[Path, ...] = (RECORDED,)) -> list[tuple[str, Record]]:
    out = []
    for f in files:
        for line in f.read_text("utf-8").splitlines():
            out.extend(ecs_to_records(json.loads(line)))
    return out


def _fill(v: StringValue, star: str, q: str) -> str:
    return "".join(p if isinstance(p, str) else (star if p.kind == STAR else q)
                   for p in v.parts)


def _regex_sample(pattern: str, rnd: random.Random) -> str | None:
    """A string the regex matches, for the simple constructs rules use (None if unsure)."""
    try:
        tree = sre_parse.parse(pattern)
    except Exception:
        return None

    def gen(items: sre_parse.SubPattern | list) -> str:   # type: ignore[type-arg]
        out = []
        for op, av in items:
            if op == C.LITERAL:
                out.append(chr(av))
            elif op == C.ANY:
                out.append("x")
            elif op == C.IN:
                out.append(_in(av))
            elif op == C.BRANCH:
                out.append(gen(rnd.choice(av[1])))
            elif op == C.SUBPATTERN:
                out.append(gen(av[-1]))
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
                lo, hi, sub = av
                n = lo if hi == C.MAXREPEAT else rnd.randint(lo, min(hi, lo + 2))
                out.append("".join(gen(sub) for _ in range(n)))
            elif op == C.AT:
                continue
            else:
                raise ValueError(op)
        return "".join(out)

    def _in(av: list) -> str:   # type: ignore[type-arg]
        if av and av[0][0] == C.NEGATE:
            banned = {chr(a) for op, a in av[1:] if op == C.LITERAL}
            return next(c for c in "qzQZ7" if c not in banned)
        op, a = av[0]
        if op == C.LITERAL:
            return chr(a)
        if op == C.RANGE:
            return chr(a[0])
        if op == C.CATEGORY:
            return {C.CATEGORY_SPACE: " ", C.CATEGORY_DIGIT: "5", C.CATEGORY_WORD: "w"}.get(
                a, " ")
        return "x"

    try:
        return gen(tree)
    except (ValueError, StopIteration):
        return None


def _value_sample(v: Value, rnd: random.Random) -> tuple[str, str] | None:
    """(kind, text) satisfying one value: kind exact/start/end/contains/any."""
    if isinstance(v, StringValue):
        parts = v.parts
        lead = bool(parts) and parts[0] == Wildcard(STAR)
        trail = bool(parts) and parts[-1] == Wildcard(STAR)
        inner = StringValue(parts[1 if lead else 0:len(parts) - (1 if trail and len(parts) > 1
                                                               else 0)], v.cased)
        text = _fill(inner, "", "a")
        kind = "contains" if lead and trail else "end" if lead else "start" if trail else "exact"
        return kind, text
    if isinstance(v, RegexValue):
        s = _regex_sample(v.pattern, rnd)
        return None if s is None else ("contains", s)
    if isinstance(v, CidrValue):
        net = v.network
        host = net.network_address + (1 if net.num_addresses > 1 else 0)
        return "exact", str(ipaddress.ip_address(host))
    if isinstance(v, CompareValue):
        n = v.number
        return "exact", str({"lt": n - 1, "lte": n, "gt": n + 1, "gte": n}[v.op])
    return None


def _compose(reqs: list[tuple[str, str]]) -> str:
    exact = [t for k, t in reqs if k == "exact"]
    if exact:
        return exact[-1]
    start = [t for k, t in reqs if k == "start"]
    end = [t for k, t in reqs if k == "end"]
    mids = [t for k, t in reqs if k == "contains"]
    body = " ".join(mids)
    return (start[-1] if start else "") + (f" {body} " if body else "") + (end[-1] if end else "")


def _satisfy(items: tuple[DetectionItem, ...], choice: dict[int, int], rnd: random.Random
             ) -> tuple[Record, set[str]]:
    """A record satisfying a map (value ``choice[i]`` of item i; every value for ``|all``),
    and the fields that must stay absent."""
    reqs: dict[str, list[tuple[str, str]]] = {}
    absent: set[str] = set()
    refs: list[tuple[str, FieldRefValue]] = []
    for i, it in enumerate(items):
        chosen = it.values if it.all else (it.values[choice.get(i, 0) % len(it.values)],)
        if it.field is None:   # keywords: anywhere in a value, here in a field of their own
            for v in chosen:
                s = _value_sample(v, rnd)
                if s is not None:
                    reqs.setdefault(KEYWORDS, []).append(("contains", s[1]))
            continue
        for v in chosen:
            if isinstance(v, NullValue) or (isinstance(v, ExistsValue) and not v.exists):
                absent.add(it.field)
            elif isinstance(v, ExistsValue):
                reqs.setdefault(it.field, []).append(("contains", "present"))
            elif isinstance(v, FieldRefValue):
                refs.append((it.field, v))
            else:
                s = _value_sample(v, rnd)
                if s is not None:
                    reqs.setdefault(it.field, []).append(s)
    rec = {f: _compose(r) for f, r in reqs.items()}
    for f, ref in refs:
        rec[f] = rec.setdefault(ref.other, "shared-value")
    for f in absent:
        rec.pop(f, None)
    return rec, absent


def _mutations(rec: Record) -> Iterator[Record]:
    for f, s in rec.items():
        def w(x: str | None, f: str = f) -> Record:
            out = dict(rec)
            if x is None:
                del out[f]
            else:
                out[f] = x
            return out
        yield w(s.upper())
        yield w(s.swapcase())
        yield w(s.lower())
        if s:
            yield w(s[:-1])
            yield w(s[1:])
            m = len(s) // 2
            yield w(s[:m] + "%" + s[m:])
            yield w(s[:m] + "_" + s[m + 1:])
            yield w(s[:m] + "*" + s[m + 1:])
            yield w(s[:m] + "?" + s[m:])
            yield w(s.translate(_LOOKALIKE))
            yield w(s.replace("*", "Q").replace("?", "Q"))
            yield w(s.replace("/", "\\"))
        yield w("x" + s + "x")
        yield w(s + "\n")
        yield w(s + "é")
        yield w("É" + s.upper() + "Ü")
        yield w("")
        yield w(None)


def generated(rule: Rule, seed: int = 0) -> list[Record]:
    """Edge-case records for one rule (its category is the rule's)."""
    rnd = random.Random(f"{rule.id}:{seed}")
    bases: list[Record] = []
    per_search: dict[str, Record] = {}
    for name, s in rule.searches.items():
        for ai, alt in enumerate(s.alternatives):
            for i, it in enumerate(alt):
                for k in range(1 if it.all else len(it.values)):
                    rec, _ = _satisfy(alt, {i: k}, rnd)
                    bases.append(rec)
                    if ai == 0 and k == 0 and i == 0:
                        per_search[name] = rec
    wanted = {n: r for n, r in per_search.items() if not n.startswith("filter")}
    merged: Record = {}
    for r in wanted.values():
        for f, v in r.items():
            merged[f] = f"{merged[f]} {v}" if f in merged and merged[f] != v else v
    bases.append(merged)
    for n, r in per_search.items():
        if n.startswith("filter"):
            bases.append({**merged, **r})
    # wildcards filled with text rather than nothing, and '?' left out
    for s in rule.searches.values():
        for alt in s.alternatives:
            for it in alt:
                if it.field is None:
                    continue
                for v in it.values:
                    if isinstance(v, StringValue) and any(isinstance(p, Wildcard)
                                                          for p in v.parts):
                        for star, q in (("ABC/é\n", "é"), ("", ""), ("*", "?")):
                            bases.append({**merged, it.field: _fill(v, star, q)})
    out: list[Record] = []
    for b in bases:
        out.append(b)
        out.extend(_mutations(b))
    return out


def corpus(rules: list[Rule]) -> list[tuple[str, Record]]:
    """(logsource key, record) for every rule's key: generated ones, then recorded ones,
    duplicates removed, in a stable order."""
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    out: list[tuple[str, Record]] = []

    def add(cat: str, rec: Record) -> None:
        key = (cat, tuple(sorted(rec.items())))
        if key not in seen:
            seen.add(key)
            out.append((cat, rec))

    for r in rules:
        cat = logsource_key(r.logsource) or ""
        for rec in generated(r):
            add(cat, rec)
    for cat, rec in recorded((RECORDED, RECORDED_AUDITD)):
        add(cat, rec)
    return out
