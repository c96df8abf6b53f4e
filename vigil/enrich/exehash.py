"""The sha256 of every executed image (ECS ``process.hash.sha256``), with bounded work.

Owns ``ExeHasher``: per exec event, the file the kernel executed is opened, fstat'ed and hashed
from that one descriptor, so the identity and the content read are of the same file. Results
are cached by (device, inode, change time, size): an exec of an unchanged program costs one
stat. Misses are paid from a token bucket of bytes per second, and files above a size are not
read: an exec storm of new programs, or one huge binary, cannot stall event delivery for long.
An event without a hash says why in ``ExecEvent.hash_skipped`` (the reasons below).

A program with no name left (an unlinked file, a memfd), one in another mount namespace (its
path names nothing here) or one whose path the kernel cut is read through /proc/PID/exe, only
while that pid is still the process that exec'd it (its start time) running the image named
by the event. The kernel says which inode it executed (``exe_ino``/``exe_dev``/``exe_ctime_ns``
on the event): a file that is no longer that one (another inode, or changed since) is not
hashed by its path, and a cached hash is found by that identity with no system call at all.
Does not own where the hash is rendered (vigil.outputs.ecs) nor the Sigma mapping.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Final, TypeVar

from vigil.events.layout import Flag
from vigil.events.model import ExecEvent

# Why an exec event carries no hash (``vigil.process.hash_skipped``).
BUDGET: Final = "budget"          # over the bytes-per-second budget: a miss not read
TOO_LARGE: Final = "too-large"    # bigger than max_file_size
UNREADABLE: Final = "unreadable"  # the open or a read failed (permissions, I/O error)
GONE: Final = "gone"              # only /proc/PID/exe had it, and that process exited, its pid
                                  # was reused or it exec'd another program since
REPLACED: Final = "replaced"      # the file at the path is no longer the one executed

Key = tuple[int, int, int, int]   # st_dev, st_ino, st_ctime_ns, st_size
_K = TypeVar("_K")
_CHUNK: Final = 1 << 20
_OPEN: Final = os.O_RDONLY | os.O_CLOEXEC
_NO_NAME: Final = int(Flag.EXE_DELETED) | int(Flag.PATH_TRUNC)
_DELETED: Final = b" (deleted)"


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size)


def _kernel_id(ev: ExecEvent) -> tuple[int, int, int] | None:
    """The executed inode as the kernel names it (device, inode, change time), if the record
    says it: enough to find a cached hash without touching the file."""
    ino, dev, ctime = ev.exe_ino, ev.exe_dev, ev.exe_ctime_ns
    return None if ino is None or dev is None or ctime is None else (dev, ino, ctime)


def _is_executed(ev: ExecEvent, st: os.stat_result, running: bool = False) -> bool:
    """Whether ``st`` is the file the kernel executed, as far as the event says (the kernel's
    inode, device and change time, when the record carries them; else trusted). The image a
    process runs (``running``: from /proc/PID/exe) may have a newer change time: an unlink or a
    chmod since the exec changes it, its content seldom (writers of a running image get
    ETXTBSY); ``_hash_fd`` hashes the content as it is now, consistently."""
    ctime = None if running else ev.exe_ctime_ns
    # not the device: btrfs (and any filesystem whose getattr names a subvolume's own
    # device) answers stat with another st_dev than its superblock's, which the kernel sends
    return ((ev.exe_ino is None or ev.exe_ino == st.st_ino)
            and (ctime is None or ctime == st.st_ctime_ns))


class ExeHasher:
    def __init__(self, max_bytes_per_second: int, max_file_size: int, *,
                 cache_entries: int = 4096, proc_root: str = "/proc",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = max_bytes_per_second
        self._max_size = max_file_size
        self._cache_max = cache_entries
        self._cache: OrderedDict[Key, str] = OrderedDict()
        self._by_kernel_id: OrderedDict[tuple[int, int, int], str] = OrderedDict()
        self._proc = proc_root
        self._clock = clock
        self._tokens = float(max_bytes_per_second)   # a second's worth to start with
        self._last = clock()
        try:
            self._mnt_ns: int | None = os.stat(f"{proc_root}/self/ns/mnt").st_ino
        except OSError:
            self._mnt_ns = None
        self.hashed = 0        # files read and hashed
        self.bytes_hashed = 0
        self.cache_hits = 0
        self.skipped: Counter[str] = Counter()

    def apply(self, ev: ExecEvent) -> None:
        """Sets ``ev.sha256``, or ``ev.hash_skipped`` to the reason there is none."""
        kid = _kernel_id(ev)
        if kid is not None and (hit := self._by_kernel_id.get(kid)) is not None:
            self._by_kernel_id.move_to_end(kid)
            self.cache_hits += 1
            ev.sha256 = hit
            return
        try:
            ev.sha256 = self._digest(ev)
        except _Skip as s:
            ev.hash_skipped = s.reason
            self.skipped[s.reason] += 1
            return
        if kid is not None:   # the file hashed was checked to be that inode (_is_executed)
            self._remember(self._by_kernel_id, kid, ev.sha256)

    def _digest(self, ev: ExecEvent) -> str:
        p = ev.process
        exe = p.executable
        if exe is None or ev.flags & _NO_NAME or not exe.startswith(b"/") \
                or (self._mnt_ns is not None and p.mnt_ns not in (0, self._mnt_ns)):
            return self._via_proc(ev)
        try:
            st = os.stat(exe)
        except OSError:
            return self._via_proc(ev)   # gone since: the live process may still have it
        if not _is_executed(ev, st):
            return self._via_proc(ev, REPLACED)
        key = _key(st)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return hit
        try:
            fd = os.open(exe, _OPEN)
        except OSError:
            return self._via_proc(ev, UNREADABLE)
        try:
            return self._hash_fd(fd, ev)
        except _Skip as s:
            if s.reason != REPLACED:
                raise
        finally:
            os.close(fd)
        return self._via_proc(ev, REPLACED)   # changed between the stat and the open

    def _via_proc(self, ev: ExecEvent, otherwise: str = GONE) -> str:
        """The image through /proc/PID/exe, if that pid still runs what the event exec'd;
        else skipped with ``otherwise`` (the reason the direct way failed) or ``gone``."""
        p = ev.process
        base = f"{self._proc}/{p.pid}"
        try:
            fd = os.open(f"{base}/exe", _OPEN)
        except PermissionError:
            raise _Skip(UNREADABLE) from None
        except OSError:
            raise _Skip(otherwise) from None
        try:
            # after the open: a pid reused or a new exec since then shows here (the file may
            # have been unlinked since the exec)
            if p.executable is not None and not ev.flags & int(Flag.PATH_TRUNC) \
                    and p.mnt_ns == self._mnt_ns \
                    and os.readlink(os.fsencode(f"{base}/exe")).removesuffix(_DELETED) \
                    != p.executable.removesuffix(_DELETED):
                raise _Skip(otherwise)
            with open(f"{base}/stat", "rb") as f:
                data = f.read()
            if int(data[data.rindex(b")") + 2:].split()[19]) != p.start_time:
                raise _Skip(otherwise)
            return self._hash_fd(fd, ev, running=True)
        except (OSError, ValueError, IndexError):
            raise _Skip(otherwise) from None
        finally:
            os.close(fd)

    def _hash_fd(self, fd: int, ev: ExecEvent, running: bool = False) -> str:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Skip(UNREADABLE)
        if not _is_executed(ev, st, running):
            raise _Skip(REPLACED)
        key = _key(st)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return hit
        if st.st_size > self._max_size:
            raise _Skip(TOO_LARGE)
        self._spend(st.st_size)
        h = hashlib.sha256()
        buf = memoryview(bytearray(min(_CHUNK, max(st.st_size, 1))))
        left = st.st_size
        try:
            while left > 0:
                n = os.readv(fd, [buf[:min(left, len(buf))]])
                if n == 0:
                    break
                h.update(buf[:n])
                left -= n
        except OSError:
            raise _Skip(UNREADABLE) from None
        if left or _key(os.fstat(fd)) != key:   # written while read: not what was executed
            raise _Skip(REPLACED)
        digest = h.hexdigest()
        self.hashed += 1
        self.bytes_hashed += st.st_size
        self._remember(self._cache, key, digest)
        return digest

    def _remember(self, cache: OrderedDict[_K, str], key: _K, digest: str) -> None:
        cache[key] = digest
        if len(cache) > self._cache_max:
            cache.popitem(last=False)

    def _spend(self, size: int) -> None:
        """Takes ``size`` bytes from the bucket, or refuses when it is empty. A file is read
        whole once the bucket holds anything (it may go below zero): over time the reads stay
        within the rate, and any file up to max_file_size can be hashed."""
        now = self._clock()
        self._tokens = min(float(self._rate), self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens <= 0:
            raise _Skip(BUDGET)
        self._tokens -= size

    def counts(self) -> dict[str, int]:
        """For the agent's summary: exec events left without a hash (reasons in the events)."""
        return {"exe_hash_skipped": sum(self.skipped.values())}
