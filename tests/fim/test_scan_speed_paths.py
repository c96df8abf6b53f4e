"""The scan's fast path (regular files opened and fstat'ed without an lstat, large files handed
to the hash pool after their fstat) records exactly what an lstat-first scan did: attributes,
hashes, races between the walk and the read, batch boundaries, unsearchable directories."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from fimutil import by_path, make_config, oneshot, scan, stored

from vigil.fim import scanner as scanner_mod
from vigil.fim.store import Store

b = os.fsencode


def _assert_rows_match_disk(cfg_db: Path, paths: list[Path]) -> None:
    """Every row holds the file's lstat attributes and the sha256 of its content."""
    with Store(cfg_db) as s:
        for p in paths:
            rec = s.get(b(p))
            assert rec is not None, p
            st = os.lstat(p)
            got = (rec.kind, rec.size, rec.mode, rec.uid, rec.gid, rec.mtime_ns, rec.inode,
                   rec.device, rec.ctime_ns, rec.xattrs, rec.error)
            none: dict[str, str] = {}
            want = ("file", st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                    st.st_ino, st.st_dev, st.st_ctime_ns, none, None)
            assert got == want, p
            assert rec.hashes == {"sha256": hashlib.sha256(p.read_bytes()).hexdigest()}, p


@pytest.mark.parametrize("workers", [1, 2])
def test_sizes_around_the_inline_limit(tmp_path: Path, tree: Path, workers: int) -> None:
    limit = scanner_mod.INLINE_MAX
    sizes = [0, 1, 2047, 2048, 4096, limit - 1, limit, limit + 1, 3 << 20]
    files = []
    for n in sizes:
        p = tree / f"size-{n}"
        p.write_bytes(os.urandom(n))
        files.append(p)
    os.chown(files[1], 1234, 4321)
    files[2].chmod(0o4750)
    cfg = make_config(tmp_path, tree, scan={"hash_workers": workers})
    scan(cfg, batch_size=4)
    _assert_rows_match_disk(cfg.database, files)
    assert scan(cfg, batch_size=4) == []


def test_many_files_across_batches_with_some_vanishing(tmp_path: Path, tree: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    d = tree / "many"
    d.mkdir()
    names = [f"f{i:03d}" for i in range(40)]
    for n in names:
        (d / n).write_text(n * 3)
    cfg = make_config(tmp_path, tree)
    scan(cfg, batch_size=7)
    _assert_rows_match_disk(cfg.database, [d / n for n in names])
    # gone between the walk and the read, at and around batch boundaries
    victims = {b(d / names[i]) for i in (0, 5, 6, 7, 13, 39)}
    real = scanner_mod.build_record

    def racing(path: bytes, *a: object) -> object:
        if path in victims:
            os.unlink(path)
        return real(path, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(scanner_mod, "build_record", racing)
    evs = by_path(scan(cfg, batch_size=7))
    assert {p for p, e in evs.items() if e.action == "deleted"} == victims
    assert set(evs) == victims  # (the directory was stat'ed before its files went)
    monkeypatch.undo()
    rows = stored(cfg)
    assert not victims & set(rows)
    assert set(rows) > {b(d / n) for n in names} - victims
    assert [(e.action, e.path) for e in scan(cfg, batch_size=7)] == [
        ("attributes-changed", b(d))]  # its mtime, now
    assert scan(cfg, batch_size=7) == []


def test_file_replaced_between_walk_and_read(tmp_path: Path, tree: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / "target").write_text("t")
    for n in ("becomes-link", "becomes-fifo", "becomes-dir", "stays"):
        (tree / n).write_text(n)
    cfg = make_config(tmp_path, tree)
    real = scanner_mod.build_record

    def racing(path: bytes, *a: object) -> object:
        name = os.path.basename(path)
        if name in (b"becomes-link", b"becomes-fifo", b"becomes-dir"):
            os.unlink(path)
            if name == b"becomes-link":
                os.symlink("target", path)
            elif name == b"becomes-fifo":
                os.mkfifo(path)  # opening it for reading must not block the scan
            else:
                os.mkdir(path)
        return real(path, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(scanner_mod, "build_record", racing)
    scan(cfg)
    monkeypatch.undo()
    rows = stored(cfg)
    link = rows[b(tree / "becomes-link")]
    assert link["type"] == "symlink"
    assert link["sha256"] == hashlib.sha256(b"target").hexdigest()  # the link's target
    assert rows[b(tree / "becomes-fifo")]["type"] == "fifo"
    assert "sha256" not in rows[b(tree / "becomes-fifo")]
    assert rows[b(tree / "becomes-dir")]["type"] == "dir"
    assert rows[b(tree / "stays")]["sha256"] == hashlib.sha256(b"stays").hexdigest()
    # what the next scan sees is what the disk holds: nothing changed since
    assert [e for e in scan(cfg) if e.path != b(tree)] == []


def test_odd_bytes_in_names_across_batches(tmp_path: Path, tree: Path) -> None:
    names = [b"plain", b"\xff\xfe", b"new\nline", b"tab\there", b" lead", b"trail ",
             b"a" * 255, b"\x01ctl", b"esc\x1b[31m", b"back\\slash", b"quote'\""]
    for n in names:
        with open(b(tree) + b"/" + n, "wb") as fh:
            fh.write(n)
    cfg = make_config(tmp_path, tree)
    scan(cfg, batch_size=3)
    with Store(cfg.database) as s:
        for n in names:
            rec = s.get(b(tree) + b"/" + n)
            assert rec is not None and rec.hashes["sha256"] == hashlib.sha256(n).hexdigest(), n
    with open(b(tree) + b"/\xff\xfe", "ab") as fh:
        fh.write(b"!")
    evs = by_path(scan(cfg, batch_size=3))
    assert evs[b(tree) + b"/\xff\xfe"].action == "modified"


def test_directory_readable_but_not_searchable(public_tmp: Path) -> None:
    """Its names can be listed but nothing in it can be opened or stat'ed: the whole directory
    is unreadable (one warning), as when the walk stat'ed every entry."""
    tree = public_tmp / "tree"
    (tree / "noexec").mkdir(parents=True)
    (tree / "ok").write_text("ok")
    for n in ("f1", "f2", "f3"):
        (tree / "noexec" / n).write_text(n)
    (tree / "noexec").chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | stat.S_IWUSR)
    dbdir = public_tmp / "db"
    dbdir.mkdir()
    dbdir.chmod(0o777)
    db = str(dbdir / "b.db")
    r = oneshot("--init", "--watch", str(tree), "--db", db, user="nobody")
    assert r.returncode == 0, r.stderr
    assert f"warning: {tree / 'noexec'}: Permission denied" in r.stderr
    assert "baseline incomplete: 1 directories could not be read" in r.stderr
    assert "files could not be read" not in r.stderr
    assert "baseline: 3 entries" in r.stdout  # the root, ok, noexec: not the unlisted files
    r = oneshot("--check", "--watch", str(tree), "--db", db, user="nobody")
    assert r.returncode == 3, r.stdout + r.stderr  # nothing changed, but incomplete
    # root can read it: its files were never in the baseline, so a root check says so
    (tree / "noexec").chmod(0o755)
    r = oneshot("--check", "--watch", str(tree), "--db", db)
    assert r.returncode == 1, r.stdout + r.stderr
    added = sorted(line for line in r.stdout.splitlines() if "added" in line)
    assert len(added) == 3 and all("noexec/f" in line for line in added), r.stdout
