"""Content diffs for ``report_changes`` paths: keep the last content, compare, enforce the quota.

Owns binary detection, the unified diff text and which paths may have content stored (never a
``nodiff`` path). Does not own storage itself (vigil.fim.store) nor reading files
(vigil.fim.hashing hands over the content it already read for hashing).

When the quota drops stored contents, that is counted (``evicted``) and said once per instance
(a warning: once per scan, once per realtime run), and a later change of such a file carries
``diff_unavailable: "quota"``: a change without a diff because of the quota never looks like one
where report_changes is off.
"""

from __future__ import annotations

import difflib
import logging

from vigil.config import Config, DirectoryConfig
from vigil.fim.policy import Policy
from vigil.fim.store import Store

log = logging.getLogger(__name__)

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
        self.evicted = 0  # stored contents this instance dropped to keep the quota

    def wants(self, path: bytes, dcfg: DirectoryConfig) -> bool:
        return dcfg.report_changes and not self.policy.nodiff(path, dcfg)

    def content_limit(self, path: bytes, dcfg: DirectoryConfig) -> int:
        """How large a file's content may be to be handed over for diffing (-1: never)."""
        return self.config.diff.max_file_size if self.wants(path, dcfg) else -1

    def update(self, path: bytes, dcfg: DirectoryConfig, content: bytes | None,
               now_ns: int) -> str | None:
        """Store ``content`` as the latest and return the diff against the previous one (None
        when there is nothing to compare with, or the content is unknown: too large, unreadable)."""
        return self.update_diff(path, dcfg, content, now_ns)[0]

    def update_diff(self, path: bytes, dcfg: DirectoryConfig, content: bytes | None,
                    now_ns: int, size: int = 0) -> tuple[str | None, str | None]:
        """``update``, and why there is no diff when report_changes applies but none came:
        "quota", "too-large", "unreadable" or "no-previous-content" (None: not wanted, or a
        diff was made, or the content did not change). ``size``: the file's size now."""
        if not self.wants(path, dcfg):
            return None, None
        prev = self.store.get_content(path)
        evicted = prev is None and self.store.was_evicted(path)
        if content is None:
            if prev is not None:
                self.store.delete_content(path)  # stale: a later diff against it would lie
            too_large = size > self.config.diff.max_file_size
            return None, "too-large" if too_large else "unreadable"  # quota or not
        self.store.put_content(path, content, now_ns)
        self._dirty = True
        if prev is None:
            return None, "quota" if evicted else "no-previous-content"
        if prev == content:
            return None, None
        if is_binary(prev) or is_binary(content):
            return BINARY, None
        return unified(path, prev, content), None

    def forget(self, path: bytes) -> None:
        self.store.delete_content(path)

    def enforce_quota(self, now_ns: int = 0) -> int:
        """Drop the oldest stored contents over diff.quota_mb; returns how many."""
        if not self._dirty:
            return 0
        self._dirty = False
        n = self.store.enforce_quota(self.config.diff.quota_mb << 20, now_ns)
        if n and not self.evicted:  # said once per scan / realtime run, counted every time
            log.warning("diff quota full (diff.quota_mb=%d): dropped %d stored contents, oldest "
                        "first; later changes to those files have no diff (diff_unavailable: "
                        "quota); raise the quota to keep them", self.config.diff.quota_mb, n)
        self.evicted += n
        return n
