"""The baseline's stored contents, for diffs: zlib-compressed file contents by path, a quota
(oldest dropped first) and the paths whose content the quota dropped (``was_evicted``: the next
change says why it has no diff). Part of ``vigil.fim.store.Store`` (its tables, its connection).
"""

from __future__ import annotations

import zlib
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3


class StoredContents:
    if TYPE_CHECKING:
        db: sqlite3.Connection

        def transaction(self) -> AbstractContextManager[None]: ...


    def get_content(self, path: bytes) -> bytes | None:
        row = self.db.execute("SELECT data FROM content WHERE path = ?", (path,)).fetchone()
        return zlib.decompress(row[0]) if row else None

    def put_content(self, path: bytes, data: bytes, now_ns: int) -> None:
        packed = zlib.compress(data, 6)
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO content VALUES (?, ?, ?, ?, ?)",
                            (path, packed, len(data), len(packed), now_ns))
            self.db.execute("DELETE FROM content_evicted WHERE path = ?", (path,))

    def delete_content(self, path: bytes) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM content WHERE path = ?", (path,))

    def was_evicted(self, path: bytes) -> bool:
        """Whether ``path``'s stored content was dropped by the quota (and nothing stored since)."""
        return self.db.execute("SELECT 1 FROM content_evicted WHERE path = ?",
                               (path,)).fetchone() is not None

    def content_bytes(self) -> int:
        row = self.db.execute("SELECT coalesce(sum(stored_size), 0) FROM content").fetchone()
        return int(row[0])

    def enforce_quota(self, quota_bytes: int, now_ns: int = 0) -> int:
        """Drop the oldest stored contents until the compressed total fits, remembering which
        (``was_evicted``); returns how many."""
        total = self.content_bytes()
        if total <= quota_bytes:
            return 0
        victims = []
        for path, size in self.db.execute(
                "SELECT path, stored_size FROM content ORDER BY updated_ns, path"):
            if total <= quota_bytes:
                break
            victims.append((path,))
            total -= size
        with self.transaction():
            self.db.executemany("DELETE FROM content WHERE path = ?", victims)
            self.db.executemany("INSERT OR REPLACE INTO content_evicted VALUES (?, ?)",
                                [(p, now_ns) for (p,) in victims])
        return len(victims)
