"""A new baseline is built beside its path without syncing and appears there whole: a crash or
an error before that leaves no database (so none claims a complete baseline), an existing
database is updated in place, and a database that appeared meanwhile is never replaced."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fimutil import ROOT, make_config, oneshot

from vigil.fim import scanner as scanner_mod
from vigil.fim.model import FileRecord
from vigil.fim.scanner import Scanner
from vigil.fim.store import Store, StoreError

b = os.fsencode


def _leftovers(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if p.name.startswith(f".{db.name}"))


def _row(path: bytes) -> FileRecord:
    return FileRecord(path, "file", 1, 0o100644, 0, 0, 1, 2, 3, {"sha256": "ab"})


def test_new_baseline_appears_whole(tmp_path: Path, tree: Path) -> None:
    db = tmp_path / "db" / "b.db"
    r = oneshot("--init", "--watch", str(tree), "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert "baseline: 4 entries" in r.stdout
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert _leftovers(db) == [] and sorted(p.name for p in db.parent.iterdir()) == ["b.db"]
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT count(*) FROM files").fetchone()[0] == 4
        assert con.execute("SELECT count(*) FROM scans WHERE finished_ns IS NOT NULL"
                           ).fetchone()[0] == 1
    finally:
        con.close()
    assert oneshot("--check", "--watch", str(tree), "--db", str(db)).returncode == 0
    (tree / "a.txt").write_text("changed\n")  # a second init updates it in place
    ino = db.stat().st_ino
    assert oneshot("--init", "--watch", str(tree), "--db", str(db)).returncode == 0
    assert db.stat().st_ino == ino and _leftovers(db) == []
    assert oneshot("--check", "--watch", str(tree), "--db", str(db)).returncode == 0


def test_init_failing_midway_leaves_no_database(tmp_path: Path, tree: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(tmp_path, tree)
    db = Path(cfg.database)
    real = scanner_mod.build_record
    seen: list[bytes] = []

    def failing(path: bytes, *a: object) -> object:
        seen.append(path)
        if len(seen) == 3:
            raise OSError(5, "Input/output error")  # like a disk failing under the scan
        return real(path, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(scanner_mod, "build_record", failing)
    with pytest.raises(OSError), Store(db, build_new=True) as s:
        list(Scanner(cfg, s, batch_size=1).scan("manual-scan"))
    assert not db.exists() and _leftovers(db) == []
    r = oneshot("--check", "--watch", str(tree), "--db", str(db))
    assert r.returncode == 2 and "no baseline" in r.stderr


def test_database_appearing_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with Store(db, build_new=True) as building:
        building.put_many([_row(b"/new")])
        with Store(db) as other:  # e.g. the agent started and created its own
            other.put_many([_row(b"/other")])
        with pytest.raises(StoreError, match="appeared while a new baseline was being built"):
            building.publish()
    assert _leftovers(db) == []
    with Store(db) as s:
        assert s.get(b"/other") is not None and s.get(b"/new") is None


def test_published_store_stays_usable(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with Store(db, build_new=True) as s:
        s.put_many([_row(b"/a")])
        assert not db.exists()
        s.publish()
        assert db.exists() and _leftovers(db) == []
        s.put_many([_row(b"/b")])  # written at the published path now
        s.publish()  # nothing left to publish
    with Store(db) as s:
        assert s.get(b"/a") is not None and s.get(b"/b") is not None


@pytest.mark.slow
def test_killed_new_baseline_leaves_no_database(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for i in range(20000):
        d = root / f"d{i % 100:02d}"
        if i < 100:
            d.mkdir(parents=True)
        (d / f"f{i}").write_bytes(os.urandom(64 + i % 1000))
    db = tmp_path / "db" / "b.db"
    db.parent.mkdir()
    killed = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "vigil.fim.oneshot", "--init", "--watch", str(root), "--db",
             str(db)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # kill once the hidden new baseline holds rows (it is built before it is published)
            while proc.poll() is None:
                wal = [p for p in db.parent.iterdir()
                       if p.name.startswith(".b.db.new-") and p.name.endswith("-wal")]
                if wal and wal[0].stat().st_size > 256 * 1024:
                    break
                time.sleep(0.002)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.returncode != -signal.SIGKILL:
            db.unlink(missing_ok=True)  # it finished first: try again
            continue
        killed += 1
        assert not db.exists(), "a killed first init left a database at its path"
        assert _leftovers(db), "the dead build's file is still there"
        r = oneshot("--check", "--watch", str(root), "--db", str(db))
        assert r.returncode == 2 and "no baseline" in r.stderr, r.stderr
        db.unlink()  # the check created an empty database: start from nothing again
        break
    assert killed, "no kill landed before the baseline was published"
    r = oneshot("--init", "--watch", str(root), "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert _leftovers(db) == []  # the dead build's file is removed by the next build
    assert oneshot("--check", "--watch", str(root), "--db", str(db)).returncode == 0
