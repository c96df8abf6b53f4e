"""The baseline store on a real SQLite file: schema, migrations, permissions, paging, quota."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from vigil.fim import store as store_mod
from vigil.fim.model import FileRecord
from vigil.fim.store import SCHEMA_VERSION, Store, StoreError


def rec(path: bytes, size: int = 1, sha: str | None = "aa") -> FileRecord:
    return FileRecord(path, "file", size, 0o100644, 0, 0, 5, 7, 9,
                      {"sha256": sha} if sha else {}, None)


def test_permissions_and_pragmas(tmp_path: Path) -> None:
    db = tmp_path / "state" / "sub" / "b.db"
    with Store(db) as s:
        s.put_many([rec(b"/a")])
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert p.exists() and stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert s.schema_version == SCHEMA_VERSION
        assert s.integrity_check() == "ok"


def test_round_trip_bytes_paths(tmp_path: Path) -> None:
    odd = b"/d/new\nline\xff\xfe"
    with Store(tmp_path / "b.db") as s:
        r = rec(odd, 3)
        r.hashes["md5"] = "bb"
        r.error = "EACCES: Permission denied"
        s.put_many([r, rec(b"/d/x")])
        assert s.get(odd) == r
        assert set(s.get_many([odd, b"/d/x", b"/nope"])) == {odd, b"/d/x"}
        s.delete_many([odd])
        assert s.get(odd) is None and s.count() == 1


def test_migration_from_version_1(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for sql in store_mod.MIGRATIONS[0][1]:
        con.execute(sql)
    con.execute("INSERT INTO schema_version VALUES (1)")
    con.execute("INSERT INTO files (path, kind, size, mode, uid, gid, mtime_ns, inode, device, "
                "sha256) VALUES (x'2f61', 'file', 1, 0, 0, 0, 0, 0, 0, 'aa')")
    con.commit()
    con.close()
    with Store(db) as s:
        assert s.schema_version == SCHEMA_VERSION
        old = s.get(b"/a")
        assert old is not None and old.hashes == {"sha256": "aa"}
        r = rec(b"/b")
        r.hashes["blake3"] = "cc"  # the column migration 2 added
        s.put_many([r])
        assert s.get(b"/b") == r
        assert s.begin_scan("manual-scan", 1) == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(db)


def test_not_a_database(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    db.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="unusable"):
        Store(db)


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    with Store(tmp_path / "b.db") as s:
        with pytest.raises(RuntimeError), s.transaction():
            s.put_many([rec(b"/a")])
            raise RuntimeError
        assert s.count() == 0
        with s.scratch():
            s.put_many([rec(b"/a")])
        assert s.count() == 0


def test_iter_subtree_pages_in_byte_order(tmp_path: Path) -> None:
    paths = [b"/r", b"/r-x", b"/r.x", b"/r0", b"/q"] + [b"/r/%05d" % i for i in range(2500)]
    paths += [b"/r/\xff", b"/r/a/b"]
    with Store(tmp_path / "b.db") as s:
        s.put_many(rec(p) for p in paths)
        got = [r.path for r in s.iter_subtree(b"/r")]
        want = sorted(p for p in paths if p.startswith(b"/r/"))
        assert got == want and len(got) == 2502
        mid = want[1200]
        assert [r.path for r in s.iter_subtree(b"/r", after=mid, upto=want[1300])] == \
            want[1201:1301]


def test_rename_subtree_keeps_blobs(tmp_path: Path) -> None:
    with Store(tmp_path / "b.db") as s:
        s.put_many([rec(b"/d/a/x"), rec(b"/d/a/y\xff"), rec(b"/d/b/old")])
        s.put_content(b"/d/a/x", b"text", 1)
        s.rename_subtree(b"/d/a", b"/d/b")
        assert [r.path for r in s.iter_subtree(b"/d/b")] == [b"/d/b/x", b"/d/b/y\xff"]
        assert s.get(b"/d/b/old") is None and s.get_content(b"/d/b/x") == b"text"
        assert s.db.execute("SELECT count(*) FROM files WHERE typeof(path) != 'blob'"
                            ).fetchone()[0] == 0


def test_content_quota_drops_oldest(tmp_path: Path) -> None:
    import os
    with Store(tmp_path / "b.db") as s:
        blobs = {b"/f%d" % i: os.urandom(10_000) for i in range(5)}  # incompressible
        for i, (p, data) in enumerate(blobs.items()):
            s.put_content(p, data, now_ns=100 - i)  # /f4 is the oldest
        assert s.get_content(b"/f0") == blobs[b"/f0"]
        dropped = s.enforce_quota(25_000)
        assert dropped == 3
        assert s.content_bytes() <= 25_000
        kept = {p for p in blobs if s.get_content(p) is not None}
        assert kept == {b"/f0", b"/f1"}  # the two newest
