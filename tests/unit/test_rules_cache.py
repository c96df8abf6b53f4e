"""The cache of loaded rule files (vigil.rules.ruleset): a hit gives the same rule set as a
fresh load; any changed byte of a rule file is a miss; a cache file anyone else could have
written is never unpickled."""

from __future__ import annotations

import os
from pathlib import Path

from vigil.config.model import RulesConfig
from vigil.rules.ruleset import build_ruleset, cache_key

RULE = """\
title: {title}
id: 6f1bd2a4-36a0-4c35-9d8e-{tail}
status: test
level: high
logsource: {{product: linux, category: file_event}}
detection:
  sel: {{TargetFilename|endswith: '/{name}'}}
  condition: sel
"""


def pack(d: Path, title: str = "first") -> Path:
    d.mkdir(exist_ok=True)
    (d / "a.yml").write_text(RULE.format(title=title, tail="000000000001", name="a"))
    (d / "b.yml").write_text(RULE.format(title="second", tail="000000000002", name="b"))
    return d


def cfg(d: Path) -> RulesConfig:
    return RulesConfig(builtin=False, paths=(d,), min_level="informational")


def test_a_hit_is_the_same_rule_set(tmp_path: Path) -> None:
    rules, cache = pack(tmp_path / "rules"), tmp_path / "cache"
    fresh = build_ruleset(cfg(rules))
    first = build_ruleset(cfg(rules), cache_dir=cache)    # a miss: loaded, then stored
    stored = list(cache.iterdir())
    assert len(stored) == 1 and stored[0].stat().st_mode & 0o077 == 0
    second = build_ruleset(cfg(rules), cache_dir=cache)   # a hit
    assert fresh.rules == first.rules == second.rules
    assert second.describe() == fresh.describe() == "2 rules loaded"


def test_a_changed_rule_file_is_a_miss(tmp_path: Path) -> None:
    rules, cache = pack(tmp_path / "rules"), tmp_path / "cache"
    before = cache_key((rules,))
    build_ruleset(cfg(rules), cache_dir=cache)
    pack(rules, title="renamed")
    assert cache_key((rules,)) != before
    after = build_ruleset(cfg(rules), cache_dir=cache)
    assert sorted(r.title for r in after.rules) == ["renamed", "second"]
    assert len(list(cache.iterdir())) == 1   # the stale entry is gone


def test_a_cache_file_others_may_write_is_not_read(tmp_path: Path) -> None:
    rules, cache = pack(tmp_path / "rules"), tmp_path / "cache"
    build_ruleset(cfg(rules), cache_dir=cache)
    (entry,) = cache.iterdir()
    entry.write_bytes(b"not a pickle the agent wrote")
    os.chmod(entry, 0o666)
    again = build_ruleset(cfg(rules), cache_dir=cache)    # loaded from the files instead
    assert sorted(r.title for r in again.rules) == ["first", "second"]
