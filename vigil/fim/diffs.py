"""Content diffs for ``report_changes`` paths: keep the last content, compare, enforce the quota.

Owns binary detection, the unified diff text and which paths may have content stored (never a
``nodiff`` path). Does not own storage itself (vigil.fim.store) nor reading files
(vigil.fim.hashing hands over the content it already read for hashing).
"""

from __future__ import annotations

import difflib

from vigil.config import Config, DirectoryConfig
from vigil.fim.policy import Policy
from vigil.fim.store import Store

BINARY = "binary"
MAX_DIFF_CHARS = 64 * 1024  # an event is not the place for a whole rewritten file


def is_binary(data: bytes) -> bool:
    if b"\0" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def unified(path: bytes, old: bytes, new: bytes) -> str:
    name = path.decode("utf-8", "replace")  # a header, not a key: must be valid text for JSON
    lines = difflib.unified_diff(old.decode("utf-8").splitlines(keepends=True),
                                 new.decode("utf-8").splitlines(keepends=True),
                                 fromfile=f"a{name}", tofile=f"b{name}", n=3)
    out = []
    size = 0
    for line in lines:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
        size += len(line)
        if size > MAX_DIFF_CHARS:
            out.append("... (diff truncated)\n")
            break
    return "".join(out)


class ContentDiffs:
    def __init__(self, config: Config, store: Store, policy: Policy) -> None:
        self.config = config
        self.store = store
        self.policy = policy
        self._dirty = False

    def wants(self, path: bytes, dcfg: DirectoryConfig) -> bool:
        return dcfg.report_changes and not self.policy.nodiff(path, dcfg)

    def content_limit(self, path: bytes, dcfg: DirectoryConfig) -> int:
        """How large a file's content may be to be handed over for diffing (-1: never)."""
        return self.config.diff.max_file_size if self.wants(path, dcfg) else -1

    def update(self, path: bytes, dcfg: DirectoryConfig, content: bytes | None,
               now_ns: int) -> str | None:
        """Store ``content`` as the latest and return the diff against the previous one (None
        when there is nothing to compare with, or the content is unknown: too large, unreadable)."""
        if not self.wants(path, dcfg):
            return None
        prev = self.store.get_content(path)
        if content is None:
            if prev is not None:
                self.store.delete_content(path)  # stale: a later diff against it would lie
            return None
        self.store.put_content(path, content, now_ns)
        self._dirty = True
        if prev is None or prev == content:
            return None
        if is_binary(prev) or is_binary(content):
            return BINARY
        return unified(path, prev, content)

    def forget(self, path: bytes) -> None:
        self.store.delete_content(path)

    def enforce_quota(self) -> None:
        if self._dirty:
            self.store.enforce_quota(self.config.diff.quota_mb << 20)
            self._dirty = False
