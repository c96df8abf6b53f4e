"""The FIM baseline: one SQLite file holding a row per watched path plus the stored contents used
for diffs.

Owns the schema, its version and migrations, durability settings, file permissions of the state,
and batched reads/writes. Does not own deciding what changed (vigil.fim.model.compare) or walking
the disk (vigil.fim.scanner).

Durability. The database runs in WAL mode with ``synchronous=NORMAL``. The requirement is that a
kill -9 at any moment leaves each file's row either old or new, never half-written: that is
atomicity, which WAL gives in every synchronous mode (a transaction is visible only once its commit
frame is in the WAL, and a torn tail is ignored on recovery). A process kill cannot lose a
committed transaction either, because the WAL pages are already in the kernel's page cache when
COMMIT returns. What NORMAL gives up relative to FULL is durability of the last transactions
across a power loss (no fsync per commit); the database still comes back consistent, one step
older, and the next startup check reports those changes again. A repeated alert is acceptable,
while an fsync per batch would cost a scan of a cold tree dearly, so NORMAL it is.

A new baseline (``Store(path, build_new=True)`` when ``path`` does not exist: `vigil scan --init`)
is built in a hidden file beside it with ``synchronous=OFF`` (creating a database and every
checkpoint would otherwise sync), and ``publish`` makes it appear at ``path`` in one step once it
is whole: flushed to disk, then linked (never over a database that appeared meanwhile). A crash
or power loss before that leaves no database at ``path``, so nothing there claims a complete
baseline; the next build removes what a dead one left.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from vigil.fim.model import FileRecord
from vigil.fim.store_contents import StoredContents
from vigil.kernel.errors import VigilError

HASH_COLUMNS = ("sha256", "sha1", "md5", "blake3")  # _record_to_row spells them out too
_COLS = ("path", "kind", "size", "mode", "uid", "gid", "mtime_ns", "inode", "device",
         *HASH_COLUMNS, "error", "ctime_ns", "xattrs", "last_seen_scan")
_SELECT = "SELECT " + ", ".join(_COLS[:-1]) + " FROM files"
_PAGE = 1000
_IN_CHUNK = 500  # host parameters per IN (...) query, well under SQLite's limit
_PER_PATH = ("files", "content", "content_evicted")  # tables keyed by a file's path

# Each migration runs in one transaction together with the version bump: a crash mid-migration
# leaves the previous version intact. Append only; never edit a released step.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE files (
            path BLOB PRIMARY KEY NOT NULL, kind TEXT NOT NULL, size INTEGER NOT NULL,
            mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, device INTEGER NOT NULL,
            sha256 TEXT, sha1 TEXT, md5 TEXT, error TEXT, last_seen_scan INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
        """CREATE TABLE content (
            path BLOB PRIMARY KEY NOT NULL, data BLOB NOT NULL, size INTEGER NOT NULL,
            stored_size INTEGER NOT NULL, updated_ns INTEGER NOT NULL
        )""",
        "CREATE INDEX content_by_age ON content(updated_ns)",
    ]),
    (2, [
        "ALTER TABLE files ADD COLUMN blake3 TEXT",
        """CREATE TABLE scans (id INTEGER PRIMARY KEY, source TEXT NOT NULL,
            started_ns INTEGER NOT NULL, finished_ns INTEGER, files INTEGER)""",
    ]),
    (3, [
        # NULL in rows of older versions: unknown, compared once a scan has recorded them
        "ALTER TABLE files ADD COLUMN ctime_ns INTEGER",
        "ALTER TABLE files ADD COLUMN xattrs TEXT",  # JSON {security.* name: hex value}
        # Watched directories whose first scan completed: a directory not in here is
        # baselined silently (its files are not "added"), like AIDE's and Wazuh's first scan.
        """CREATE TABLE roots (path BLOB PRIMARY KEY NOT NULL, established_ns INTEGER NOT NULL,
            files INTEGER) WITHOUT ROWID""",
        # Stored contents dropped by the diff quota: the next change says why it has no diff.
        """CREATE TABLE content_evicted (path BLOB PRIMARY KEY NOT NULL,
            evicted_ns INTEGER NOT NULL) WITHOUT ROWID""",
        "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT) WITHOUT ROWID",
        # A database that already holds rows predates `roots`: which directories had a baseline
        # is decided from their rows on first use (Store.adopt_legacy_roots), so upgrading never
        # silences a change to a directory that was baselined before.
        "INSERT INTO meta SELECT 'legacy_roots', '1' WHERE EXISTS (SELECT 1 FROM files)",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class StoreError(VigilError):
    """The baseline database cannot be opened, is from a newer Vigil, or is corrupt."""


def subtree_bounds(root: bytes) -> tuple[bytes, bytes]:
    """[lo, hi) of the paths strictly below ``root`` in byte order ('0' follows '/')."""
    prefix = root if root.endswith(b"/") else root + b"/"
    return prefix, prefix[:-1] + b"0"


def _row_to_record(row: tuple[Any, ...]) -> FileRecord:
    hashes = {a: row[9 + i] for i, a in enumerate(HASH_COLUMNS) if row[9 + i] is not None}
    raw = row[15]
    xattrs = None if raw is None else {} if raw == "{}" else json.loads(raw)
    return FileRecord(bytes(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                      row[8], hashes, row[13], row[14], xattrs)


def _record_to_row(r: FileRecord, scan_id: int) -> tuple[Any, ...]:
    x = r.xattrs
    xattrs = None if x is None else "{}" if not x else json.dumps(
        x, sort_keys=True, separators=(",", ":"))
    h = r.hashes  # HASH_COLUMNS, spelt out: this runs once per file of a scan
    return (r.path, r.kind, r.size, r.mode, r.uid, r.gid, r.mtime_ns, r.inode, r.device,
            h.get("sha256"), h.get("sha1"), h.get("md5"), h.get("blake3"), r.error, r.ctime_ns,
            xattrs, scan_id)


def _private_file(path: Path) -> None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _discard(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _discard_dead_builds(path: Path) -> None:
    """Remove the new baselines that a killed `--init` left beside ``path``."""
    for p in path.parent.glob(f".{path.name}.new-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue  # its -wal/-shm: they go with it
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _discard(p)
        except PermissionError:
            pass  # alive, someone else's


def _sync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store(StoredContents):
    """The baseline database. A context manager; one connection, used from one thread."""

    def __init__(self, path: Path, *, build_new: bool = False) -> None:
        """``build_new``: when ``path`` does not exist, build the database beside it until
        ``publish`` (see the module docstring); an existing one is opened in place."""
        self.path = Path(path)
        self._building: Path | None = None  # the hidden file being built (build_new)
        parent = self.path.parent
        try:
            if not parent.exists():
                parent.mkdir(mode=0o700, parents=True)
                parent.chmod(0o700)  # mkdir's mode is filtered by the umask
            if build_new and not os.path.lexists(self.path):
                _discard_dead_builds(self.path)
                self._building = parent / f".{self.path.name}.new-{os.getpid()}"
                _discard(self._building)
            target = self._building or self.path
            _private_file(target)
            for suffix in ("-wal", "-shm"):
                side = Path(f"{target}{suffix}")
                if side.exists():
                    side.chmod(0o600)
            # SQLite creates -wal/-shm with the database file's mode, so they are 0600 too.
            self.db = sqlite3.connect(target, isolation_level=None, timeout=10.0)
        except (OSError, sqlite3.Error) as e:
            if self._building is not None:
                _discard(self._building)
            raise StoreError(f"cannot open baseline database {self.path}: {e}") from None
        self._depth = 0
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # see the module docstring: NORMAL in place, OFF for a database not yet published
            self.db.execute(f"PRAGMA synchronous={'OFF' if self._building else 'NORMAL'}")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(f"baseline database {self.path} is unusable: {e}") from None

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()
        if self._building is not None:  # never published: no baseline at all, as after a crash
            _discard(self._building)
            self._building = None

    def publish(self) -> None:
        """Put a database built with ``build_new`` at its path, whole and on disk (the store
        stays open, there). Nothing to do for a database opened in place."""
        building = self._building
        if building is None:
            return
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.close()  # the last connection: the WAL is folded in and removed
            _sync(building)
            os.link(building, self.path)  # unlike rename, never over another database
            _sync(self.path.parent)
            self._building = None
            _discard(building)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            self.db.execute("PRAGMA synchronous=NORMAL")
        except FileExistsError:
            raise StoreError(f"baseline database {self.path} appeared while a new baseline was "
                             "being built: it was left as it is; run the init again") from None
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot write baseline database {self.path}: {e}") from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise StoreError(f"baseline database {self.path} has schema version {current}, "
                             f"newer than this Vigil ({SCHEMA_VERSION})")
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            with self.transaction():
                if self.schema_version >= version:  # another process migrated meanwhile
                    continue
                for sql in statements:
                    self.db.execute(sql)
                self.db.execute("DELETE FROM schema_version")
                self.db.execute("INSERT INTO schema_version VALUES (?)", (version,))

    @property
    def schema_version(self) -> int:
        row = self.db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (nested uses join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    @contextmanager
    def scratch(self) -> Iterator[None]:
        """A transaction that is always rolled back: lets a read-only check reuse write paths."""
        if self._depth:
            raise StoreError("scratch() inside a transaction")
        self.db.execute("BEGIN")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self.db.execute("ROLLBACK")

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- file rows -----------------------------------------------------------------------------

    def get(self, path: bytes) -> FileRecord | None:
        row = self.db.execute(_SELECT + " WHERE path = ?", (path,)).fetchone()
        return _row_to_record(row) if row else None

    def get_many(self, paths: list[bytes]) -> dict[bytes, FileRecord]:
        out: dict[bytes, FileRecord] = {}
        for i in range(0, len(paths), _IN_CHUNK):
            chunk = paths[i:i + _IN_CHUNK]
            sql = _SELECT + f" WHERE path IN ({','.join('?' * len(chunk))})"
            for row in self.db.execute(sql, chunk):
                rec = _row_to_record(row)
                out[rec.path] = rec
        return out

    def iter_subtree(self, root: bytes, after: bytes | None = None,
                     upto: bytes | None = None) -> Iterator[FileRecord]:
        """Rows strictly below ``root`` in byte order, in (after, upto], fetched a page at a time
        so a million-row subtree never sits in memory."""
        lo, hi = subtree_bounds(root)
        cursor = after if after is not None and after >= lo else None
        while True:
            if cursor is None:
                sql, args = _SELECT + " WHERE path >= ? AND path < ?", [lo, hi]
            else:
                sql, args = _SELECT + " WHERE path > ? AND path < ?", [cursor, hi]
            if upto is not None:
                sql += " AND path <= ?"
                args.append(upto)
            rows = self.db.execute(sql + f" ORDER BY path LIMIT {_PAGE}", args).fetchall()
            for row in rows:
                yield _row_to_record(row)
            if len(rows) < _PAGE:
                return
            cursor = bytes(rows[-1][0])

    def put_many(self, records: Iterable[FileRecord], scan_id: int = 0) -> None:
        rows = [_record_to_row(r, scan_id) for r in records]
        if not rows:
            return
        sql = (f"INSERT OR REPLACE INTO files ({', '.join(_COLS)}) "
               f"VALUES ({', '.join('?' * len(_COLS))})")
        with self.transaction():
            self.db.executemany(sql, rows)

    def delete_many(self, paths: Iterable[bytes]) -> None:
        rows = [(p,) for p in paths]
        if rows:
            with self.transaction():
                for table in _PER_PATH:
                    self.db.executemany(f"DELETE FROM {table} WHERE path = ?", rows)

    def delete_subtree(self, root: bytes) -> None:
        lo, hi = subtree_bounds(root)
        with self.transaction():
            for table in _PER_PATH:
                self.db.execute(f"DELETE FROM {table} WHERE path >= ? AND path < ?", (lo, hi))

    def rename_subtree(self, old: bytes, new: bytes) -> None:
        """Move the rows below directory ``old`` to below ``new`` (a directory was renamed)."""
        lo, hi = subtree_bounds(old)
        new_prefix = subtree_bounds(new)[0]
        with self.transaction():
            self.delete_subtree(new)
            for table in _PER_PATH:
                self.db.execute(
                    # || yields TEXT, which sorts after every BLOB: cast back, or range scans
                    # miss the row.
                    f"UPDATE {table} SET path = CAST(? || substr(path, ?) AS BLOB) "
                    "WHERE path >= ? AND path < ?",
                    (new_prefix, len(lo) + 1, lo, hi))

    def symlinks(self) -> list[bytes]:
        """The paths of every symlink in the baseline (vigil.watchlist follows those that lead
        into a watched tree)."""
        return [r[0] for r in self.db.execute("SELECT path FROM files WHERE kind = 'symlink'")]

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM files").fetchone()[0])

    # -- scans ---------------------------------------------------------------------------------

    def begin_scan(self, source: str, now_ns: int) -> int:
        with self.transaction():
            cur = self.db.execute("INSERT INTO scans (source, started_ns) VALUES (?, ?)",
                                  (source, now_ns))
        return int(cur.lastrowid or 0)

    def end_scan(self, scan_id: int, now_ns: int, files: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE scans SET finished_ns = ?, files = ? WHERE id = ?",
                            (now_ns, files, scan_id))

    def last_complete_scan(self) -> int | None:
        row = self.db.execute("SELECT max(finished_ns) FROM scans").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    # -- established roots (vigil.fim.scanner: a directory's first scan is silent) -------------

    def established(self) -> set[bytes]:
        return {bytes(p) for (p,) in self.db.execute("SELECT path FROM roots")}

    def mark_established(self, root: bytes, now_ns: int, files: int | None) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO roots VALUES (?, ?, ?)", (root, now_ns, files))

    def legacy_roots_pending(self) -> bool:
        """True until the roots of a database from before schema 3 have been adopted."""
        return self.db.execute("SELECT 1 FROM meta WHERE key = 'legacy_roots'").fetchone() \
            is not None

    def has_rows(self, root: bytes, owned: Callable[[bytes], bool]) -> bool:
        """Whether the baseline holds ``root`` or a row below it that ``owned`` accepts."""
        if self.get(root) is not None:
            return True
        return any(owned(r.path) for r in self.iter_subtree(root))

    def adopt_legacy_roots(self, roots: Iterable[bytes], now_ns: int) -> None:
        """Record ``roots`` (those with rows in a pre-schema-3 database) as established, once."""
        with self.transaction():
            for root in roots:
                self.db.execute("INSERT OR IGNORE INTO roots VALUES (?, ?, NULL)", (root, now_ns))
            self.db.execute("DELETE FROM meta WHERE key = 'legacy_roots'")
