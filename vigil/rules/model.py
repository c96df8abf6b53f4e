"""The Sigma rule model: what a parsed rule says, independent of how it is matched.

Owns the typed, frozen description of a rule (metadata, logsource), its search identifiers
(each a list of alternatives, each alternative a conjunction of detection items), the values a
detection item tests after its modifiers were applied, and the parsed condition tree. Parsing
(vigil.rules.loader, .values, .condition) builds these; compiling (vigil.rules.compiler) reads
them. Nothing here knows about YAML, regular-expression engines or events.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

# --- values -------------------------------------------------------------------------------

STAR: Literal["*"] = "*"
QMARK: Literal["?"] = "?"


@dataclass(frozen=True)
class Wildcard:
    """A Sigma wildcard inside a string value: ``*`` (any run) or ``?`` (one character)."""

    kind: Literal["*", "?"]


@dataclass(frozen=True)
class StringValue:
    """A string test: literal text and wildcards, matched against the whole field value.

    ``contains``/``startswith``/``endswith`` become leading/trailing ``*``; integers and
    booleans in a rule are compared as their text (``4``, ``true``), as Sysmon logs carry text.
    """

    parts: tuple[str | Wildcard, ...]
    cased: bool = False

    @property
    def plain(self) -> str | None:
        """The text when the value has no wildcard at all, else None."""
        if all(isinstance(p, str) for p in self.parts):
            return "".join(p for p in self.parts if isinstance(p, str))
        return None

    def text(self) -> str:
        """The value written back in Sigma's notation (wildcards and escapes)."""
        out: list[str] = []
        for p in self.parts:
            if isinstance(p, Wildcard):
                out.append(p.kind)
            else:
                out.append(p.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?"))
        return "".join(out)


@dataclass(frozen=True)
class RegexValue:
    """``|re``: an RE2 pattern searched anywhere in the value; flags from ``|i``, ``|m``, ``|s``."""

    pattern: str
    flags: str = ""


@dataclass(frozen=True)
class CidrValue:
    """``|cidr``: the value, read as an IP address, lies in this network."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class CompareValue:
    """``|lt``, ``|lte``, ``|gt``, ``|gte``: the value, read as a number, compared."""

    op: Literal["lt", "lte", "gt", "gte"]
    number: int | float


@dataclass(frozen=True)
class NullValue:
    """``field: null``: the event does not carry the field."""


@dataclass(frozen=True)
class ExistsValue:
    """``|exists: true/false``: the event carries the field (any value) or not."""

    exists: bool


@dataclass(frozen=True)
class FieldRefValue:
    """``|fieldref``: compared with another field of the same event (``mode`` from
    ``startswith``/``endswith``/``contains``)."""

    other: str
    mode: Literal["eq", "startswith", "endswith", "contains"] = "eq"
    cased: bool = False


Value = (StringValue | RegexValue | CidrValue | CompareValue | NullValue | ExistsValue
         | FieldRefValue)

# --- detection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionItem:
    """One ``field|modifiers: values`` entry (``field`` None for a keyword search, which
    matches a value anywhere in the event). The values are ORed, or ANDed with ``|all``;
    ``|neq`` negates the whole item."""

    field: str | None
    modifiers: tuple[str, ...]
    values: tuple[Value, ...]
    all: bool = False
    negate: bool = False
    line: int = 0


@dataclass(frozen=True)
class Search:
    """A search identifier: alternatives ORed (a list of maps or of keywords), each
    alternative a conjunction of detection items (a map)."""

    name: str
    alternatives: tuple[tuple[DetectionItem, ...], ...]
    line: int = 0


# --- condition ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Not:
    arg: Cond


@dataclass(frozen=True)
class And:
    args: tuple[Cond, ...]


@dataclass(frozen=True)
class Or:
    args: tuple[Cond, ...]


Cond = Ref | Not | And | Or

# --- rule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSource:
    product: str | None = None
    category: str | None = None
    service: str | None = None

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("product", self.product), ("category", self.category),
                                         ("service", self.service)) if v]
        return ", ".join(parts) or "(any)"


@dataclass(frozen=True)
class Rule:
    """A loaded rule: metadata as the file says it, the searches, and one condition (a list
    of conditions in the file is ORed into one)."""

    title: str
    id: str | None
    logsource: LogSource
    searches: dict[str, Search]
    condition: Cond
    condition_text: str
    source: str
    line: int
    level: str | None = None
    status: str | None = None
    description: str | None = None
    author: str | None = None
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    date: str | None = None
    modified: str | None = None
    license: str | None = None
    logsource_line: int = 0
    warnings: tuple[tuple[int, str], ...] = field(default=(), compare=False)  # (line, what)
    name: str | None = None    # ``name:``, how correlations and filters may refer to it
    filters: tuple[str, ...] = ()   # FILE:LINE of each Sigma filter folded into the condition

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def fields(self) -> set[str]:
        """Every event field the rule reads (fieldref targets included)."""
        out: set[str] = set()
        for s in self.searches.values():
            for alt in s.alternatives:
                for item in alt:
                    if item.field is not None:
                        out.add(item.field)
                    out.update(v.other for v in item.values if isinstance(v, FieldRefValue))
        return out

    def field_lines(self) -> dict[str, int]:
        """Each field the rule reads -> the first line that reads it."""
        out: dict[str, int] = {}
        for s in self.searches.values():
            for alt in s.alternatives:
                for item in alt:
                    names = [item.field] if item.field is not None else []
                    names += [v.other for v in item.values if isinstance(v, FieldRefValue)]
                    for n in names:
                        out[n] = min(out.get(n, item.line), item.line)
        return out

    def summary(self) -> dict[str, object]:
        """What ``vigil rules list --json`` prints for the rule."""
        return {"id": self.id, "name": self.name, "title": self.title, "level": self.level,
                "status": self.status,
                "logsource": {k: v for k, v in (("product", self.logsource.product),
                                                 ("category", self.logsource.category),
                                                 ("service", self.logsource.service)) if v},
                "tags": list(self.tags), "author": self.author,
                "references": list(self.references), "license": self.license,
                "source": self.where,
                "condition": self.condition_text,
                "filters": list(self.filters),
                "warnings": [f"{self.source}:{line}: {w}" for line, w in self.warnings]}
