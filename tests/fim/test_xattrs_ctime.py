"""security.* extended attributes and ctime in the baseline (issue 11, item 7b): a capability
added to a binary while Vigil is stopped (the classic `setcap` backdoor) is found by a scan and by
``vigil scan --check``; in realtime an xattr event is compared, with the values before and after;
ctime is named only when nothing else explains it. Real files, the real SQLite baseline."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from fimutil import make_config, oneshot, scan, stored
from test_realtime import SHELL, ev

from vigil.events.model import FileOp
from vigil.fim.model import FimEvent
from vigil.fim.realtime import Reconciler
from vigil.fim.store import Store

b = os.fsencode
CAP = "security.capability"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="setting security.capability needs "
                                "CAP_SETFCAP (tests/fim run as root in CI)")


def cap_net_raw() -> bytes:
    """A VFS_CAP_REVISION_2 capability set: cap_net_raw (13) permitted and effective."""
    return struct.pack("<IIIII", 0x02000000 | 1, 1 << 13, 0, 0, 0)


def setcap(path: Path) -> None:
    tool = shutil.which("setcap")
    if tool:  # libcap2-bin: what an attacker would type
        subprocess.run([tool, "cap_net_raw+ep", str(path)], check=True)
    else:
        os.setxattr(path, CAP, cap_net_raw())


def changes(events: list[FimEvent], root: Path) -> dict[bytes, tuple[str, list[str]]]:
    return {e.path: (e.action, e.changed_attributes) for e in events if e.path != b(root)}


@needs_root
def test_capability_added_while_stopped_is_found(tmp_path: Path, tree: Path) -> None:
    binary = tree / "ping"
    shutil.copy("/bin/true", binary)
    cfg = make_config(tmp_path, tree)
    scan(cfg)
    assert stored(cfg)[b(binary)]["xattrs"] == {}
    setcap(binary)
    raw = os.getxattr(binary, CAP)
    r = oneshot("--check", "--config", cfg.source)
    assert r.returncode == 1, r.stderr
    assert any("ping" in ln and "[xattrs]" in ln for ln in r.stdout.splitlines()), r.stdout
    (change,) = [e for e in scan(cfg) if e.path == b(binary)]
    assert (change.action, change.changed_attributes) == ("attributes-changed", ["xattrs"])
    assert change.before is not None and change.after is not None
    assert change.before["xattrs"] == {} and change.after["xattrs"] == {CAP: "0x" + raw.hex()}
    assert scan(cfg) == []
    os.removexattr(binary, CAP)  # removed again: that is a change too
    (change,) = [e for e in scan(cfg) if e.path == b(binary)]
    assert change.changed_attributes == ["xattrs"] and change.after["xattrs"] == {}  # type: ignore


@needs_root
def test_realtime_xattr_events_are_compared(tmp_path: Path, tree: Path) -> None:
    binary = tree / "sub" / "b.bin"
    cfg = make_config(tmp_path, tree)
    scan(cfg)
    with Store(cfg.database) as store:
        r = Reconciler(cfg, store)
        os.setxattr(binary, CAP, cap_net_raw())
        (out,) = r.handle([ev(FileOp.SETXATTR, binary, SHELL, 1, target_path=b(CAP))], 1)
        assert (out.action, out.changed_attributes, out.process) == (
            "attributes-changed", ["xattrs"], SHELL)
        assert out.before["xattrs"] == {}  # type: ignore[index]
        assert out.after["xattrs"] == {CAP: "0x" + cap_net_raw().hex()}  # type: ignore[index]
        os.removexattr(binary, CAP)
        (out,) = r.handle([ev(FileOp.REMOVEXATTR, binary, SHELL, 2, target_path=b(CAP))], 2)
        assert out.changed_attributes == ["xattrs"] and out.after["xattrs"] == {}  # type: ignore
        # the baseline followed: a scan finds nothing left to report
        assert [e for e in scan(cfg) if e.path != b(tree)] == []


def test_ctime_only_when_nothing_else_explains_it(tmp_path: Path, tree: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    a, m = tree / "a.txt", tree / "sub" / "b.bin"
    cfg = make_config(tmp_path, tree)
    scan(cfg)
    os.link(a, outside / "alias")  # a hard link made from an unwatched place: nlink, ctime
    st = m.stat()
    m.write_bytes(b"\0\1\3")  # same size; the mtime put back: only ctime and the hash tell
    os.utime(m, ns=(st.st_atime_ns, st.st_mtime_ns))
    (tree / "sub").chmod(0o700)  # mode and ctime changed: ctime is not named
    got = changes(scan(cfg), tree)
    assert got == {b(a): ("attributes-changed", ["ctime"]),
                   b(m): ("modified", ["sha256"]),
                   b(tree / "sub"): ("attributes-changed", ["mode"])}
    # without hashes, the ctime is what reveals the content change behind a restored mtime
    cfg2 = make_config(tmp_path / "outside", tree, check=["size", "mtime", "ctime"])
    scan(cfg2)
    m.write_bytes(b"\0\1\4")
    os.utime(m, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert changes(scan(cfg2), tree) == {b(m): ("attributes-changed", ["ctime"])}


def test_realtime_keeps_ctime_current(tmp_path: Path, tree: Path) -> None:
    """Operations the reconciler settles leave rows whose ctime matches the disk: a later scan
    must not report every file touched in realtime as ctime-changed."""
    cfg = make_config(tmp_path, tree)
    scan(cfg)
    a, sub = tree / "a.txt", tree / "sub"
    with Store(cfg.database) as store:
        r = Reconciler(cfg, store)
        os.link(a, sub / "hard")  # the source's link count (and ctime) changes too
        os.rename(sub / "b.bin", sub / "c.bin")
        out = r.handle([ev(FileOp.LINK, a, SHELL, 1, target_path=sub / "hard"),
                        ev(FileOp.RENAME, sub / "b.bin", SHELL, 2, target_path=sub / "c.bin")], 2)
        assert [(e.action, e.path, e.changed_attributes) for e in out] == [
            ("added", b(sub / "hard"), []), ("renamed", b(sub / "c.bin"), [])]
        sub.chmod(0o700)
        (out,) = r.handle([ev(FileOp.CHMOD, sub, SHELL, 3)], 3)
        assert (out.path, out.changed_attributes) == (b(sub), ["mode"])
    rows = stored(cfg)
    for p in (a, sub, sub / "hard", sub / "c.bin", tree):
        assert rows[b(p)]["ctime_ns"] == p.lstat().st_ctime_ns, p
    assert scan(cfg) == []
