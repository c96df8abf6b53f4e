"""What a detection produces: an ``Alert``, in the same stream as the events it is about.

Owns the alert model: which rule fired (``RuleInfo``: the metadata an analyst reads, the same
for a Sigma rule and a correlation), the matched event as its ECS document, and how many
matches the alert stands for (repeats folded by suppression, the events a correlation
counted). Formats live in vigil.outputs (ECS: ecs_alert.py; the pretty line: pretty.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from vigil.config import LEVELS
from vigil.rules.correlation import Correlation
from vigil.rules.loader import builtin_rules_dir
from vigil.rules.model import Rule

DEFAULT_LEVEL: Final = "medium"   # a rule that names no level
# ECS event.severity (a number; larger is worse), as Elastic's detection rules use it
SEVERITY: Final = {"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99}

def level_rank(level: str | None) -> int:
    return LEVELS.index(level) if level in LEVELS else LEVELS.index(DEFAULT_LEVEL)


def ruleset_of(source: str) -> str:
    """``rule.ruleset``: the built-in pack's folder name (``sigmahq``, ``vigil``), else
    ``sigma`` (a user's own Sigma rules)."""
    try:
        rel = Path(source).resolve().relative_to(builtin_rules_dir().resolve())
    except (ValueError, OSError):
        return "sigma"
    return rel.parts[0] if len(rel.parts) > 1 else "sigma"


@dataclass(frozen=True)
class RuleInfo:
    """The rule behind an alert, as the analyst sees it."""

    id: str | None
    title: str
    level: str
    description: str | None = None
    references: tuple[str, ...] = ()
    author: str | None = None
    license: str | None = None
    tags: tuple[str, ...] = ()
    where: str = ""          # FILE:LINE
    ruleset: str = "sigma"
    kind: str = "sigma"      # sigma | correlation

    @property
    def key(self) -> str:
        return self.id or self.where

    @classmethod
    def of(cls, rule: Rule | Correlation) -> RuleInfo:
        if isinstance(rule, Correlation):
            return cls(rule.id, rule.title, rule.level or DEFAULT_LEVEL, rule.description,
                       rule.references, rule.author, None, rule.tags, rule.where,
                       ruleset_of(rule.source), "correlation")
        return cls(rule.id, rule.title, rule.level or DEFAULT_LEVEL, rule.description,
                   rule.references, rule.author, rule.license, rule.tags, rule.where,
                   ruleset_of(rule.source))


@dataclass
class Alert:
    """One alert. ``count`` matches stand behind it: 1 for a first match; for a ``repeat``
    (emitted when a suppression window closes) the matches suppressed in that window, the
    event being the last of them; for a correlation, the events it counted."""

    timestamp_ns: int
    rule: RuleInfo
    category: str                     # the logsource category the event was matched as
    event: dict[str, Any]             # the matched event's ECS document (never mutated)
    count: int = 1
    first_ns: int = 0
    repeat: bool = False
    group: dict[str, str] = field(default_factory=dict)      # correlation: group-by values
    related: list[dict[str, str]] = field(default_factory=list)  # correlation: base records
