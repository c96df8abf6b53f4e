"""What user space can say about a path the kernel side could not walk to its end.

Owns the test "may this event with a truncated path (``PATH_TRUNC``: deeper than 64 components or
4 KiB or longer) be in a watched tree?". Such a path is not a real path: a walk from a kernel
object keeps its last components and loses the top (``/c7/c8/.../file`` for
``/etc/c1/.../file``), a path argument too long keeps its start. Its text therefore proves
nothing, and matching it against the watch list would hide a change 65 levels below ``/etc``.
What does not depend on the text is the file's device (``i_sb->s_dev``, sent with events built
from an inode): a file on a device that holds no watched tree, nor any mount below one, is
outside them all. Everything else may be inside and is reported, marked, and the watched trees
are rescanned so that the baseline learns the real path. Does not own the rescan or the marker's
rendering (``vigil.agent``, ``vigil.outputs``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from vigil import mountinfo
from vigil.events.layout import Flag

TRUNCATED: Final = int(Flag.PATH_TRUNC | Flag.PATH2_TRUNC)
_MINOR_BITS: Final = 20  # the kernel's dev_t: major << 20 | minor
_REFRESH_S: Final = 1.0  # the mount table is read again at most this often (mounts change)


def kernel_dev(major: int, minor: int) -> int:
    return (major << _MINOR_BITS) | minor


def parse_mountinfo(data: bytes) -> list[tuple[bytes, int]]:
    """(mount point, kernel device) of every mount in a /proc/PID/mountinfo text."""
    return [(m.point, kernel_dev(m.major, m.minor)) for m in mountinfo.parse(data)]


def _within(path: bytes, root: bytes) -> bool:
    return root == b"/" or path == root or path.startswith(root + b"/")


def watched_devices(roots: Iterable[bytes], mounts: list[tuple[bytes, int]]) -> set[int]:
    """The devices that may hold files of the trees at ``roots``: the mount each root is on
    (the last one over it, as mounts stack) and every mount at or below a root."""
    out: set[int] = set()
    for root in roots:
        real = os.path.realpath(root).rstrip(b"/") or b"/"
        over = [dev for point, dev in mounts if _within(real, point.rstrip(b"/") or b"/")]
        if over:
            out.add(over[-1])
        out.update(dev for point, dev in mounts if _within(point, real))
    return out


class TruncatedPaths:
    """Decides for events with truncated paths; counts what it saw."""

    def __init__(self, roots: Iterable[bytes] | None,
                 mountinfo: Path = Path("/proc/self/mountinfo")) -> None:
        # None: the watched trees are not known, so every event may be in one
        self._roots = None if roots is None else list(roots)
        self._mountinfo = mountinfo
        self._known: set[int] = set()
        self._watched: set[int] = set()
        self._read_at = float("-inf")
        self.reported = 0  # may be in a watched tree: reported with the marker
        self.outside = 0  # on a device that holds no watched tree: not reported

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < _REFRESH_S:
            return
        self._read_at = now
        try:
            mounts = parse_mountinfo(self._mountinfo.read_bytes())
        except OSError:
            mounts = []
        self._known = {dev for _, dev in mounts}
        self._watched = watched_devices(self._roots or (), mounts)

    def may_be_watched(self, device: int | None) -> bool:
        """False only when ``device`` (the kernel's dev_t of the file) is known to hold no
        watched tree; an event without a device, or on a device this mount namespace does not
        know (another namespace, a mount since the last look), may be anywhere."""
        if not device or self._roots is None:
            return True
        self._refresh()
        if device not in self._known:
            return True
        return device in self._watched

    def count(self, kept: bool) -> bool:
        if kept:
            self.reported += 1
        else:
            self.outside += 1
        return kept
