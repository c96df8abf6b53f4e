"""Compiling loaded rules into one indexed matcher per logsource category.

Owns the compile step (done once per rule set): every distinct value test of every rule
becomes an *atom*. String atoms (literals, prefixes, suffixes, substrings, wildcards) of all
rules and fields go into the category's one RE2 set (built by vigil.rules.matcher from the
pattern text of vigil.rules.patterns); the other atoms (regexes, null, exists, cidr, lt/gt,
fieldref) stay small functions, evaluated only for candidate rules, a regex with a prefilter
atom in the set. Each rule's condition becomes one Python function over the set of atoms
that matched (generated code holds only atom numbers and constant names, never rule text),
and a *trigger set*: atoms of which at least one must match for the rule to be true, chosen
to be rare (long literals over two-letter flags). Only rules triggered by an event's atoms
(and those without a trigger set, such as ``not filter`` alone) are evaluated.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import re2

from vigil.rules.errors import RuleError
from vigil.rules.model import (
    STAR,
    And,
    CidrValue,
    CompareValue,
    Cond,
    DetectionItem,
    ExistsValue,
    FieldRefValue,
    Not,
    NullValue,
    Ref,
    RegexValue,
    Rule,
    Search,
    StringValue,
    Value,
    Wildcard,
)
from vigil.rules.patterns import (
    literal_prefilters,
    re2_options,
    regex_pattern,
    regex_prefilter,
    scope,
    string_pattern,
)

Record = Mapping[str, str]
Direct = Callable[[Record], bool]
KEYWORD: Final = ""    # the pseudo-field of keyword (field-less) atoms: any value of the event


def _direct(item_field: str, v: Value) -> Direct:
    """The per-event test of a value that is not a string or regex pattern."""
    f = item_field
    if isinstance(v, NullValue):
        return lambda r: f not in r
    if isinstance(v, RegexValue):
        search = re2.compile(regex_pattern(v), re2_options()).search

        def regex(r: Record) -> bool:
            x = r.get(f)
            if x is None:
                return False
            try:
                return search(x) is not None
            except UnicodeEncodeError:
                return search(x.encode("utf-8", "replace")) is not None
        return regex
    if isinstance(v, ExistsValue):
        want = v.exists
        return lambda r: (f in r) is want
    if isinstance(v, CidrValue):
        net = v.network

        def in_net(r: Record) -> bool:
            x = r.get(f)
            if x is None:
                return False
            try:
                return ipaddress.ip_address(x.strip()) in net
            except ValueError:
                return False
        return in_net
    if isinstance(v, CompareValue):
        n, op = v.number, v.op

        def compare(r: Record) -> bool:
            x = r.get(f)
            if x is None:
                return False
            try:
                num = float(x) if not x.strip().lstrip("+-").isdigit() else int(x)
            except ValueError:
                return False
            if op == "lt":
                return num < n
            if op == "lte":
                return num <= n
            if op == "gt":
                return num > n
            return num >= n
        return compare
    if isinstance(v, FieldRefValue):
        other, mode, cased = v.other, v.mode, v.cased

        def ref(r: Record) -> bool:
            a, b = r.get(f), r.get(other)
            if a is None or b is None:
                return False
            if not cased:
                a, b = a.casefold(), b.casefold()
            if mode == "startswith":
                return a.startswith(b)
            if mode == "endswith":
                return a.endswith(b)
            if mode == "contains":
                return b in a
            return a == b
        return ref
    raise TypeError(v)


@dataclass
class CompiledRule:
    rule: Rule
    fn: Callable[[set[int], Record], bool]
    triggers: frozenset[int] | None   # None: evaluated for every event


@dataclass
class CompiledSet:
    """What the matcher needs for one category: per-field pattern lists (atom of each),
    direct atoms, compiled rules, the rules each atom triggers and the always-evaluated."""

    category: str
    strings: dict[str, list[tuple[StringValue, int]]] = field(default_factory=dict)
    prefilters: list[tuple[str, str, int]] = field(default_factory=list)  # field, pattern, atom
    fold: str = "unicode"
    rules: list[CompiledRule] = field(default_factory=list)
    atoms: int = 0
    weights: dict[int, float] = field(default_factory=dict)   # bits of selectivity


def _string_bits(v: StringValue) -> float:
    """The selectivity (bits) of a string test: its literal characters, and four more for
    each end it is anchored at (a whole value ``vi`` is far rarer than ``vi`` inside one)."""
    parts = v.parts
    ends = (not parts or parts[0] != Wildcard(STAR)) + (not parts or parts[-1] != Wildcard(STAR))
    return sum(len(p) for p in parts if isinstance(p, str)) + 4 * ends


def _few_bits(n: int) -> float:
    """The selectivity (bits) of one value of a field with ``n`` possible values: half of
    log2(n), as some values (PATH records, successful outcomes) are most of them."""
    return math.log2(n) / 2


class _Compiler:
    def __init__(self, category: str, fold: str, few_valued: Mapping[str, int] | None = None
                 ) -> None:
        self.out = CompiledSet(category, fold=fold)
        self.fold = fold
        self.few_valued = few_valued or {}
        self.scope = scope(category)   # of the joined record's field names
        self.by_pattern: dict[tuple[str, str], int] = {}
        self.direct: list[Direct] = []
        self.direct_by_key: dict[tuple[str, Value], int] = {}
        self.ns: dict[str, Any] = {}

    def indexed(self, fld: str, key: str, v: StringValue | None, weight: float) -> int:
        a = self.by_pattern.get((fld, key))
        if a is None:
            a = self.by_pattern[(fld, key)] = self.out.atoms
            self.out.atoms += 1
            if v is not None:
                self.out.strings.setdefault(fld, []).append((v, a))
            else:
                self.out.prefilters.append((fld, key, a))
            self.out.weights[a] = weight
        return a

    def atom(self, fld: str, v: Value) -> tuple[str, int, int | frozenset[int] | None]:
        """('i', id, id) for an indexed string atom; ('d', n, trigger) for a direct one
        (evaluated only for candidate rules; regexes too, whose ``.``, ``^`` and ``$``
        cannot join the per-event set as they are: their trigger is a prefilter atom when
        they have one)."""
        if isinstance(v, StringValue):
            few = self.few_valued.get(fld)
            weight = _few_bits(few) if few else _string_bits(v)
            a = self.indexed(fld, string_pattern(v, self.fold), v, weight)
            return ("i", a, a)
        d = self.direct_by_key.get((fld, v))
        if d is None:
            d = self.direct_by_key[(fld, v)] = len(self.direct)
            self.direct.append(_direct(fld, v))
        trig: int | frozenset[int] | None = None
        if isinstance(v, RegexValue) and fld != KEYWORD:
            lits = literal_prefilters(self.scope + fld, v)
            if lits is not None:
                trig = frozenset(self.indexed(fld, p, None, w) for p, w in lits)
            else:
                pre = regex_prefilter(self.scope + fld, v)
                if pre is not None:
                    pattern, ends = pre
                    # each anchored end makes a regex about four bits more selective
                    few = self.few_valued.get(fld)
                    trig = self.indexed(fld, pattern, None,
                                        _few_bits(few) if few else 1 + 4 * ends)
        return ("d", d, trig)

    def const(self, atoms: frozenset[int]) -> str:
        name = f"K{len(self.ns)}"
        self.ns[name] = atoms
        return name

    def item(self, it: DetectionItem) -> tuple[str, frozenset[int] | None]:
        fld = KEYWORD if it.field is None else it.field
        values = it.values
        if it.field is None:   # keywords match anywhere in a value
            values = tuple(StringValue((Wildcard(STAR), *v.parts, Wildcard(STAR)), v.cased)
                           if isinstance(v, StringValue) else v for v in values)
        atoms = [self.atom(fld, v) for v in values]
        idx = frozenset(a for k, a, _ in atoms if k == "i")
        direct = [f"D[{a}](r)" for k, a, _ in atoms if k == "d"]
        trigs = [t for _, _, t in atoms]
        terms = []
        trig: frozenset[int] | None
        if it.all:
            if idx:
                terms.append(f"{self.const(idx)} <= t" if len(idx) > 1
                             else f"{next(iter(idx))} in t")
            terms.extend(direct)
            expr = " and ".join(terms)
            known: list[frozenset[int] | None] = [
                t if isinstance(t, frozenset) else frozenset((t,)) for t in trigs if t is not None]
            trig = self.best(known) if known else None
        else:
            if idx:
                terms.append(f"not t.isdisjoint({self.const(idx)})" if len(idx) > 1
                             else f"{next(iter(idx))} in t")
            terms.extend(direct)
            expr = " or ".join(terms)
            trig = None if None in trigs else frozenset().union(
                *(t if isinstance(t, frozenset) else (t,) for t in trigs if t is not None))
        if it.negate:
            return f"not ({expr})", None
        return f"({expr})", trig

    def cost(self, atoms: frozenset[int]) -> float:
        """How often a trigger set is expected to hit: a literal of n characters matches
        about 2^-n of values (a two-letter flag often, a long path rarely); a value of a
        field with n possible values (a record type, an action) far more than 1/n of
        them, as such values are seldom equally frequent (``_few_bits``)."""
        return sum(2.0 ** -min(self.out.weights[a], 40) for a in atoms)

    def best(self, trigs: list[frozenset[int] | None]) -> frozenset[int] | None:
        known = [t for t in trigs if t is not None]
        if not known:
            return None
        return min(known, key=self.cost)

    def search(self, s: Search) -> tuple[str, frozenset[int] | None]:
        alts = []
        trig: frozenset[int] | None = frozenset()
        for alt in s.alternatives:
            parts = [self.item(it) for it in alt]
            alts.append("(" + " and ".join(p for p, _ in parts) + ")")
            t = self.best([t for _, t in parts])
            trig = None if t is None or trig is None else trig | t
        return "(" + " or ".join(alts) + ")", trig

    def cond(self, c: Cond, searches: dict[str, tuple[str, frozenset[int] | None]]
             ) -> tuple[str, frozenset[int] | None]:
        if isinstance(c, Ref):
            return searches[c.name]
        if isinstance(c, Not):
            e, _ = self.cond(c.arg, searches)
            return f"(not {e})", None
        parts = [self.cond(a, searches) for a in c.args]
        if isinstance(c, And):
            return "(" + " and ".join(e for e, _ in parts) + ")", self.best([t for _, t in parts])
        trig: frozenset[int] | None = frozenset()
        for _, t in parts:
            trig = None if t is None or trig is None else trig | t
        return "(" + " or ".join(e for e, _ in parts) + ")", trig

    def rule(self, r: Rule) -> CompiledRule:
        searches = {name: self.search(s) for name, s in r.searches.items()}
        expr, trig = self.cond(r.condition, searches)
        ns = {**self.ns, "D": self.direct}
        try:
            code = compile(f"def _rule(t, r):\n    return {expr}\n", f"<rule {r.where}>", "exec")
            exec(code, ns)   # generated from atom numbers and names only (see docstring)
        except (SyntaxError, RecursionError, MemoryError, ValueError) as e:
            raise RuleError(f"too complex to compile ({type(e).__name__})", source=r.source,
                            line=r.line) from None
        return CompiledRule(r, ns["_rule"], trig)


def compile_category(category: str, rules: list[Rule], fold: str = "unicode",
                     few_valued: Mapping[str, int] | None = None
                     ) -> tuple[CompiledSet, list[RuleError]]:
    """Compile the rules of one category; a rule that cannot be compiled is returned as an
    error and left out, the others still compile. ``few_valued``: the category's fields
    that take a handful of values, with their number (see ``_Compiler.cost``)."""
    c = _Compiler(category, fold, few_valued)
    errors = []
    for r in rules:
        try:
            c.out.rules.append(c.rule(r))
        except RuleError as e:
            errors.append(e)
    return c.out, errors
