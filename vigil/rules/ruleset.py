"""The agent's rule set: which rules run, loaded and compiled once per start or reload.

Owns turning the configuration's ``rules:`` section (and ``vigil run --rules PATH``) into a
compiled ``RuleSet``: the built-in pack and more paths, loaded with every refusal kept
(FILE:LINE and the reason), rules turned off by id or title, rules below the minimum level,
and the compiled engine. Does not own matching (vigil.rules.matcher) or what a match becomes
(vigil.rules.detector).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vigil.config import RulesConfig
from vigil.rules.alert import level_rank
from vigil.rules.errors import RuleError
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

    @property
    def warnings(self) -> list[str]:
        """Fields Vigil cannot provide, per rule ("FILE:LINE: warning: ...")."""
        return [f"{r.source}:{line}: warning: {w}" for r in self.rules for line, w in r.warnings]

    def describe(self) -> str:
        """One line for stderr: how many rules run and why the others do not."""
        parts = [f"{len(self.rules)} rules loaded"]
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
    """Load and compile. Raises RulePathError for a path that cannot be read; a rule that
    cannot be loaded or compiled is refused (in ``refused``), the others still run."""
    paths = rule_paths(cfg, extra) if cfg.enabled else ()
    loaded = load_paths(paths) if paths else LoadResult()
    off = set(cfg.disabled)
    floor = level_rank(cfg.min_level)
    kept: list[Rule] = []
    disabled = below = 0
    used: set[str] = set()
    for r in loaded.rules:
        hit = {r.id, r.title} & off
        if hit:
            used |= {h for h in hit if h is not None}
            disabled += 1
        elif level_rank(r.level) < floor:
            below += 1
        else:
            kept.append(r)
    engine, kept, errors = compile_rules(kept)
    return RuleSet(engine, kept, [*loaded.refused, *errors], disabled, below,
                   tuple(sorted(off - used)), paths)


def compile_rules(rules: list[Rule]) -> tuple[Engine, list[Rule], list[RuleError]]:
    """The engine, the rules it runs, and the rules the compiler refused (e.g. a regex RE2
    will not take), which no longer count as loaded."""
    engine = Engine.build(rules)
    if not engine.errors:
        return engine, rules, []
    bad = {(e.source, e.line) for e in engine.errors}
    return engine, [r for r in rules if (r.source, r.line) not in bad], list(engine.errors)
