"""Walking one watched directory: a depth-first stream of (path, stat) in byte order.

Owns the traversal rules: bytes paths via os.scandir, other filesystems mounted below the root
entered or not by the directory's ``mounts`` setting (never a pseudo filesystem: vigil.fim.mounts),
never entering /proc, /sys or /dev unless that is the root, depth/ignore/restrict, symlink
following with loop protection, vanished and unreadable directories. Does not read file contents
(vigil.fim.hashing) nor compare with the baseline (vigil.fim.scanner).

The order is the baseline's (SQLite compares BLOBs with memcmp): siblings are sorted by their name,
with "/" appended to directory names, so a directory's subtree comes exactly where its path prefix
sorts. The scanner relies on it to merge the walk with the stored rows and find deletions without
holding either side in memory; only one directory listing per level is held at a time.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vigil.config import DirectoryConfig
from vigil.fim.policy import Policy


@dataclass(slots=True)
class Entry:
    path: bytes
    st: os.stat_result
    recorded: bool  # False: walked through (restrict/ignore), no baseline row
    complete: bool = True  # False: a directory whose content is unknown (unreadable, not entered)


ErrorFn = Callable[[bytes, OSError], None]


def _children(path: bytes, dcfg: DirectoryConfig,
              on_error: ErrorFn) -> list[tuple[bytes, bytes, os.stat_result, bool]] | None:
    """Sorted (key, path, stat, descend) items of directory ``path``; None when unlistable.

    A subdirectory gives two items: its own entry at "name" and the descent into it at "name/":
    "/d/a" < "/d/a.txt" < "/d/a/b" in byte order, and the walk must say it in that order too.
    """
    out = []
    try:
        with os.scandir(path) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                    if dcfg.follow_symlinks and stat.S_ISLNK(st.st_mode):
                        with contextlib.suppress(OSError):  # dangling: keep the link itself
                            st = os.stat(e.path)
                except FileNotFoundError:
                    continue  # vanished between readdir and stat
                out.append((e.name, e.path, st, False))
                if stat.S_ISDIR(st.st_mode):
                    out.append((e.name + b"/", e.path, st, True))
    except FileNotFoundError:
        return []
    except OSError as err:
        on_error(path, err)
        return None
    out.sort(key=lambda t: t[0])
    return out


def walk(dcfg: DirectoryConfig, policy: Policy, on_error: ErrorFn,
         pseudo_devices: frozenset[int] = frozenset()) -> Iterator[Entry]:
    """The entries of ``dcfg``'s tree in byte order; ``pseudo_devices`` (st_dev values, from
    vigil.fim.mounts.pseudo_devices) are never entered."""
    root = dcfg.path
    try:
        rst = os.stat(root)  # the configured path itself may be a symlink: follow it
    except OSError as err:
        on_error(root, err)
        return
    is_dir = stat.S_ISDIR(rst.st_mode)
    yield Entry(root, rst, policy.recorded(root, dcfg, is_dir))
    if not is_dir:
        return
    top = _children(root, dcfg, on_error)
    if top is None:
        yield Entry(root, rst, recorded=False, complete=False)
        return
    dev = rst.st_dev
    stack: list[Iterator[tuple[bytes, bytes, os.stat_result, bool]]] = [iter(top)]
    active: list[tuple[int, int]] = [(rst.st_dev, rst.st_ino)]  # loop guard (followed links)
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            active.pop()
            continue
        _, path, st, descend = item
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and policy.directory_for(path) is not dcfg:
            continue  # a nested watched directory: walked on its own
        if not descend:
            yield Entry(path, st, policy.recorded(path, dcfg, is_dir))
            continue
        if not policy.descend(path, dcfg) or (st.st_dev, st.st_ino) in active:
            continue  # not monitored below (depth, ignore, /proc...), or a symlink loop
        enter = st.st_dev == dev or (dcfg.mounts == "include"
                                     and st.st_dev not in pseudo_devices)
        kids = _children(path, dcfg, on_error) if enter else None
        if kids is None:  # unreadable, or a filesystem not entered: what is below is unknown
            yield Entry(path, st, recorded=False, complete=False)
            continue
        stack.append(iter(kids))
        active.append((st.st_dev, st.st_ino))
