"""Matching flat event records against compiled rules: the per-event hot path.

Owns the runtime index built from vigil.rules.compiler's output: per field one RE2 set (split
in parts when one automaton would exceed RE2's memory budget), the atom -> rules table, and
``Engine``: rules grouped by logsource key (the category, or for a rule on one service's raw
records such as ``service: auditd`` the service), ``match(key, record)`` -> the rules that
fire. A record is a flat mapping of Sysmon-style field names to text (vigil.rules.fieldmap
makes them from Vigil's events); the engine itself knows no field map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import re2

from vigil.rules.compiler import KEYWORD, CompiledRule, CompiledSet, compile_category
from vigil.rules.ecsview import engine_key
from vigil.rules.errors import RuleError
from vigil.rules.model import LogSource, Rule
from vigil.rules.patterns import (
    FIELD_SEP,
    NAME_SEP,
    joined_pattern,
    keyword_pattern,
    re2_options,
    scope,
    string_pattern,
)
from vigil.rules.shellview import SHELL_KEY, is_shell_logsource, is_shell_rule

Record = Mapping[str, str]


SENTINEL: Final = "(?:)"   # matches every text: its absence from a result is a failed search


def _build_sets(patterns: list[tuple[str, int]], sentinel: int | None = None
                ) -> list[tuple[re2.Set, tuple[int, ...]]]:
    """One RE2 set over ``patterns``, or several when one does not compile (memory). With
    ``sentinel`` (an atom number), each set also holds SENTINEL, last, as that atom: RE2's
    set search returns nothing when its DFA runs out of memory, which must not read as "no
    rule matches"."""
    s = re2.Set.SearchSet(re2_options())
    for pat, _ in patterns:
        s.Add(pat)
    if sentinel is not None:
        s.Add(SENTINEL)
    try:
        ok = s.Compile()
    except re2.error:
        ok = False
    if ok is False and len(patterns) > 1:
        half = len(patterns) // 2
        return _build_sets(patterns[:half], sentinel) + _build_sets(patterns[half:], sentinel)
    ids = tuple(a for _, a in patterns)
    return [(s, (*ids, sentinel) if sentinel is not None else ids)]


def _raw(s: re2.Set) -> Callable[[bytes], list[int] | None]:
    """The C++ set's Match on UTF-8 bytes: the hot path skips the Python wrapper (which
    re-encodes and re-wraps on every call); the wrapper's own Match when the binding hides it."""
    inner = getattr(s, "_set", None)
    fn = getattr(inner, "Match", None)
    if fn is None:
        return lambda b: s.Match(b)
    return fn


def _search(s: re2.Set, value: str) -> list[int]:
    try:
        hits = s.Match(value)
    except UnicodeEncodeError:   # lone surrogates (from JSON escapes): match what is valid
        hits = s.Match(value.encode("utf-8", "replace"))
    return hits or []


Sets = list[tuple[re2.Set, tuple[int, ...]]]
RawSets = list[tuple[Callable[[bytes], list[int] | None], tuple[int, ...]]]
_GAVE_UP: Final[set[int]] = set()   # a search RE2 gave up on (memory): by identity


def _search_joined(parts: list[str], sets: RawSets, identity: tuple[int, ...] | None
                   ) -> set[int] | None:
    """The atoms of ``parts`` (``FS name NS value`` each) joined: one RE2 search per set;
    None when a value holds FS (it cannot be searched joined), ``_GAVE_UP`` when RE2 did
    (its DFA ran out of memory: the sentinel pattern, which matches every text, is missing
    from the result). ``identity``: the ids of a set whose index is the atom number."""
    text = "".join(parts) + FIELD_SEP
    if text.count(FIELD_SEP) != len(parts) + 1:
        return None
    return _search_text(text, sets, identity)


