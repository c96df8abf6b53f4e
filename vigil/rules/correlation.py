"""Sigma correlation rules: what they say, what they may refer to, and running them.

Owns the ``Correlation`` model (type, the rules it refers to, group-by, timespan, condition,
aliases, generate); ``resolve``: each reference (``rules:``, by id or ``name``) to a loaded
rule or correlation, refusing unknown names, loops and chains through refused correlations;
and the runtime, ``CorrelationEngine``: base-rule matches in (``feed``), ``CorrelationMatch``es
out, state per correlation and group (the time arithmetic of one group is
vigil.rules.windows'). Reading a correlation document is vigil.rules.correlation_doc's (for
vigil.rules.loader).

Supported types: ``event_count``, ``value_count``, ``temporal``, ``temporal_ordered``. The
metric types of specification 2.1 (``value_sum``, ``value_avg``, ``value_percentile``) are
refused by name. Counts in a condition are limited to MAX_COUNT: a group keeps up to that
many timestamps or distinct values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Final, Literal, cast

from vigil.rules.errors import RuleError
from vigil.rules.lazyrecord import whole
from vigil.rules.model import Rule
from vigil.rules.windows import MAX_SAMPLES, Group, Hit, digest

CorrelationType = Literal["event_count", "value_count", "temporal", "temporal_ordered"]
Op = Literal["gt", "gte", "lt", "lte", "eq", "neq"]
TYPES: Final[tuple[CorrelationType, ...]] = ("event_count", "value_count", "temporal",
                                             "temporal_ordered")
OPS: Final[tuple[Op, ...]] = ("gt", "gte", "lt", "lte", "eq", "neq")
MAX_COUNT: Final = 1000
MAX_CHAIN: Final = 10   # correlations of correlations, levels


def holds(op: Op, count: int, n: int) -> bool:
    if op == "gt":
        return count > n
    if op == "gte":
        return count >= n
    if op == "lt":
        return count < n
    if op == "lte":
        return count <= n
    if op == "eq":
        return count == n
    return count != n


@dataclass(frozen=True)
class Correlation:
    """A loaded correlation. ``condition`` holds its criteria (ANDed); the count it tests is
    the number of events (event_count), of distinct values of ``field`` (value_count), or of
    distinct referenced rules that matched (temporal, temporal_ordered: by default all)."""

    title: str
    id: str | None
    name: str | None
    type: CorrelationType
    rules: tuple[str, ...]               # references: ids or names of rules or correlations
    group_by: tuple[str, ...]
    timespan_ns: int
    condition: tuple[tuple[Op, int], ...]
    source: str
    line: int
    field: tuple[str, ...] = ()          # value_count: the field(s) whose values are counted
    aliases: Mapping[str, Mapping[str, str]] = dc_field(default_factory=dict)  # alias->ref
    generate: bool = False
    timespan_text: str = ""
    level: str | None = None
    status: str | None = None
    description: str | None = None
    author: str | None = None
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    date: str | None = None
    modified: str | None = None
    rules_lines: tuple[int, ...] = ()    # the line of each entry of ``rules``
    group_by_line: int = 0
    field_line: int = 0
    warnings: tuple[tuple[int, str], ...] = dc_field(default=(), compare=False)  # (line, what)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def holds(self, count: int) -> bool:
        return all(holds(op, count, n) for op, n in self.condition)

    @property
    def monotone(self) -> bool:
        """Only ``gt``/``gte``: once true, more events keep it true. Such a correlation is
        decided on each event over a sliding window; any other when its window closes."""
        return all(op in ("gt", "gte") for op, _ in self.condition)

    @property
    def need(self) -> int:
        """The smallest count for which a monotone condition holds."""
        return max([n + 1 if op == "gt" else n for op, n in self.condition] + [1])

    @property
    def cap(self) -> int:
        """Counts are exact up to here, which decides the condition (largest number + 1)."""
        return max(n for _, n in self.condition) + 1

    def condition_text(self) -> str:
        return " and ".join(f"{op} {n}" for op, n in self.condition)

    def summary(self) -> dict[str, object]:
        """What ``vigil rules list --json`` prints for the correlation."""
        return {"kind": "correlation", "id": self.id, "name": self.name, "title": self.title,
                "type": self.type, "rules": list(self.rules), "group_by": list(self.group_by),
                "timespan": self.timespan_text, "condition": self.condition_text(),
                "field": list(self.field), "generate": self.generate, "level": self.level,
                "status": self.status, "tags": list(self.tags), "source": self.where,
                "warnings": [f"{self.source}:{line}: {w}" for line, w in self.warnings]}


# --- references ---------------------------------------------------------------------------

def targets(correlations: Iterable[Correlation], rules: Iterable[Rule]) -> dict[str, str]:
    """Reference (id or name) -> FILE:LINE of the rule or correlation it names (the first)."""
    out: dict[str, str] = {}
    docs: list[Rule | Correlation] = [*rules, *correlations]
    for x in docs:
        for key in (x.id, x.name):
            if key is not None:
                out.setdefault(key, x.where)
    return out


def resolve(correlations: list[Correlation], rules: Iterable[Rule]
            ) -> tuple[list[Correlation], list[RuleError]]:
    """The correlations whose references all resolve, and a FILE:LINE error for each other:
    a reference to nothing loaded, to itself, twice to one rule, to a refused correlation,
    a loop of correlations, or a chain more than MAX_CHAIN correlations deep."""
    names = targets(correlations, rules)
    by_where = {c.where: c for c in correlations}
    refused: dict[str, RuleError] = {}
    changed = True
    while changed:
        changed = False
        for c in correlations:
            if c.where in refused:
                continue
            e = _bad_reference(c, names, refused)
            if e is None:
                e = _loop(c, names, by_where, refused)
            if e is not None:
                refused[c.where] = e
                changed = True
    refused.update(_too_deep([c for c in correlations if c.where not in refused], names,
                             by_where))
    return ([c for c in correlations if c.where not in refused],
            [refused[c.where] for c in correlations if c.where in refused])


def _too_deep(kept: list[Correlation], names: Mapping[str, str],
              by_where: Mapping[str, Correlation]) -> dict[str, RuleError]:
    """Chains deeper than MAX_CHAIN (one match passes through each level at once, in one
    call stack). ``kept`` has no loops and refers to no refused correlation."""
    depth: dict[str, int] = {}
    pending = kept
    while pending:
        rest = []
        for c in pending:
            inner = [names[r] for r in c.rules if names[r] in by_where]
            if all(w in depth for w in inner):
                depth[c.where] = 1 + max((depth[w] for w in inner), default=0)
            else:
                rest.append(c)
        if len(rest) == len(pending):
            break
        pending = rest
    return {c.where: RuleError(f"correlations chained more than {MAX_CHAIN} deep",
                               source=c.source, line=c.line)
            for c in kept if depth.get(c.where, 0) > MAX_CHAIN}


def _bad_reference(c: Correlation, names: Mapping[str, str], refused: Mapping[str, RuleError]
                   ) -> RuleError | None:
    seen: dict[str, str] = {}
    lines = c.rules_lines or (c.line,) * len(c.rules)
    for ref, line in zip(c.rules, lines, strict=False):
        def err(msg: str, line: int = line) -> RuleError:
            return RuleError(msg, source=c.source, line=line)
        w = names.get(ref)
        if w is None:
            return err(f"'{ref}' is no loaded rule's or correlation's id or name")
        if w == c.where:
            return err(f"'{ref}' is this correlation itself")
        if w in seen:
            return err(f"'{ref}' and '{seen[w]}' are the same rule ({w})")
        seen[w] = ref
        if w in refused:
            return err(f"'{ref}' is a correlation that was refused ({w})")
    return None


def _loop(c: Correlation, names: Mapping[str, str], by_where: Mapping[str, Correlation],
          refused: Mapping[str, RuleError]) -> RuleError | None:
    path = [c.where]
    stack = [(c, iter(c.rules))]
    seen = {c.where}   # each correlation explored once: a depth-first search for c itself
    while stack:
        _, refs = stack[-1]
        ref = next(refs, None)
        if ref is None:
            stack.pop()
            path.pop()
            continue
        nxt = by_where.get(names.get(ref, ""))
        if nxt is None or nxt.where in refused:
            continue
        if nxt.where == c.where:
            return RuleError("correlations refer to each other in a loop: "
                             f"{' -> '.join([*path, c.where])}", source=c.source, line=c.line)
        if nxt.where in seen:
            continue
        seen.add(nxt.where)
        path.append(nxt.where)
        stack.append((nxt, iter(nxt.rules)))
    return None


# --- the runtime --------------------------------------------------------------------------

@dataclass(frozen=True)
class CorrelationMatch:
    """A correlation that held for one group. ``records``: up to MAX_SAMPLES of the base
    records (or, for chained correlations, the inner matches' ``record()``), oldest first.
    ``alert`` is False when the correlation only feeds another one (that one's
    ``generate: false``): the match then produces no alert of its own."""

    correlation: Correlation
    group: tuple[tuple[str, str], ...]    # (group-by field or alias, value)
    count: int
    first_ns: int
    last_ns: int
    records: tuple[Mapping[str, str], ...]
    alert: bool = True

    def record(self) -> dict[str, str]:
        """The flat record this match is to correlations that refer to it: the newest
        record with the group-by values over it."""
        out = dict(self.records[-1]) if self.records else {}
        out.update(self.group)
        return out

    def summary(self) -> dict[str, object]:
        c = self.correlation
        return {"correlation": {"id": c.id, "name": c.name, "title": c.title, "type": c.type,
                                "level": c.level, "tags": list(c.tags), "source": c.where,
                                "timespan": c.timespan_text,
                                "condition": c.condition_text()},
                "group": dict(self.group), "count": self.count, "first_ns": self.first_ns,
                "last_ns": self.last_ns, "records": [dict(r) for r in self.records]}


class CorrelationEngine:
    """Base-rule matches in, correlation matches out, in event time (nanoseconds).

    ``feed(rule, record, ts_ns)`` for every match of a base rule (whether or not the rule
    itself may alert: see ``suppresses``), with the flat record it matched and the event's
    time; it returns the correlations that held, chained ones included (an inner match is
    fed at once to the correlations that refer to it). ``expire(now_ns)`` drops state that
    has aged out and closes fixed windows, returning their matches: call it regularly (each
    batch, or once a second) with the same clock as ``ts_ns``, less the lateness allowed.
    State: per correlation and group-by values, one windows.Group; at most ``max_groups``
    in all (a group refused for that is counted as ``overflow``; its event is not counted).
    An event lacking a group-by field (or value_count's field) is not counted
    (``missing_field``), as SQL's GROUP BY and COUNT(DISTINCT) leave nulls out. Events out
    of order (batches): within a timespan of their group's newest they count as if in order
    (temporal_ordered compares their times); older ones are ``late`` and not counted (see
    vigil.rules.windows). A ``gt``/``gte`` correlation matches once per window's worth: its
    group starts afresh after each match."""

    def __init__(self, correlations: Iterable[Correlation], rules: Iterable[Rule], *,
                 max_groups: int = 10_000) -> None:
        rules, given = list(rules), list(correlations)
        self.correlations, self.refused = resolve(given, rules)
        self.max_groups = max_groups
        names = targets(given, rules)
        self._inputs: dict[str, list[tuple[int, int, tuple[str, ...]]]] = {}
        for ci, c in enumerate(self.correlations):
            for pos, ref in enumerate(c.rules):
                fields = tuple(c.aliases[g][ref] if g in c.aliases else g for g in c.group_by)
                self._inputs.setdefault(names[ref], []).append((ci, pos, fields))
        quiet = {names[ref] for c in self.correlations if not c.generate for ref in c.rules}
        self._alerting = [c.where not in quiet for c in self.correlations]
        self._suppressed = frozenset(quiet - {c.where for c in self.correlations})
        self._groups: list[dict[tuple[str, ...], Group]] = [{} for _ in self.correlations]
        self._total = 0
        self._counters = dict.fromkeys(("overflow", "expired", "late", "missing_field",
                                        "matches"), 0)

    def wants(self, rule: Rule) -> bool:
        """Is the rule referred to by a correlation (worth feeding)?"""
        return rule.where in self._inputs

    def suppresses(self, rule: Rule) -> bool:
        """``generate`` semantics: a rule referred to by a correlation without ``generate:
        true`` is only an input; its own matches must not become alerts."""
        return rule.where in self._suppressed

    def suppressed_rule_keys(self) -> frozenset[str]:
        """The ``Rule.where`` (FILE:LINE) of every rule ``suppresses``."""
        return self._suppressed

    def counters(self) -> dict[str, int]:
        """overflow, expired, late, missing_field, matches (totals), groups (now)."""
        return {**self._counters, "groups": self._total}

    def feed(self, rule: Rule, record: Mapping[str, str], ts_ns: int
             ) -> list[CorrelationMatch]:
        """The record is kept by reference (at most MAX_SAMPLES per group): do not change it
        afterwards. A vigil.rules.lazyrecord.LazyRecord is made whole only when kept."""
        return self._feed(rule.where, record, ts_ns) if rule.where in self._inputs else []

    def feed_source(self, where: str, record: Mapping[str, str], ts_ns: int
                    ) -> list[CorrelationMatch]:
        """``feed`` by the rule's ``Rule.where`` (the detector keeps it per rule)."""
        return self._feed(where, record, ts_ns)

    def expire(self, now_ns: int) -> list[CorrelationMatch]:
        out: list[CorrelationMatch] = []
        for ci, c in enumerate(self.correlations):
            groups, span = self._groups[ci], c.timespan_ns
            if c.monotone:
                stale = [k for k, g in groups.items() if g.last < now_ns - span]
            else:
                stale = [k for k, g in groups.items() if now_ns - g.first > span]
            for k in stale:
                g = groups.pop(k)
                self._total -= 1
                self._counters["expired"] += 1
                if not c.monotone:
                    out += self._close(ci, k, g)
        return out

    def _feed(self, source: str, rec: Mapping[str, str], t: int) -> list[CorrelationMatch]:
        out: list[CorrelationMatch] = []
        for ci, pos, fields in self._inputs.get(source, ()):
            out += self._one(ci, pos, fields, rec, t)
        return out

    def _one(self, ci: int, pos: int, fields: tuple[str, ...], rec: Mapping[str, str],
             t: int) -> list[CorrelationMatch]:
        c = self.correlations[ci]
        get = rec.get
        got = (get(fields[0]),) if len(fields) == 1 else tuple([get(f) for f in fields])
        vals = tuple([get(f) for f in c.field]) if c.field else ()
        if None in got or None in vals:
            self._counters["missing_field"] += 1
            return []
        gkey = cast("tuple[str, ...]", got)
        vkey = digest(cast("tuple[str, ...]", vals)) if c.field else b""
        groups, span = self._groups[ci], c.timespan_ns
        out: list[CorrelationMatch] = []
        g = groups.get(gkey)
        if g is not None:
            where = g.place(t, span) if not c.monotone else \
                ("late" if g.late(t, span) else "in")
            if where == "late":
                self._counters["late"] += 1
                return []
            if where == "after":
                del groups[gkey]
                self._total -= 1
                self._counters["expired"] += 1
                out += self._close(ci, gkey, g)
                g = None
        if g is None:
            if self._total >= self.max_groups:
                self._counters["overflow"] += 1
                return out
            g = groups[gkey] = Group(t, len(c.rules) if c.type == "temporal_ordered" else 0)
            self._total += 1
        rec = whole(rec)   # kept by the group (a LazyRecord is made whole now)
        if not c.monotone:
            g.add(c.type, t, rec, pos, vkey, c.cap)
            return out
        if c.type == "event_count":
            hit = g.events(t, rec, span, c.need)
        elif c.type == "value_count":
            hit = g.distinct(t, rec, vkey, span, c.need)
        elif c.type == "temporal":
            hit = g.rules(t, rec, pos, span, c.need)
        else:
            hit = g.ordered(t, rec, pos, span)
        if hit is not None:   # the group starts afresh: one match per window's worth
            del groups[gkey]
            self._total -= 1
            out += self._match(ci, gkey, hit)
        return out

    def _close(self, ci: int, key: tuple[str, ...], g: Group) -> list[CorrelationMatch]:
        c = self.correlations[ci]
        hit = g.closed(c.type)
        return self._match(ci, key, hit) if c.holds(hit.count) else []

    def _match(self, ci: int, key: tuple[str, ...], hit: Hit) -> list[CorrelationMatch]:
        c = self.correlations[ci]
        m = CorrelationMatch(c, tuple(zip(c.group_by, key, strict=True)), hit.count,
                             hit.first_ns, hit.last_ns, hit.records, self._alerting[ci])
        self._counters["matches"] += 1
        return [m, *self._feed(c.where, m.record(), m.last_ns)]


__all__ = ["MAX_CHAIN", "MAX_COUNT", "MAX_SAMPLES", "OPS", "TYPES", "Correlation",
           "CorrelationEngine", "CorrelationMatch", "holds", "resolve", "targets"]
