"""The agent's rule set: which rules run, loaded and compiled once per start or reload.

Owns turning the configuration's ``rules:`` section (and ``vigil run --rules PATH``) into a
compiled ``RuleSet``: the built-in pack and more paths, loaded with every refusal kept
(FILE:LINE and the reason), Sigma filters folded into the rules they name, rules and
correlations turned off by id, name or title, those below the minimum level, the compiled
engine and the correlation engine; and the cache of loaded rule files that spares a start
the YAML parsing (most of its time): a pickle in the agent's state directory, keyed by the
exact bytes of every rule file and of Vigil's own code, trusted only when root's and writable
by nobody else. Does not own matching (vigil.rules.matcher) or what a match becomes
(vigil.rules.detector).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vigil.config import RulesConfig
from vigil.rules.alert import level_rank
from vigil.rules.correlation import CorrelationEngine
from vigil.rules.errors import RuleError
from vigil.rules.fieldmap import FEW_VALUED
from vigil.rules.filters import apply_filters
from vigil.rules.loader import MAX_FILE_BYTES, LoadResult, builtin_rules_dir, load_paths, rule_files
from vigil.rules.matcher import Engine
from vigil.rules.model import Rule

log = logging.getLogger(__name__)

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


def build_ruleset(cfg: RulesConfig, extra: Sequence[Path] = (),
                  cache_dir: Path | None = None) -> RuleSet:
    """Load, fold the Sigma filters in, choose, compile, and set up the correlations.

    Raises RulePathError for a path that cannot be read; a rule, filter or correlation that
    cannot be loaded or compiled is refused (in ``refused``), the others still run. A rule
    under the minimum level that a correlation of sufficient level refers to is kept as that
    correlation's input, without alerts of its own. With ``cache_dir`` the loaded files
    come from (and go to) the cache there when every byte they were made of is the same."""
    paths = rule_paths(cfg, extra) if cfg.enabled else ()
    loaded = LoadResult() if not paths else load_paths(paths) if cache_dir is None \
        else _load_cached(paths, cache_dir)
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


# ---------------------------------------------------------------------------------------------
# The cache of loaded rule files

_CACHE_PREFIX = "rules-"
_CACHE_SUFFIX = ".pickle"
_VIGIL_DIR = Path(__file__).resolve().parent.parent


def cache_key(paths: Sequence[Path]) -> str:
    """sha256 over what a LoadResult is made of: Python's and Vigil's versions, the bytes of
    every module of the vigil package and of its Sigma schemas (the code that parses), and
    each rule file's name and bytes, in load order. Raises RulePathError like the loader."""
    from vigil import __version__

    h = hashlib.sha256(f"{__version__}\0{sys.version}\0".encode())
    code = sorted(p for pattern in ("**/*.py", "data/sigma/**/*")
                  for p in _VIGIL_DIR.glob(pattern) if p.is_file())
    for f in code:
        h.update(f"{f.relative_to(_VIGIL_DIR)}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    for p in paths:
        h.update(f"\1{p}\0".encode())
        for f in rule_files(Path(p)):
            try:
                with open(f, "rb") as fh:
                    data = fh.read(MAX_FILE_BYTES + 1)
            except OSError:
                data = b"\0unreadable"   # the loader says why; never cached as readable
            h.update(f"{f}\0{len(data)}\0".encode())
            h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def _trusted(st: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else: a pickle is code."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _load_cached(paths: Sequence[Path], cache_dir: Path) -> LoadResult:
    """The loaded rule files from the cache when their key matches, else loaded and cached.
    Any problem with the cache only costs the time of a load."""
    key = cache_key(paths)
    path = cache_dir / f"{_CACHE_PREFIX}{key}{_CACHE_SUFFIX}"
    try:
        if _trusted(os.stat(cache_dir)):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                if _trusted(os.fstat(f.fileno())):
                    cached = pickle.load(f)
                    if isinstance(cached, LoadResult):
                        return cached
    except FileNotFoundError:
        pass
    except Exception as err:   # a damaged cache is a miss, whatever it raises
        log.info("rule cache %s not used: %s", path, err)
    loaded = load_paths(paths)
    _store(loaded, cache_dir, path)
    return loaded


def _store(loaded: LoadResult, cache_dir: Path, path: Path) -> None:
    """Writes the cache file atomically (the others, stale, removed); failures only logged."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _trusted(os.stat(cache_dir)):
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            pickle.dump(loaded, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        for old in cache_dir.glob(f"{_CACHE_PREFIX}*{_CACHE_SUFFIX}"):
            if old != path:
                old.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, RecursionError) as err:
        log.info("rule cache %s not written: %s", path, err)
        tmp.unlink(missing_ok=True)
