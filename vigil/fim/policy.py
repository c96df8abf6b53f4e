"""Which configured directory a path belongs to, and whether it is monitored there.

Owns the meaning of depth, ignore, restrict and nodiff for one path. Shared by the scanner and the
realtime reconciler so both agree on what is watched. Does not own parsing the patterns
(vigil.config) nor walking (vigil.fim.walk).
"""

from __future__ import annotations

import re

from vigil.config import Config, DirectoryConfig, Pattern

# Never walked into unless configured as the watched path itself.
PSEUDO_FS = frozenset({b"/proc", b"/sys", b"/dev"})


def depth_below(root: bytes, path: bytes) -> int:
    """-1 for the root itself, 0 for its direct children, 1 for grandchildren, ..."""
    if path == root:
        return -1
    rel = path[len(root):].strip(b"/")
    return rel.count(b"/")


def under(root: bytes, path: bytes) -> bool:
    """``path`` is ``root`` or below it (whole components)."""
    return path == root or path.startswith(root if root.endswith(b"/") else root + b"/")


class _Matcher:
    """Many patterns as (at most) three regex calls: the scan asks this for every file."""

    def __init__(self, patterns: tuple[Pattern, ...]) -> None:
        def join(ps: list[Pattern]) -> re.Pattern[bytes] | None:
            joined = b"|".join(b"(?:" + p.regex.pattern + b")" for p in ps)
            return re.compile(joined) if ps else None

        self.patterns: tuple[Pattern, ...] | None = None
        try:
            self.base = join([p for p in patterns if p.basename_only])
            self.full = join([p for p in patterns if not p.basename_only and not p.is_regex])
            self.search = join([p for p in patterns if p.is_regex])
        except re.error:  # e.g. a user regex with global flags "(?i)" cannot be joined
            self.patterns = patterns

    def matches(self, path: bytes) -> bool:
        if self.patterns is not None:
            return any(p.matches(path) for p in self.patterns)
        if self.base is not None and self.base.match(path.rsplit(b"/", 1)[-1]):
            return True
        if self.full is not None and self.full.match(path):
            return True
        return self.search is not None and self.search.search(path) is not None


_ANCESTOR_CACHE_MAX = 65536


class Policy:
    def __init__(self, config: Config) -> None:
        self.config = config
        # Longest first, so /etc/ssh's settings win over /etc's for /etc/ssh/sshd_config.
        self._dirs = sorted(config.directories, key=lambda d: len(d.path), reverse=True)
        # parent directory -> whether every ancestor up to its watched root may be watched
        self._ancestors_ok: dict[bytes, bool] = {}
        self._ignore: dict[bytes, _Matcher] = {}
        self._roots = {d.path: d for d in reversed(self._dirs)}   # the first of a path wins
        # a directory -> the configured tree it lies in (None: none): every path below it but
        # a configured root itself lies in the same tree, so one look-up per event
        self._owner: dict[bytes, DirectoryConfig | None] = {}

    def directory_for(self, path: bytes) -> DirectoryConfig | None:
        d = self._roots.get(path)
        if d is not None:
            return d
        parent = path.rpartition(b"/")[0] or b"/"
        if parent == path or not path.startswith(b"/"):
            return next((d for d in self._dirs if under(d.path, path)), None)
        try:
            return self._owner[parent]
        except KeyError:
            pass
        found = next((d for d in self._dirs if under(d.path, parent)), None)
        if len(self._owner) >= _ANCESTOR_CACHE_MAX:
            self._owner.clear()
        self._owner[parent] = found
        return found

    def ignored(self, path: bytes, dcfg: DirectoryConfig) -> bool:
        m = self._ignore.get(dcfg.path)
        if m is None:
            m = self._ignore[dcfg.path] = _Matcher(self.config.ignore + dcfg.ignore)
        return m.matches(path)

    def recorded(self, path: bytes, dcfg: DirectoryConfig, is_dir: bool) -> bool:
        """Whether the walker, having reached ``path``, keeps a baseline row for it."""
        if path == dcfg.path:
            return not dcfg.restrict
        max_depth = dcfg.max_depth
        if max_depth is not None and depth_below(dcfg.path, path) > max_depth:
            return False
        if self.ignored(path, dcfg):
            return False
        if dcfg.restrict:
            return not is_dir and any(p.matches(path) for p in dcfg.restrict)
        return True

    def descend(self, path: bytes, dcfg: DirectoryConfig) -> bool:
        """Whether the walker enters directory ``path`` (its own checks: depth, ignore, nesting)."""
        if path == dcfg.path:
            return True
        if path in PSEUDO_FS:
            return False
        max_depth = dcfg.max_depth
        if max_depth is not None and depth_below(dcfg.path, path) >= max_depth:
            return False
        if self.ignored(path, dcfg):
            return False
        # A nested watched directory is walked under its own settings, once.
        return self.directory_for(path) is dcfg

    def watched(self, path: bytes, is_dir: bool = False) -> DirectoryConfig | None:
        """The directory settings that monitor ``path``, or None (for realtime events: checks the
        path and every ancestor up to its watched root, as a walk would have)."""
        dcfg = self.directory_for(path)
        if dcfg is None or not self.recorded(path, dcfg, is_dir):
            return None
        first = path.rsplit(b"/", 1)[0] or b"/"
        ok = self._ancestors_ok.get(first)
        if ok is None:
            ok = True
            parent = first
            while len(parent) > len(dcfg.path) and under(dcfg.path, parent):
                if parent in PSEUDO_FS or self.ignored(parent, dcfg):
                    ok = False
                    break
                parent = parent.rsplit(b"/", 1)[0] or b"/"
            if len(self._ancestors_ok) >= _ANCESTOR_CACHE_MAX:
                self._ancestors_ok.clear()
            self._ancestors_ok[first] = ok
        return dcfg if ok else None

    def nodiff(self, path: bytes, dcfg: DirectoryConfig) -> bool:
        return any(p.matches(path) for p in dcfg.nodiff)

    def owned_elsewhere(self, path: bytes, dcfg: DirectoryConfig) -> bool:
        """True when a baseline row below ``dcfg`` belongs to a nested watched directory."""
        return self.directory_for(path) is not dcfg
