"""Reading one path into a `FileRecord`: attributes, hashes, and (for diffs) the content.

Owns how files are opened (never following a symlink unless asked, never blocking on a fifo that
replaced a file, never opening special files), chunked hashing and per-file errors. Does not own
walking (vigil.fim.walk), scheduling work across threads (vigil.fim.scanner) or storage.

A regular file the walk did not stat (its listing said "regular file") costs open, fstat,
flistxattr, one read and close: its attributes are the open file's, which is the inode hashed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Any, Protocol

from vigil.config import DirectoryConfig
from vigil.fim.model import FileRecord, kind_of

CHUNK = 1 << 20  # read size: large enough to amortise syscalls, small enough to stay flat
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> Any: ...
    def hexdigest(self) -> str: ...


def _hasher(algo: str) -> _Hasher:
    if algo == "blake3":
        import blake3  # optional extra; the configuration already checked it is installed

        hasher: _Hasher = blake3.blake3()
        return hasher
    return _CONSTRUCTORS[algo]()


# hashlib.sha256() is a direct C call; hashlib.new("sha256") looks the name up every time.
_CONSTRUCTORS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1, "md5": hashlib.md5}


def _digests(algos: tuple[str, ...], data: bytes) -> dict[str, str]:
    """The hex digests of ``data`` (all of it in memory)."""
    out = {}
    for algo in algos:
        ctor = _CONSTRUCTORS.get(algo)
        if ctor is not None:
            out[algo] = ctor(data).hexdigest()
        else:
            h = _hasher(algo)
            h.update(data)
            out[algo] = h.hexdigest()
    return out


@dataclass(slots=True)
class Limits:
    max_file_size: int  # larger regular files get attributes only
    content_upto: int  # keep the content of files up to this size (diffs); -1 = never
    # For a file the walk did not stat (build_record's st=None): a regular file larger than this
    # is not read by that call, which raises Offload (for a worker thread); None: read them all.
    inline_max: int | None = None


Built = tuple[FileRecord, bytes | None] | None


class Offload(Exception):
    """build_record(path, None, ...) found a regular file over Limits.inline_max: call
    build_record(path, self.st, ...) on a worker thread."""

    def __init__(self, st: os.stat_result) -> None:
        super().__init__("large file: hash it on a worker thread")
        self.st = st


def _error_text(e: OSError) -> str:
    name = errno.errorcode.get(e.errno or 0, "EIO")
    return f"{name}: {e.strerror}"


def _open(path: bytes, follow: bool) -> int:
    flags = _OPEN_FLAGS if follow else _OPEN_FLAGS | os.O_NOFOLLOW
    try:
        return os.open(path, flags)
    except PermissionError:
        # O_NOATIME is only allowed to the file's owner (or CAP_FOWNER); retry without it.
        if not flags & getattr(os, "O_NOATIME", 0):
            raise
        return os.open(path, flags & ~getattr(os, "O_NOATIME", 0))


def record_from_stat(path: bytes, st: os.stat_result) -> FileRecord:
    return FileRecord(path, kind_of(st.st_mode), st.st_size, st.st_mode, st.st_uid, st.st_gid,
                      st.st_mtime_ns, st.st_ino, st.st_dev, ctime_ns=st.st_ctime_ns)


# A filesystem without extended attributes has none to change; EPERM/EACCES/ENOENT leave the
# xattrs unknown (None), never "removed".
_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def read_xattrs(target: int | bytes, follow: bool = False) -> dict[str, str] | None:
    """The ``security.*`` extended attributes (capabilities, SELinux/SMACK labels, IMA/EVM) of
    an open file or a path, as name -> hex value; None when they cannot be read. Other
    namespaces are left out: user.* is anyone's to write, trusted.* is root's only to read."""
    follow = follow or isinstance(target, int)  # an fd is the inode itself
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as e:
        return {} if e.errno in _NO_XATTRS else None
    out: dict[str, str] = {}
    if not names:
        return out
    for name in names:
        if not name.startswith("security."):
            continue
        try:
            out[name] = os.getxattr(target, name, follow_symlinks=follow).hex()
        except OSError as e:
            if e.errno != errno.ENODATA:  # removed since listed: absent
                return None
    return out


def build_record(path: bytes, st: os.stat_result | None, dcfg: DirectoryConfig,
                 limits: Limits) -> Built:
    """The record of ``path`` whose lstat (or stat, when following) is ``st``; with the content
    when it is small enough to keep for a diff. None when the file vanished meanwhile.

    ``st`` None: the walk listed ``path`` as a regular file and did not stat it. It is opened
    first and the open file's fstat gives the attributes; when it cannot be opened, is too large
    or is no longer a regular file, it is stat'ed as the walk would have and read as above.
    Raises Offload (see Limits.inline_max), or OSError when even that stat fails other than by
    the file being gone (nothing is known about it)."""
    if st is None:
        return _build_listed(path, dcfg, limits)
    rec = record_from_stat(path, st)
    want_xattrs = "xattrs" in dcfg.check
    want_hashes = "hashes" in dcfg.check and dcfg.hashes
    opened = rec.kind == "file" and want_hashes and st.st_size <= limits.max_file_size
    if want_xattrs and not opened:  # else read from the opened file below
        rec.xattrs = read_xattrs(path, follow=dcfg.follow_symlinks)
    if rec.kind == "symlink":
        if want_hashes:
            # The link's content is its target: hashing it catches a retargeted link.
            try:
                target = os.readlink(path)
            except FileNotFoundError:
                return None
            except OSError as e:
                rec.error = _error_text(e)
                return rec, None
            rec.hashes = _digests(dcfg.hashes, target)
        return rec, None
    if rec.kind != "file" or not want_hashes:
        return rec, None  # directories and special files: attributes only, never opened
    if st.st_size > limits.max_file_size:
        rec.error = f"too large to hash ({st.st_size} > {limits.max_file_size} bytes)"
        return rec, None
    try:
        fd = _open(path, dcfg.follow_symlinks)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # replaced by a symlink since the walk saw it
            return None
        rec.error = _error_text(e)
        if want_xattrs:  # security.* stays readable without read permission on the content
            rec.xattrs = read_xattrs(path, follow=dcfg.follow_symlinks)
        return rec, None
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            return None  # replaced by something else between lstat and open
        return _read_open(path, fd, fst, dcfg, limits)
    except OSError as e:
        rec.error = _error_text(e)
        return rec, None
    finally:
        os.close(fd)


def _build_listed(path: bytes, dcfg: DirectoryConfig, limits: Limits) -> Built:
    """build_record of a path listed as a regular file, not stat'ed: open + fstat first."""
    if "hashes" in dcfg.check and dcfg.hashes:
        try:
            fd = _open(path, dcfg.follow_symlinks)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            fd = -1  # unreadable, or replaced by a symlink: stat'ed below
        if fd >= 0:
            try:
                fst = os.fstat(fd)
                if stat.S_ISREG(fst.st_mode) and fst.st_size <= limits.max_file_size:
                    if limits.inline_max is not None and fst.st_size > limits.inline_max:
                        raise Offload(fst)
                    return _read_open(path, fd, fst, dcfg, limits)
            except OSError:
                pass  # fstat failed: stat'ed below
            finally:
                os.close(fd)
    try:
        st = os.lstat(path)
        if dcfg.follow_symlinks and stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(OSError):  # dangling: keep the link itself (as the walk)
                st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return build_record(path, st, dcfg, limits)


