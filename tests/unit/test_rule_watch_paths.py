"""Rule-driven watching as pure logic: which path prefixes a file rule is bounded to, what the
kernel must watch for it, and which rules cannot be served that way."""

from __future__ import annotations

import pytest

from vigil.rules.loader import load_text
from vigil.rules.watchpaths import WatchPath, rule_prefixes, watch_paths


def rule(detection: str, category: str = "file_event"):  # type: ignore[no-untyped-def]
    text = (f"title: t\nlogsource: {{product: linux, category: {category}}}\n"
            f"detection:\n{detection}")
    res = load_text(text, "r.yml")
    assert not res.refused, res.refused
    return res.rules[0]


@pytest.mark.parametrize("detection, expected", [
    ("  sel: {TargetFilename: /etc/doas.conf}\n  condition: sel\n", {"/etc/doas.conf\0"}),
    ("  sel: {TargetFilename|startswith: [/dev/shm/, /run/user/]}\n  condition: sel\n",
     {"/dev/shm/", "/run/user/"}),
    ("  sel: {TargetFilename: '/tmp/x*y'}\n  condition: sel\n", {"/tmp/x"}),
    # one bounded conjunct bounds the whole AND
    ("  a: {TargetFilename|startswith: /tmp/}\n  b: {Image|endswith: /wget}\n"
     "  condition: a and b\n", {"/tmp/"}),
    ("  a: {TargetFilename|startswith: /tmp/, Image|endswith: /wget}\n  condition: a\n",
     {"/tmp/"}),
    # a negation bounds nothing; the rest still does
    ("  a: {TargetFilename|startswith: /tmp/}\n  f: {TargetFilename|startswith: /tmp/ok}\n"
     "  condition: a and not f\n", {"/tmp/"}),
    ("  a: {TargetFilename|startswith: /srv/}\n  b: {TargetFilename|startswith: /opt/}\n"
     "  condition: 1 of them\n", {"/srv/", "/opt/"}),
])
def test_bounded_rules(detection: str, expected: set[str]) -> None:
    assert rule_prefixes(rule(detection)) == frozenset(expected)


@pytest.mark.parametrize("detection", [
    "  sel: {TargetFilename|endswith: /etc/doas.conf}\n  condition: sel\n",
    "  sel: {TargetFilename|contains: /cron.d/}\n  condition: sel\n",
    "  sel: {TargetFilename|re: '^/tmp/'}\n  condition: sel\n",
    "  sel: {TargetFilename: ['/tmp/a', '*b']}\n  condition: sel\n",   # one value unbounded
    "  a: {TargetFilename|startswith: /tmp/}\n  b: {Image: /x}\n  condition: a or b\n",
    "  a: {TargetFilename|startswith: /tmp/}\n  condition: not a\n",
    "  a: {TargetFilename|startswith: 'tmp/'}\n  condition: a\n",        # not absolute
])
def test_unbounded_rules(detection: str) -> None:
    assert rule_prefixes(rule(detection)) is None


def test_watch_paths_skip_configured_trees_and_name_the_unserved() -> None:
    bounded = rule("  sel: {TargetFilename|startswith: [/etc/cron.d/, /tmp/rootlog]}\n"
                   "  condition: sel\n")
    exact = rule("  sel: {TargetFilename: /dev/shm/x.lock}\n  condition: sel\n")
    anywhere = rule("  sel: {TargetFilename|contains: .ssh/}\n  condition: sel\n")
    process = rule("  sel: {Image: /x}\n  condition: sel\n", "process_creation")
    paths, unserved = watch_paths([bounded, exact, anywhere, process], covered=[b"/etc"])
    assert paths == [WatchPath(b"/dev/shm/x.lock", b"/dev/shm/x.lock", ("t",)),
                     WatchPath(b"/tmp/rootlog", b"/tmp", ("t",))]
    assert [r for r, _ in unserved] == [anywhere]
    rootlog, lock = paths[1], paths[0]
    assert rootlog.covers(b"/tmp/rootlog") and rootlog.covers(b"/tmp/rootlog.1")
    assert not rootlog.covers(b"/tmp/other")
    assert lock.covers(b"/dev/shm/x.lock") and not lock.covers(b"/dev/shm/x.lock2")


def vigil_rule(detection: str):  # type: ignore[no-untyped-def]
    res = load_text("title: t\nlogsource: {product: vigil, category: file}\n"
                    f"detection:\n{detection}", "r.yml")
    assert not res.refused, res.refused
    return res.rules[0]


@pytest.mark.parametrize("detection, expected", [
    # fields only the always-watched paths carry (vigil.ownfiles, vigil.sysctl): served by
    # those paths, no entry of their own
    ("  sel: {vigil.protected: self, event.outcome: success}\n  condition: sel\n", set()),
    ("  sel: {vigil.sysctl.weakened: 'true'}\n  condition: sel\n", set()),
    ("  a: {vigil.protected: self}\n  b: {file.path|startswith: /srv/}\n"
     "  condition: a or b\n", {"/srv/"}),
    ("  sel: {vigil.protected: null}\n  condition: sel\n", None),
    ("  sel: {vigil.protected|exists: true}\n  condition: sel\n", None),
    ("  a: {vigil.protected: self}\n  condition: not a\n", None),
])
def test_always_watched_fields_bound_a_rule(detection: str, expected: set[str] | None) -> None:
    got = rule_prefixes(vigil_rule(detection))
    assert got == (None if expected is None else frozenset(expected))
    if expected is not None:
        paths, unserved = watch_paths([vigil_rule(detection)])
        assert not unserved and [p.prefix.decode() for p in paths] == sorted(expected)


def test_the_packs_always_watched_rules_are_served() -> None:
    from vigil.rules.loader import builtin_rules_dir, load_paths

    rules = [r for r in load_paths([builtin_rules_dir() / "vigil"]).rules
             if r.id in {"3a61ac80-4943-459d-8514-8d8fcbbeadbd",
                         "272ecb2d-75d1-4f52-aa02-a848f3a9efa2"}]
    assert len(rules) == 2
    paths, unserved = watch_paths(rules)
    assert paths == [] and unserved == []
