"""Rule-driven watching: the paths file rules need the kernel to report, read off the rules.

A ``file_event`` rule can fire only on paths the kernel passes on. This module reads each
file rule's condition and finds the path prefixes every matching event must lie under: a
literal ``TargetFilename`` (``file.path`` in Vigil's own logsource), such as
``/etc/doas.conf``, or the literal start of a ``startswith`` or wildcard value
(``/dev/shm/``, ``/tmp/rootlog``). When every way the rule can be true is
bounded so, those prefixes become *watch-only* entries: the kernel watches the directory
(its list matches whole path components, so ``/tmp/rootlog`` needs ``/tmp``), user space keeps
only paths that start with the prefix itself, and the events feed the rules without being
reported as telemetry, baselined or hashed. A rule that can match anywhere (``contains`` or
``endswith`` only, a regex, a negation) cannot be served this way: it fires on the
configured directories only, and ``vigil rules check`` says so. Paths are compared as
written, so a rule's case-insensitive prefix is watched in the case it is written. A rule
that requires a field only the always-watched paths carry (``vigil.protected``: Vigil's own
files, vigil.ownfiles; ``vigil.sysctl.*``: the security knobs, vigil.sysctl) is bounded to
those paths, which the agent watches anyway: it needs no entry of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vigil.fim.policy import under
from vigil.rules.ecsview import PRODUCT
from vigil.rules.model import (
    And,
    Cond,
    DetectionItem,
    ExistsValue,
    Not,
    NullValue,
    Or,
    Ref,
    Rule,
    StringValue,
    Wildcard,
)

FILE_CATEGORIES = frozenset({"file_event", "file_change", "file_delete", "file_rename"})
# fields set on the events of the always-watched paths only (Vigil's own logsource)
ALWAYS_WATCHED_FIELDS = ("vigil.protected", "vigil.sysctl.")


def path_field(rule: Rule) -> str | None:
    """The field that holds a file rule's path: Sysmon's TargetFilename, or ``file.path`` in
    Vigil's own logsource; None for other rules."""
    ls = rule.logsource
    if ls.product == PRODUCT:
        return "file.path" if ls.category == "file" else None
    return "TargetFilename" if ls.category in FILE_CATEGORIES else None

Prefixes = frozenset[str] | None   # None: the rule is not bounded to any path prefix


@dataclass(frozen=True)
class WatchPath:
    prefix: bytes          # what a path must start with (user space's exact test)
    directory: bytes       # what the kernel watches (a whole path, component-bounded)
    rules: tuple[str, ...]   # the rules that need it (titles)

    def covers(self, path: bytes) -> bool:
        if not path.startswith(self.prefix):
            return False
        n = len(self.prefix)
        return not self.exact or len(path) == n or path[n:n + 1] == b"/"

    @property
    def exact(self) -> bool:
        """The prefix is a whole path (a literal TargetFilename), not the start of names."""
        return self.directory == self.prefix


def _value_prefix(v: object) -> tuple[str, bool] | None:
    """(literal start, whole value?) of a string value that starts with an absolute path."""
    if not isinstance(v, StringValue):
        return None
    lit: list[str] = []
    for part in v.parts:
        if isinstance(part, Wildcard):
            text = "".join(lit)
            return (text, False) if text.startswith("/") else None
        lit.append(part)
    text = "".join(lit)
    return (text, True) if text.startswith("/") else None


def _item(item: DetectionItem, field: str) -> Prefixes:
    if item.negate:
        return None
    if field == "file.path" and item.field is not None and item.values \
            and item.field.startswith(ALWAYS_WATCHED_FIELDS) \
            and not any(isinstance(v, (NullValue, ExistsValue)) for v in item.values):
        return frozenset()   # present only on paths the agent always watches
    if item.field != field:
        return None
    found = [_value_prefix(v) for v in item.values]
    ok = [f for f in found if f is not None]
    if item.all:   # every value must hold: one bounded value bounds the item
        return frozenset({_mark(*ok[0])}) if ok else None
    if len(ok) != len(found):
        return None
    return frozenset(_mark(*f) for f in ok)


def _mark(text: str, whole: bool) -> str:
    """Whole paths are kept with a trailing NUL so they stay apart from prefixes."""
    return text + "\0" if whole else text


def _alternative(items: Sequence[DetectionItem], field: str) -> Prefixes:
    bounded = [p for p in (_item(i, field) for i in items) if p is not None]
    return min(bounded, key=len) if bounded else None


def _cond(c: Cond, rule: Rule, field: str) -> Prefixes:
    if isinstance(c, Ref):
        s = rule.searches.get(c.name)
        if s is None:
            return None
        out: set[str] = set()
        for alt in s.alternatives:
            p = _alternative(alt, field)
            if p is None:
                return None
            out |= p
        return frozenset(out)
    if isinstance(c, And):
        bounded = [p for p in (_cond(a, rule, field) for a in c.args) if p is not None]
        return min(bounded, key=len) if bounded else None
    if isinstance(c, Or):
        acc: set[str] = set()
        for a in c.args:
            p = _cond(a, rule, field)
            if p is None:
                return None
            acc |= p
        return frozenset(acc)
    assert isinstance(c, Not)
    return None


def rule_prefixes(rule: Rule) -> Prefixes:
    """The path prefixes every event matching ``rule`` lies under, or None."""
    field = path_field(rule)
    return _cond(rule.condition, rule, field) if field is not None else None


def watch_paths(rules: Iterable[Rule], covered: Sequence[bytes] = ()
                ) -> tuple[list[WatchPath], list[tuple[Rule, str]]]:
    """Watch-only entries for the file rules, less what the configured directories
    ``covered`` (canonical roots) already report; and the file rules that cannot be served,
    with why."""
    need: dict[tuple[bytes, bytes], list[str]] = {}
    unserved: list[tuple[Rule, str]] = []
    for r in rules:
        if path_field(r) is None:
            continue
        prefixes = rule_prefixes(r)
        if prefixes is None:
            unserved.append((r, "its path is not bounded to a path prefix (contains, "
                                "endswith, a regex or a negation): it fires only on the "
                                "configured directories"))
            continue
        for p in sorted(prefixes):
            whole = p.endswith("\0")
            prefix = os.fsencode(p.rstrip("\0"))
            directory = prefix if whole or prefix.endswith(b"/") else \
                os.path.dirname(prefix) or b"/"
            if any(under(root, prefix) for root in covered):
                continue
            need.setdefault((prefix, directory.rstrip(b"/") or b"/"), []).append(r.title)
    return [WatchPath(p, d, tuple(ts)) for (p, d), ts in sorted(need.items())], unserved