def _search_text(text: str, sets: RawSets, identity: tuple[int, ...] | None) -> set[int]:
    """The atoms of a joined text already checked (``_search_joined``), or ``_GAVE_UP``."""
    # lone surrogates (only from JSON escapes, never in Vigil's own events) become '?'
    data = text.encode("utf-8", "replace")
    t: set[int] = set()
    for match, ids in sets:
        hits = match(data)
        if not hits or len(ids) - 1 not in hits:
            return _GAVE_UP
        t.update(hits if ids is identity else map(ids.__getitem__, hits))
    return t


@dataclass
class CategoryMatcher:
    """Every rule of one logsource category, indexed.

    The hot path joins the record's indexed fields into one string (``FS name NS value`` per
    field, FS/NS two ASCII control characters) and runs ONE RE2 set over it: every literal,
    prefix, suffix, substring and wildcard atom of every rule, each anchored to its field by
    the name and kept inside it (no wildcard crosses FS). Regex atoms are evaluated only for
    candidate rules (see vigil.rules.compiler); keywords by one set run over each value. A
    record whose text contains FS is matched field by field instead."""

    category: str
    rules: list[CompiledRule]
    names: tuple[str, ...]               # fields in the joined set
    prefixes: tuple[tuple[str, str], ...]   # (name, FS name NS)
    joined: Sets
    patterns: list[tuple[str, int]]      # the joined set's (pattern, atom), for Screen
    joined_raw: RawSets
    keywords: Sets
    per_field: list[tuple[str, Sets]]    # the same string atoms, one set per field
    prefiltered: frozenset[int]          # regex prefilter atoms (all taken as hits there)
    triggered: list[tuple[int, ...]]     # atom -> rule indices
    always: tuple[int, ...]
    failed_searches: int = 0             # joined searches RE2 gave up on (matched per field)
    identity: tuple[int, ...] | None = None   # the joined set's ids when index == atom

    triggers: frozenset[int] = frozenset()   # atoms that trigger some rule
    pre: str = ""   # FS + the key's scope: how every field's part begins

    def __post_init__(self) -> None:
        self.pre = FIELD_SEP + scope(self.category)
        self.triggers = frozenset(a for a, rs in enumerate(self.triggered) if rs)
        for _, ids in self.joined_raw:
            if ids == tuple(range(len(ids))):
                self.identity = ids

    @classmethod
    def build(cls, cs: CompiledSet) -> CategoryMatcher:
        strings = {f: v for f, v in sorted(cs.strings.items()) if f != KEYWORD}
        within = scope(cs.category)
        joined = [(joined_pattern(within + f, v, cs.fold), a)
                  for f, vs in strings.items() for v, a in vs]
        joined += [(p, a) for _, p, a in cs.prefilters]
        joined += [(keyword_pattern(v, cs.fold, within), a)
                   for v, a in cs.strings.get(KEYWORD, [])]
        joined.sort(key=lambda pa: pa[1])   # in atom order: usually set index == atom number
        prefixed = sorted(set(strings) | {f for f, _, _ in cs.prefilters})
        per_field = [(f, _build_sets([(string_pattern(v, cs.fold), a) for v, a in vs]))
                     for f, vs in strings.items()]
        kw = [(string_pattern(v, cs.fold), a) for v, a in cs.strings.get(KEYWORD, [])]
        by_atom: list[list[int]] = [[] for _ in range(cs.atoms + 1)]   # + the sentinel
        always = []
        for i, cr in enumerate(cs.rules):
            if cr.triggers is None:
                always.append(i)
            else:
                for a in cr.triggers:
                    by_atom[a].append(i)
        jsets = _build_sets(joined, sentinel=cs.atoms) if joined else []
        return cls(cs.category, cs.rules, tuple(prefixed),
                   tuple((f, FIELD_SEP + within + f + NAME_SEP) for f in prefixed),
                   jsets, joined, [(_raw(s), ids) for s, ids in jsets],
                   _build_sets(kw) if kw else [], per_field,
                   frozenset(a for _, _, a in cs.prefilters),
                   [tuple(x) for x in by_atom], tuple(always))

    def joined_parts(self, rec: Record) -> list[str]:
        """The record's ``FS name NS value`` parts the set reads: the indexed fields, or
        every field when a keyword (field-less) atom may hit any value."""
        if self.keywords:
            pre = self.pre
            return [pre + n + NAME_SEP + v for n, v in rec.items()]
        get = rec.get
        return [p + v for n, p in self.prefixes if (v := get(n)) is not None]

    def _joined(self, parts: list[str]) -> set[int] | None:
        """The atoms of the joined ``parts``, or None when they cannot be searched joined."""
        t = _search_joined(parts, self.joined_raw, self.identity)
        if t is _GAVE_UP:
            self.failed_searches += 1
            return None
        return t

    def atoms(self, rec: Record) -> set[int]:
        t = self._joined(self.joined_parts(rec))
        if t is not None:
            return t
        t = set()
        _per_field(t, self.per_field, rec)
        t.update(self.prefiltered)   # a superset: the rules check their regexes
        for v in rec.values() if self.keywords else ():
            for s, ids in self.keywords:
                t.update(map(ids.__getitem__, _search(s, v)))
        return t

    def match(self, rec: Record) -> list[Rule]:
        return self.match_atoms(self.atoms(rec), rec)

    def match_atoms(self, t: set[int], rec: Record) -> list[Rule]:
        """``match`` with the record's atoms already searched (``atoms``, or the Screen's
        of the record alone: ``Screen.key_atoms``)."""
        triggered = self.triggered
        cands = set(self.always)
        for a in t & self.triggers:   # most atoms that hit trigger no rule (not chosen)
            cands.update(triggered[a])
        if not cands:
            return []
        rules = self.rules
        return [rules[i].rule for i in sorted(cands) if rules[i].fn(t, rec)]


