"""The agent's rule set: which rules run, loaded and compiled once per start or reload.

Owns turning the configuration's ``rules:`` section (and ``vigil run --rules PATH``) into a
compiled ``RuleSet``: the built-in pack and more paths, loaded with every refusal kept
(FILE:LINE and the reason), Sigma filters folded into the rules they name, rules and
correlations turned off by id, name or title, those below the minimum level, the compiled
engine and the correlation engine. Does not own matching (vigil.rules.matcher) or what a match
becomes (vigil.rules.detector).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vigil.config import RulesConfig
from vigil.rules.alert import level_rank
from vigil.rules.correlation import CorrelationEngine
from vigil.rules.errors import RuleError
from vigil.rules.fieldmap import FEW_VALUED
from vigil.rules.filters import apply_filters
from vigil.rules.loader import LoadResult, builtin_rules_dir, load_paths
from vigil.rules.matcher import Engine
from vigil.rules.model import Rule


@dataclass
class RuleSet:
    """Rules ready to match, and everything a user should know about the ones that are not."""

    engine: Engine
    rules: list[Rule]
    refused: list[RuleError] = field(default_factory=list)
    disabled: int = 0          # turned off by id or title in the config
    below_level: int = 0       # under rules.min_level
    unknown_disabled: tuple[str, ...] = ()   # config names that match no loaded rule
    paths: tuple[Path, ...] = ()
    correlations: CorrelationEngine | None = None
    quiet: frozenset[str] = frozenset()   # Rule.where of rules kept only for correlations
    notes: list[str] = field(default_factory=list)   # filters' load warnings

    @property
    def warnings(self) -> list[str]:
        """Fields Vigil cannot provide, per rule ("FILE:LINE: warning: ..."), and filters'."""
        return [f"{r.source}:{line}: warning: {w}" for r in self.rules
                for line, w in r.warnings] + self.notes

    def alerts_for(self, rule: Rule) -> bool:
        """May a match of ``rule`` become an alert of its own (not only a correlation's
        input: ``generate: false``, or a rule under the minimum level kept for one)?"""
        return rule.where not in self.quiet and not (
            self.correlations is not None and self.correlations.suppresses(rule))

    def describe(self) -> str:
        """One line for stderr: how many rules run and why the others do not."""
        parts = [f"{len(self.rules)} rules loaded"]
        if self.correlations is not None and self.correlations.correlations:
            parts.append(f"{len(self.correlations.correlations)} correlations")
        if self.refused:
            parts.append(f"{len(self.refused)} refused")
        if self.disabled:
            parts.append(f"{self.disabled} disabled")
        if self.below_level:
            parts.append(f"{self.below_level} below the minimum level")
        return ", ".join(parts)


def rule_paths(cfg: RulesConfig, extra: Sequence[Path] = ()) -> tuple[Path, ...]:
    return ((builtin_rules_dir(),) if cfg.builtin else ()) + tuple(cfg.paths) + tuple(extra)


def build_ruleset(cfg: RulesConfig, extra: Sequence[Path] = ()) -> RuleSet:
    """Load, fold the Sigma filters in, choose, compile, and set up the correlations.

    Raises RulePathError for a path that cannot be read; a rule, filter or correlation that
    cannot be loaded or compiled is refused (in ``refused``), the others still run. A rule
    under the minimum level that a correlation of sufficient level refers to is kept as that
    correlation's input, without alerts of its own."""
    paths = rule_paths(cfg, extra) if cfg.enabled else ()
    loaded = load_paths(paths) if paths else LoadResult()
    rules, notes = apply_filters(loaded.rules, loaded.filters)
    off = set(cfg.disabled)
    floor = level_rank(cfg.min_level)
    correlations = [c for c in loaded.correlations if not ({c.id, c.title, c.name} & off)
                    and level_rank(c.level) >= floor]
    inputs = {ref for c in correlations for ref in c.rules}
    kept: list[Rule] = []
    quiet: set[str] = set()
    disabled = below = 0
    used: set[str] = {h for c in loaded.correlations for h in (c.id, c.title, c.name)
                      if h is not None and h in off}
    for r in rules:
        hit = {r.id, r.title, r.name} & off
        if hit:
            used |= {h for h in hit if h is not None}
            disabled += 1
        elif level_rank(r.level) < floor:
            below += 1
            if {r.id, r.name} & inputs:
                kept.append(r)
                quiet.add(r.where)
        else:
            kept.append(r)
    engine, kept, errors = compile_rules(kept)
    ce = CorrelationEngine(correlations, kept) if correlations else None
    refused = [*loaded.refused, *errors, *(ce.refused if ce is not None else [])]
    return RuleSet(engine, kept, refused, disabled, below, tuple(sorted(off - used)), paths,
                   ce, frozenset(quiet), list(notes))


def compile_rules(rules: list[Rule]) -> tuple[Engine, list[Rule], list[RuleError]]:
    """The engine, the rules it runs, and the rules the compiler refused (e.g. a regex RE2
    will not take), which no longer count as loaded."""
    engine = Engine.build(rules, few_valued=FEW_VALUED)
    if not engine.errors:
        return engine, rules, []
    bad = {(e.source, e.line) for e in engine.errors}
    return engine, [r for r in rules if (r.source, r.line) not in bad], list(engine.errors)
