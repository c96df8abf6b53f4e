"""The walk's order must equal the baseline's byte order, and the policy's traversal rules."""

from __future__ import annotations

import os
from pathlib import Path

from vigil.config import Config, DirectoryConfig, Pattern
from vigil.fim.model import FileRecord, classify, compare
from vigil.fim.policy import Policy, depth_below
from vigil.fim.walk import walk


def test_walk_order_is_byte_order(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    for rel in [b"a/b", b"a.txt", b"a-b/c", b"a0", b"a/z/q", b"\xff", b"A", b"a!/x", b"b"]:
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "wb").close()
    d = DirectoryConfig(path=root)
    got = [e.path for e in walk(d, Policy(Config(directories=(d,))), lambda p, e: None)]
    assert got == sorted(got)
    assert len(got) == 14


def test_policy_depth_ignore_restrict_nesting() -> None:
    outer = DirectoryConfig(path=b"/w", depth=1, ignore=(Pattern.parse("*.tmp"),))
    inner = DirectoryConfig(path=b"/w/in", restrict=(Pattern.parse("*.conf"),))
    pol = Policy(Config(directories=(outer, inner), ignore=(Pattern.parse("re:/cache/"),)))
    assert depth_below(b"/w", b"/w") == -1 and depth_below(b"/w", b"/w/a/b") == 1
    assert pol.directory_for(b"/w/in/x") is inner and pol.directory_for(b"/w/x") is outer
    assert pol.directory_for(b"/wx") is None
    assert pol.watched(b"/w/a/b") is outer
    assert pol.watched(b"/w/a/b/c") is None  # deeper than depth 1
    assert pol.watched(b"/w/a.tmp") is None  # directory ignore
    assert pol.watched(b"/w/cache/a") is None  # global ignore
    assert pol.watched(b"/w/in/a.conf") is inner and pol.watched(b"/w/in/a.txt") is None
    assert not pol.descend(b"/w/in", outer)  # walked on its own


def test_pseudo_filesystems_never_entered_unless_configured() -> None:
    root = DirectoryConfig(path=b"/")
    pol = Policy(Config(directories=(root,)))
    assert not pol.descend(b"/proc", root) and not pol.descend(b"/sys", root)
    assert not pol.descend(b"/dev", root) and pol.descend(b"/etc", root)
    dev = DirectoryConfig(path=b"/dev")
    assert Policy(Config(directories=(dev,))).descend(b"/dev", dev)


def test_compare_each_attribute() -> None:
    base = FileRecord(b"/f", "file", 1, 0o100644, 0, 0, 5, 7, 9, {"sha256": "a", "md5": "m"})
    checks = frozenset({"size", "mode", "owner", "group", "mtime", "inode", "hashes"})
    cases = {"size": {"size": 2}, "mode": {"mode": 0o100600}, "uid": {"uid": 1},
             "gid": {"gid": 1}, "mtime": {"mtime_ns": 6}, "inode": {"inode": 8},
             "sha256": {"hashes": {"sha256": "b", "md5": "m"}}, "type": {"kind": "dir"}}
    for name, change in cases.items():
        new = FileRecord(**{**{f: getattr(base, f) for f in base.__slots__}, **change})
        assert compare(base, new, checks, ("sha256",)) == [name]
        assert compare(base, new, frozenset(), ("sha256",)) == (["type"] if name == "type" else [])
    assert classify(["mode", "uid"], ("sha256",)) == "attributes-changed"
    assert classify(["mtime", "sha256"], ("sha256",)) == "modified"
    no_hash = FileRecord(b"/f", "file", 1, 0o100644, 0, 0, 5, 7, 9, {}, "EACCES")
    assert compare(base, no_hash, checks, ("sha256",)) == []  # unreadable is not "changed"