def _per_field(t: set[int], sets: list[tuple[str, Sets]], rec: Record) -> None:
    for name, ss in sets:
        v = rec.get(name)
        if v is None:
            continue
        for s, ids in ss:
            for h in _search(s, v):
                t.add(ids[h])


def logsource_key(ls: LogSource) -> str | None:
    """Which records a rule is matched against: Vigil's own logsource (``vigil:file``,
    ``vigil:process``, vigil.rules.ecsview), its logsource category, or for a rule with no
    category its service (``auditd``: raw records of that service); for a Linux rule with
    neither, the typed shell commands (vigil.rules.shellview; only its keyword rules are
    compiled there); None when none."""
    own = engine_key(ls.product, ls.category)
    if own is not None:
        return own
    if is_shell_logsource(ls):
        return SHELL_KEY
    return ls.category if ls.category is not None else ls.service


class Screen:
    """Which keys of an event may fire a rule, from ONE search over all its records.

    Every key's joined patterns carry the key in their field names (patterns.scope), so one
    RE2 set over the union of all keys' atoms (renumbered: key offset + atom) searches the
    records of every key of an event at once. A key passes when one of its trigger atoms
    hits (or it has rules without a trigger set); only the records of keys that pass are
    matched (``CategoryMatcher.match``). Sound for the reason ``CategoryMatcher.screen`` is.
    """

    def __init__(self, matchers: Mapping[str | None, CategoryMatcher]) -> None:
        patterns: list[tuple[str, int]] = []
        self.triggers: dict[str, frozenset[int]] = {}
        self.open: frozenset[str] = frozenset(
            k for k, m in matchers.items() if k is not None and m.always)
        self.ranges: dict[str, tuple[int, int]] = {}   # per key, its atoms' renumbering
        base = 0
        for key, m in matchers.items():
            if key is None:
                continue
            patterns += [(p, base + a) for p, a in m.patterns]
            self.triggers[key] = frozenset(base + a for a in m.triggers)
            self.ranges[key] = (base, base + len(m.triggered))
            base += len(m.triggered)
        # every key's atoms hit its own parts only (no two keys share a scope code): the
        # atoms of one record of a key are then the Screen's atoms in the key's range
        self.scoped = len({scope(k) for k in self.ranges}) == len(self.ranges)
        patterns.sort(key=lambda pa: pa[1])
        sets = _build_sets(patterns, sentinel=base) if patterns else []
        self._raw = [(_raw(s), ids) for s, ids in sets]
        self.failed_searches = 0

    def atoms(self, parts: list[str]) -> set[int] | None:
        """The (renumbered) atoms of joined parts of any keys; None: not searchable."""
        t = _search_joined(parts, self._raw, None)
        if t is _GAVE_UP:
            self.failed_searches += 1
            return None
        return t

    def atoms_text(self, text: str) -> set[int] | None:
        """The atoms of joined parts already joined, FIELD_SEP last, none of whose values
        holds FIELD_SEP (the caller checked: vigil.rules.batchscreen); None: RE2 gave up."""
        t = _search_text(text, self._raw, None)
        if t is _GAVE_UP:
            self.failed_searches += 1
            return None
        return t

    def passing(self, atoms: set[int]) -> frozenset[str]:
        """The keys that pass with ``atoms``."""
        return self.open | frozenset(k for k, t in self.triggers.items()
                                     if not t.isdisjoint(atoms))

    def passing_of(self, atoms: set[int], keys: tuple[str, ...]) -> tuple[str, ...]:
        """The keys of ``keys`` that pass with ``atoms``, in their order."""
        open_, triggers = self.open, self.triggers
        return tuple([k for k in keys if k in open_ or not triggers[k].isdisjoint(atoms)])

    def key_atoms(self, key: str, atoms: set[int]) -> set[int]:
        """The atoms of ``key`` (its matcher's numbers) among the Screen's ``atoms`` of a
        text holding one record of the key: those its matcher finds in that record, when the
        keys are ``scoped``."""
        lo, hi = self.ranges[key]
        return {a - lo for a in atoms if lo <= a < hi}

    def passes(self, key: str, atoms: set[int] | None) -> bool:
        return atoms is None or key in self.open or not self.triggers[key].isdisjoint(atoms)


