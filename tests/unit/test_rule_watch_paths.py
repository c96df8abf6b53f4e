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
