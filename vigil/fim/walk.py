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

Regular files are not stat'ed here: the directory listing's type says what they are, and the
reader (vigil.fim.hashing.build_record) takes their attributes from the open file's fstat, which
it needs anyway (the inode it hashes), so a file costs one syscall fewer. Their ``Entry.st`` is
None. Everything else (directories, symlinks, special files, and every entry of a filesystem
whose listing gives no type) is lstat'ed (stat'ed, for a followed symlink) as before.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter

from vigil.config import DirectoryConfig
from vigil.fim.policy import Policy


@dataclass(slots=True)
class Entry:
    path: bytes
    st: os.stat_result | None  # None: a regular file per the listing, not stat'ed (see above)
    recorded: bool  # False: walked through (restrict/ignore), no baseline row
    complete: bool = True  # False: a directory whose content is unknown (unreadable, not entered)


ErrorFn = Callable[[bytes, OSError], None]


Item = tuple[bytes, bytes, os.stat_result | None, bool, bool]  # key, path, st, descend, is_dir
_key = itemgetter(0)


def _children(path: bytes, dcfg: DirectoryConfig, on_error: ErrorFn) -> list[Item] | None:
    """Sorted (key, path, stat, descend, is_dir) items of directory ``path``; None when
    unlistable. ``stat`` is None for a regular file (known from the listing's type).

    A subdirectory gives two items: its own entry at "name" and the descent into it at "name/":
    "/d/a" < "/d/a.txt" < "/d/a/b" in byte order, and the walk must say it in that order too.
    """
    out: list[Item] = []
    follow = dcfg.follow_symlinks
    probe: os.DirEntry[bytes] | None = None  # a regular file, lstat'ed if nothing else was
    stated = False
    try:
        with os.scandir(path) as it:
            for e in it:
                # d_type: no syscall (a filesystem without it costs an lstat, as before)
                if e.is_file(follow_symlinks=False):
                    out.append((e.name, e.path, None, False, False))
                    if probe is None:
                        probe = e
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                    stated = True
                    if follow and stat.S_ISLNK(st.st_mode):
                        with contextlib.suppress(OSError):  # dangling: keep the link itself
                            st = os.stat(e.path)
                except FileNotFoundError:
                    continue  # vanished between readdir and stat
                if stat.S_ISDIR(st.st_mode):
                    out.append((e.name, e.path, st, False, True))
                    out.append((e.name + b"/", e.path, st, True, True))
                else:
                    out.append((e.name, e.path, st, False, False))
            if probe is not None and not stated:
                # A directory that can be read but not searched lists names whose lstat fails:
                # unlistable, as when every entry was stat'ed here (one lstat says it).
                with contextlib.suppress(FileNotFoundError):
                    probe.stat(follow_symlinks=False)
    except FileNotFoundError:
        return []
    except OSError as err:
        on_error(path, err)
        return None
    out.sort(key=_key)
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
    stack: list[Iterator[Item]] = [iter(top)]
    active: list[tuple[int, int]] = [(rst.st_dev, rst.st_ino)]  # loop guard (followed links)
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            active.pop()
            continue
        _, path, st, descend, is_dir = item
        if is_dir and policy.directory_for(path) is not dcfg:
            continue  # a nested watched directory: walked on its own
        if not descend:
            yield Entry(path, st, policy.recorded(path, dcfg, is_dir))
            continue
        assert st is not None  # a directory is always stat'ed
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
