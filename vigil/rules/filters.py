"""Sigma filters: one tuning (a known false positive) applied to many rules at once.

Owns the ``Filter`` model (what a filter document says: the rules it names, its logsource,
its searches and condition) and ``apply_filters``: every rule a filter names, by ``id`` or
``name``, whose logsource the filter's covers, gets the condition ``(rule) and not
(filter)``, with the filter's searches added under names none of the rule's searches has, so
the compiler and the matcher run the filtered rule unchanged. A filter's condition describes
the events to leave out: the specification's example selects the administrators' accounts
(``User|startswith: 'adm_'``, ``condition: selection``) to filter them out. Reading filter
documents is vigil.rules.loader's; nothing here knows YAML or events.

Logsource: as in Sigma's reference implementation (pySigma), a filter applies to a rule when
each of ``product``, ``category``, ``service`` the filter sets is the rule's; a filter with
``product: linux`` covers every Linux rule, one with ``category: process_creation`` only that
category. A named rule the filter does not cover is left as it is, with a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from vigil.rules.model import And, Cond, LogSource, Not, Or, Ref, Rule, Search


@dataclass(frozen=True)
class Filter:
    """A loaded filter document (``filter:`` holds ``rules``, the searches, ``condition``)."""

    title: str
    id: str | None
    name: str | None
    rules: tuple[str, ...]          # the ids or names of the rules it applies to
    logsource: LogSource
    searches: dict[str, Search]
    condition: Cond
    source: str
    line: int
    condition_text: str = ""
    description: str | None = None
    date: str | None = None
    modified: str | None = None
    rules_lines: tuple[int, ...] = ()      # the line of each entry of ``rules``
    logsource_line: int = 0
    warnings: tuple[tuple[int, str], ...] = field(default=(), compare=False)  # (line, what)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def names(self, rule: Rule) -> bool:
        """Does ``rules:`` name this rule (by id or by name)?"""
        return (rule.id is not None and rule.id in self.rules) or \
            (rule.name is not None and rule.name in self.rules)

    def covers(self, ls: LogSource) -> bool:
        """Every logsource attribute the filter sets is the rule's."""
        mine = self.logsource
        return all(want is None or want == have for want, have in (
            (mine.product, ls.product), (mine.category, ls.category),
            (mine.service, ls.service)))

    def summary(self) -> dict[str, object]:
        """What ``vigil rules list --json`` prints for the filter."""
        return {"kind": "filter", "id": self.id, "name": self.name, "title": self.title,
                "rules": list(self.rules),
                "logsource": {k: v for k, v in (("product", self.logsource.product),
                                                 ("category", self.logsource.category),
                                                 ("service", self.logsource.service)) if v},
                "condition": self.condition_text, "source": self.where,
                "warnings": [f"{self.source}:{line}: {w}" for line, w in self.warnings]}


def _rename(c: Cond, names: Mapping[str, str]) -> Cond:
    if isinstance(c, Ref):
        return Ref(names[c.name])
    if isinstance(c, Not):
        return Not(_rename(c.arg, names))
    if isinstance(c, And):
        return And(tuple(_rename(a, names) for a in c.args))
    return Or(tuple(_rename(a, names) for a in c.args))


def _fresh(base: str, taken: set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}#{n}"
    taken.add(name)
    return name


def fold(rule: Rule, flt: Filter, k: int) -> Rule:
    """``rule`` with ``flt`` folded in: ``(rule) and not (filter)``; the filter's searches
    are renamed ``~filter<k>:<name>`` (made unique against the rule's own names)."""
    taken = set(rule.searches)
    names = {n: _fresh(f"~filter{k}:{n}", taken) for n in flt.searches}
    searches = dict(rule.searches)
    for n, s in flt.searches.items():
        searches[names[n]] = replace(s, name=names[n])
    return replace(rule, searches=searches,
                   condition=And((rule.condition, Not(_rename(flt.condition, names)))),
                   condition_text=f"({rule.condition_text}) and not ({flt.condition_text})",
                   filters=(*rule.filters, flt.where))


def _field_warnings(rule: Rule, flt: Filter) -> list[str]:
    """Fields of the filter that Vigil does not provide for the rule's category."""
    from vigil.rules.fieldmap import coverage_warnings

    probe = Rule(title=flt.title, id=None, logsource=rule.logsource, searches=flt.searches,
                 condition=flt.condition, condition_text=flt.condition_text, source=flt.source,
                 line=flt.line, logsource_line=-1)
    # logsource warnings (line -1) are the rule's own, already reported with the rule
    return [f"{flt.source}:{line}: warning: filter '{flt.title}': {w}"
            for line, w in coverage_warnings(probe) if line != -1]


def apply_filters(rules: list[Rule], filters: Iterable[Filter]) -> tuple[list[Rule], list[str]]:
    """The rules with every filter that names them folded in (in the filters' order), and
    warnings ("FILE:LINE: warning: ..."): a reference naming no loaded rule, a named rule whose
    logsource the filter does not cover (left unfiltered), filter fields Vigil cannot
    provide for a rule's category (a test of such a field never holds there). Rules no
    filter applies to are returned as they were (the same objects)."""
    out = list(rules)
    warnings: list[str] = []
    for k, flt in enumerate(filters, 1):
        used: set[str] = set()
        reported: set[str] = set()
        for i, r in enumerate(out):
            if not flt.names(r):
                continue
            used |= {x for x in (r.id, r.name) if x is not None} & set(flt.rules)
            if not flt.covers(r.logsource):
                warnings.append(
                    f"{flt.source}:{flt.logsource_line or flt.line}: warning: filter "
                    f"'{flt.title}' is not applied to '{r.title}' ({r.where}): its logsource "
                    f"({flt.logsource.describe()}) does not cover the rule's "
                    f"({r.logsource.describe()})")
                continue
            out[i] = fold(r, flt, k)
            for w in _field_warnings(r, flt):
                if w not in reported:
                    reported.add(w)
                    warnings.append(w)
        lines = flt.rules_lines or (flt.line,) * len(flt.rules)
        for ref, line in zip(flt.rules, lines, strict=False):
            if ref not in used:
                warnings.append(f"{flt.source}:{line}: warning: filter '{flt.title}' names "
                                f"'{ref}', which is no loaded rule's id or name")
    return out, warnings