def _read_open(path: bytes, fd: int, fst: os.stat_result, dcfg: DirectoryConfig,
               limits: Limits) -> Built:
    """The record and content of regular file ``fd`` (``fst`` its fstat); a read error (EIO...)
    leaves the attributes and the error, no hashes."""
    rec = record_from_stat(path, fst)
    if "xattrs" in dcfg.check:  # of the inode that is hashed, not the one the walk saw
        rec.xattrs = read_xattrs(fd)
    try:
        return rec, _hash_fd(fd, fst.st_size, rec, dcfg.hashes, limits)
    except OSError as e:
        rec.error = _error_text(e)
        return rec, None


def _hash_fd(fd: int, size: int, rec: FileRecord, algos: tuple[str, ...],
             limits: Limits) -> bytes | None:
    keep = size <= limits.content_upto
    # One read of size+1 bytes sees EOF for a file that did not grow: one syscall per small file.
    data = os.read(fd, min(size + 1, CHUNK))
    if len(data) <= size and len(data) < CHUNK:  # all of it (the common case, a small file)
        rec.hashes = _digests(algos, data)
        return data if keep else None
    hashers = [_hasher(a) for a in algos]
    kept: list[bytes] = []
    total = 0
    if len(data) < CHUNK:
        for h in hashers:
            h.update(data)
        total = len(data)
        if len(data) > size:  # grew while being read: read the rest
            kept, total = _hash_rest(fd, hashers, [data], total, keep)
        else:
            kept = [data]
    else:
        for h in hashers:
            h.update(data)
        kept, total = _hash_rest(fd, hashers, [data] if keep else [], len(data), keep)
    if total > limits.max_file_size:
        rec.error = f"too large to hash ({total} > {limits.max_file_size} bytes)"
        return None
    rec.hashes = {a: h.hexdigest() for a, h in zip(algos, hashers, strict=True)}
    if keep and total <= limits.content_upto:
        return b"".join(kept)
    return None


def _hash_rest(fd: int, hashers: list[_Hasher], kept: list[bytes], total: int,
               keep: bool) -> tuple[list[bytes], int]:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
        while n := f.readinto(buf):
            chunk = view[:n]
            for h in hashers:
                h.update(chunk)  # hashlib releases the GIL on large buffers
            total += n
            if keep:
                kept.append(bytes(chunk))
    return kept, total