@dataclass
class Engine:
    """Rules compiled once, by logsource key (``logsource_key``: rules with neither a
    category nor a service are kept under ``None`` and never match), and the ``Screen``
    over all of them."""

    matchers: dict[str | None, CategoryMatcher] = field(default_factory=dict)
    errors: list[RuleError] = field(default_factory=list)
    screen: Screen | None = None

    @classmethod
    def build(cls, rules: Iterable[Rule], fold: str = "unicode",
              few_valued: Mapping[str, Mapping[str, int]] | None = None) -> Engine:
        """``few_valued``: per key, the fields that take a handful of values (a record
        type, an action) and how many: their atoms hit many events, so they trigger rules
        only when nothing more selective can."""
        by_cat: dict[str | None, list[Rule]] = {}
        for r in rules:
            key = logsource_key(r.logsource)
            if key == SHELL_KEY and not is_shell_rule(r):
                key = None   # field conditions on log lines Vigil does not have
            by_cat.setdefault(key, []).append(r)
        eng = cls()
        for cat, rs in by_cat.items():
            few = (few_valued or {}).get(cat or "")
            cs, errs = compile_category(cat or "", rs, fold, few)
            eng.errors.extend(errs)
            eng.matchers[cat] = CategoryMatcher.build(cs)
        eng.screen = Screen(eng.matchers)
        return eng

    def match(self, category: str, rec: Record) -> list[Rule]:
        m = self.matchers.get(category)
        return m.match(rec) if m is not None else []

    def fields(self, key: str) -> set[str] | None:
        """Every field the rules of ``key`` read; None when one has a keyword (field-less)
        search, which reads any value."""
        m = self.matchers.get(key)
        out: set[str] = set()
        for cr in m.rules if m is not None else ():
            for s in cr.rule.searches.values():
                if any(item.field is None for alt in s.alternatives for item in alt):
                    return None
            out |= cr.rule.fields()
        return out

    def rule_count(self) -> int:
        return sum(len(m.rules) for m in self.matchers.values())
