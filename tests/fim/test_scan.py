"""Scans against a real tree and the real baseline file: every attribute, deletions across
batches, special, unreadable, vanishing and over-size files, diffs and the quota."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from fimutil import by_path, make_config, scan, stored

from vigil.fim import scanner as scanner_mod
from vigil.fim.store import Store

b = os.fsencode


def test_init_then_no_changes(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree)
    # the first scan of a directory establishes its baseline: one event, not one per file
    (first,) = scan(cfg)
    assert (first.action, first.path, first.source) == ("baseline-established", b(tree),
                                                        "manual-scan")
    assert first.scan is not None and first.scan["files"] == 4
    assert first.scan["duration_s"] >= 0
    rows = stored(cfg)
    assert set(rows) == {b(tree), b(tree / "a.txt"), b(tree / "sub"), b(tree / "sub/b.bin")}
    import hashlib
    assert rows[b(tree / "a.txt")]["sha256"] == hashlib.sha256(b"alpha\n").hexdigest()
    assert scan(cfg) == []
    (tree / "new.txt").write_text("n")  # once established, an addition is a change
    assert [(e.action, e.path) for e in scan(cfg) if e.path != b(tree)] == [
        ("added", b(tree / "new.txt"))]


def test_every_attribute_change(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree)
    f = tree / "a.txt"
    files = {n: tree / n for n in ("size", "mode", "owner", "group", "mtime", "inode", "hash")}
    for p in files.values():
        p.write_text("same\n")
    scan(cfg)
    files["size"].write_text("longer content\n")
    files["mode"].chmod(0o600)
    os.chown(files["owner"], 1234, -1)
    os.chown(files["group"], -1, 4321)
    st = files["mtime"].stat()
    os.utime(files["mtime"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    tmp = tree / "inode.new"
    tmp.write_text("same\n")
    os.utime(tmp, ns=(files["inode"].stat().st_atime_ns, files["inode"].stat().st_mtime_ns))
    os.replace(tmp, files["inode"])
    st = files["hash"].stat()
    files["hash"].write_text("diff\n")  # same size, mtime put back: only the hash tells
    os.utime(files["hash"], ns=(st.st_atime_ns, st.st_mtime_ns))
    evs = by_path(scan(cfg))
    got = {p.name: (evs[b(p)].action, evs[b(p)].changed_attributes) for p in files.values()}
    assert got == {
        "size": ("modified", ["size", "mtime", "sha256"]),
        "mode": ("attributes-changed", ["mode"]),
        "owner": ("attributes-changed", ["uid"]),
        "group": ("attributes-changed", ["gid"]),
        "mtime": ("attributes-changed", ["mtime"]),
        "inode": ("attributes-changed", ["inode"]),
        "hash": ("modified", ["sha256"]),
    }
    owner, mode = evs[b(files["owner"])], evs[b(files["mode"])]
    assert owner.after["uid"] == 1234 and owner.before["uid"] == 0
    assert mode.before["mode"] == "0644" and mode.after["mode"] == "0600"
    assert b(f) not in evs  # untouched
    assert set(evs) - {b(p) for p in files.values()} == {b(tree)}  # the directory's mtime


def test_check_subset_and_hash_algorithms(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree, check=["size", "hashes"], hashes=["sha1", "md5"])
    scan(cfg)
    added = stored(cfg)[b(tree / "a.txt")]
    assert set(added) >= {"sha1", "md5"} and "sha256" not in added
    (tree / "a.txt").chmod(0o600)
    assert scan(cfg) == []  # mode is not checked
    (tree / "a.txt").write_text("alphA\n")
    ev = by_path(scan(cfg))[b(tree / "a.txt")]
    assert ev.changed_attributes == ["sha1", "md5"]


def test_deletions_across_batch_boundaries(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree)
    names = [f"f{i:03d}" for i in range(60)]
    for n in names:
        (tree / "sub" / n).write_text(n)
    (tree / "sub" / "deep" / "er").mkdir(parents=True)
    (tree / "sub" / "deep" / "er" / "x").write_text("x")
    scan(cfg, batch_size=7)
    gone = [names[i] for i in (0, 6, 7, 13, 14, 30, 59)]
    for n in gone:
        (tree / "sub" / n).unlink()
    import shutil
    shutil.rmtree(tree / "sub" / "deep")
    evs = by_path(scan(cfg, batch_size=7))
    deleted = sorted(p for p, e in evs.items() if e.action == "deleted")
    want = sorted([b(tree / "sub" / n) for n in gone] + [
        b(tree / "sub/deep"), b(tree / "sub/deep/er"), b(tree / "sub/deep/er/x")])
    assert deleted == want
    assert set(evs) - set(deleted) == {b(tree / "sub")}  # its mtime
    assert scan(cfg, batch_size=7) == []


def test_odd_names(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree)
    odd = b(tree) + b"/new\nline \xff\xfe.txt"
    with open(odd, "wb") as fh:
        fh.write(b"x")
    scan(cfg)
    with Store(cfg.database) as s:
        assert s.get(odd) is not None
    with open(odd, "ab") as fh:
        fh.write(b"y")
    assert by_path(scan(cfg))[odd].action == "modified"


def test_special_files_attributes_only(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree)
    os.mkfifo(tree / "fifo")  # opening it for reading would block the scan forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree / "sock"))
    kinds = {"fifo": "fifo", "sock": "socket"}
    if os.geteuid() == 0:
        os.mknod(tree / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        kinds["null"] = "chardev"
    scan(cfg)
    rows = stored(cfg)
    for name, kind in kinds.items():
        after = rows[b(tree / name)]
        assert after["type"] == kind and "sha256" not in after, name
    (tree / "fifo").chmod(0o600)
    assert by_path(scan(cfg))[b(tree / "fifo")].changed_attributes == ["mode"]
    sock.close()


def test_symlinks(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree)
    (tree / "link").symlink_to("a.txt")
    scan(cfg)
    (tree / "link").unlink()
    (tree / "link").symlink_to("sub/b.bin")  # retargeted
    ev = by_path(scan(cfg))[b(tree / "link")]
    assert ev.action == "modified" and "sha256" in ev.changed_attributes
    # followed: the link's target content is what is hashed
    (tmp_path / "f").mkdir()
    cfg2 = make_config(tmp_path / "f", tree, follow_symlinks=True)
    scan(cfg2)
    rows = stored(cfg2)
    assert rows[b(tree / "link")]["sha256"] == rows[b(tree / "sub/b.bin")]["sha256"]


def test_size_limit(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree, scan={"max_file_size": 100})
    (tree / "big").write_bytes(b"x" * 101)
    scan(cfg)
    rows = stored(cfg)
    assert "sha256" not in rows[b(tree / "big")]
    assert "too large" in rows[b(tree / "big")]["error"]
    assert "sha256" in rows[b(tree / "a.txt")]


def test_vanishing_file_is_skipped(tmp_path: Path, tree: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(tmp_path, tree)
    real = scanner_mod.build_record
    victim = b(tree / "a.txt")

    def racing(path: bytes, *a: object) -> object:
        if path == victim:
            os.unlink(path)  # gone between the walk and the read
        return real(path, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(scanner_mod, "build_record", racing)
    scan(cfg)
    rows = stored(cfg)
    assert victim not in rows and b(tree / "sub/b.bin") in rows


def test_depth_ignore_restrict(tmp_path: Path, tree: Path) -> None:
    (tree / "sub" / "deeper").mkdir()
    (tree / "sub" / "deeper" / "x.conf").write_text("x")
    (tree / "sub" / "y.conf").write_text("y")
    (tree / "z.swp").write_text("z")
    cfg = make_config(tmp_path, tree, depth=1, ignore=["*.swp"], restrict=["*.conf", "*.txt"])
    scan(cfg)
    assert set(stored(cfg)) == {b(tree / "a.txt"), b(tree / "sub/y.conf")}


def test_other_filesystem_not_entered_with_mounts_skip(tmp_path: Path, tree: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    import subprocess
    mnt = tree / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "inside").write_text("x")
        cfg = make_config(tmp_path, tree, mounts="skip")
        scan(cfg)
        paths = set(stored(cfg))
        assert b(mnt) in paths and b(mnt / "inside") not in paths
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_content_diffs_binary_nodiff(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree, report_changes=True, nodiff=["secret*"])
    (tree / "secret.txt").write_text("password=1\n")
    scan(cfg)
    with Store(cfg.database) as s:
        assert s.get_content(b(tree / "a.txt")) == b"alpha\n"
        assert s.get_content(b(tree / "secret.txt")) is None
    (tree / "a.txt").write_text("alpha\nbeta\n")
    (tree / "sub" / "b.bin").write_bytes(b"\0\1\3")
    (tree / "secret.txt").write_text("password=2\n")
    evs = by_path(scan(cfg))
    assert evs[b(tree / "a.txt")].diff == (
        f"--- a{tree}/a.txt\n+++ b{tree}/a.txt\n@@ -1 +1,2 @@\n alpha\n+beta\n")
    assert evs[b(tree / "sub/b.bin")].diff == "binary"
    assert evs[b(tree / "secret.txt")].diff is None
    with Store(cfg.database) as s:
        assert s.get_content(b(tree / "secret.txt")) is None
        assert s.get_content(b(tree / "a.txt")) == b"alpha\nbeta\n"


def test_content_quota_oldest_first(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree, report_changes=True,
                      diff={"quota_mb": 1, "max_file_size": 300_000})
    scan(cfg)
    for i in range(8):  # 299 KB of hex text each, ~160 KB compressed: 1.3 MB in all
        (tree / f"big{i}.txt").write_text(os.urandom(150_000).hex()[:299_000])
    scan(cfg)
    with Store(cfg.database) as s:
        assert s.content_bytes() <= 1 << 20
        assert s.get_content(b(tree / "a.txt")) is None  # the oldest went first
        kept = [i for i in range(8) if s.get_content(b(tree / f"big{i}.txt")) is not None]
        assert 4 <= len(kept) < 8


def test_blake3_when_installed(tmp_path: Path, tree: Path) -> None:
    blake3 = pytest.importorskip("blake3")
    cfg = make_config(tmp_path, tree, hashes=["sha256", "blake3"])
    scan(cfg)
    after = stored(cfg)[b(tree / "a.txt")]
    assert after["blake3"] == blake3.blake3(b"alpha\n").hexdigest()
