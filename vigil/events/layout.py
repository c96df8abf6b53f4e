"""The binary layout of kernel records (mirror of bpf/vigil_events.h) and their decoding.

Owns: struct formats, constants shared with the BPF side, and the ``Decoder``, which turns a
batch of raw records into typed events. Does not own enrichment (executable, user names: see
``vigil.enrich``) nor reading the ring (``vigil.kernel.ringbuf``).

Decoding is done with precompiled ``struct.Struct`` objects straight from the ring's memory
(``unpack_from`` on a memoryview): no per-event ctypes call, no intermediate copy. A record
that cannot be an event (shorter than its kind's struct, lengths inside it that point past
its end, an unknown kind or operation) is dropped and counted in ``Decoder.malformed``, by
reason; decoding never raises on any bytes.
"""

from __future__ import annotations

import enum
import os
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Final

from vigil.events.model import (
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileOp,
    NetEvent,
    NetOp,
    Process,
    ShellEvent,
)
from vigil.events.security import CredEvent, CredOp, Creds, SecEvent, SecOp, Target

COMM_LEN: Final = 16
PATH_MAX: Final = 4096
WATCH_KEY_LEN: Final = 256


class Kind(enum.IntEnum):
    FILE = 1
    EXEC = 2
    EXIT = 3
    NET = 4
    CRED = 5
    SEC = 6
    SHELL = 7


# Decoder.malformed's keys: why a record was dropped.
MALFORMED_REASONS: Final = ("short", "bad-length", "unknown-kind", "unknown-op")
_KINDS: Final = frozenset(int(k) for k in Kind)


OP_OPEN_WRITE: Final = 16  # internal op: never surfaces as a FileOp


class Flag(enum.IntFlag):
    PATH_TRUNC = 1
    PATH2_TRUNC = 2
    ARGS_TRUNC = 4
    UNNORMALIZED = 8
    FROM_ARG = 16
    CREATED = 32
    PENDING_WRITES = 64
    LINK_ANYWHERE = 128
    CWD_TRUNC = 256  # exec: the working directory was cut (PATH_TRUNC: the executable)
    EXE_DELETED = 512  # exec: the executable is unlinked (or a memfd)


class Stat(enum.IntEnum):
    """Indices of the per-CPU ``stats`` array."""

    DROP_FILE = 0
    DROP_EXEC = 1
    DROP_EXIT = 2
    INFLIGHT_FULL = 3
    WFILES_FULL = 4
    PERF_FULL = 5  # perf variant: sends that found the buffer full (also counted by kind)
    # New keys and deletes of the LRU maps, from which user space derives their evictions.
    WFILES_NEW = 6
    WFILES_DEL = 7
    URING_NEW = 8
    URING_DEL = 9
    DROP_NET = 10
    NET_CONNS_FULL = 11  # TCP connects in progress not followed (their outcome is lost)
    NET_RATE = 12  # network events over a process's rate cap (lost)
    NET_FILTERED = 13  # network events the config excludes (not lost)
    DROP_SHELL = 14  # shell command lines the buffer had no room for
    DROP_CRED = 15  # credential changes the buffer had no room for
    DROP_SEC = 16  # tampering records the buffer had no room for
    TAIL_CALL_FAILED = 17  # a handler not reached (an empty slot: never expected)


STAT_SLOTS: Final = 24

WATCH_INCLUDE: Final = 1
WATCH_EXCLUDE: Final = 2

# Every format is little/host-endian with no implicit padding ("=" disables alignment), so the
# offsets are exactly the C ones; tests/unit/test_layout.py checks them against the object's BTF.
HDR = struct.Struct("=HHIQ")  # kind, flags, size, ktime_ns
PROC = struct.Struct("=QQQ10I16s")
# op ret mode owner_uid owner_gid oflags ino file_id dev path_len path2_len
FILE_TAIL = struct.Struct("=IiIIIIQQIHH")
EXEC_TAIL = struct.Struct("=IIIIQQ")  # exe_len args_len cwd_len exe_dev exe_ino exe_ctime_ns
EXIT_TAIL = struct.Struct("=iI")  # exit_code, reserved
# op ret family protocol lport rport laddr raddr sock_id path_len reserved
NET_TAIL = struct.Struct("=IiHHHH16s16sQII")
TTY_NAME_LEN: Final = 32
SHELL_TAIL = struct.Struct(f"=IIII{TTY_NAME_LEN}s")  # tty major/minor, session leader, len, name

# the struct vigil_creds of a credential change: 8 ids, 3 capability sets, the user namespace
CREDS = struct.Struct("=8I4Q")
CRED_HEAD = struct.Struct("=II")  # op, path_len; then the old and the new vigil_creds
# op ret target_pid arg1 arg2 arg3 target_start_time target_comm name path_len path2_len reserved
SEC_TAIL = struct.Struct("=IiIIQQQ16s64sHHI")

HDR_SIZE: Final = HDR.size  # 16
PROC_OFF: Final = HDR_SIZE
TAIL_OFF: Final = HDR_SIZE + PROC.size  # 96
FILE_EVENT_SIZE: Final = TAIL_OFF + FILE_TAIL.size  # 144
EXEC_EVENT_SIZE: Final = TAIL_OFF + EXEC_TAIL.size  # 128
EXIT_EVENT_SIZE: Final = TAIL_OFF + EXIT_TAIL.size  # 104
NET_EVENT_SIZE: Final = TAIL_OFF + NET_TAIL.size  # 160
SHELL_EVENT_SIZE: Final = TAIL_OFF + SHELL_TAIL.size  # 144
CRED_EVENT_SIZE: Final = TAIL_OFF + CRED_HEAD.size + 2 * CREDS.size  # 232
SEC_EVENT_SIZE: Final = TAIL_OFF + SEC_TAIL.size  # 224

# Field names per C struct, in order, with the Struct that decodes them; the layout test uses
# these to compare every offset with the BTF.
LAYOUTS: Final[dict[str, tuple[tuple[str, ...], tuple[struct.Struct, ...]]]] = {
    "vigil_hdr": (("kind", "flags", "size", "ktime_ns"), (HDR,)),
    "vigil_proc": (
        ("start_time", "parent_start_time", "cgroup_id", "pid", "tid", "ppid", "uid", "gid",
         "euid", "egid", "auid", "sessionid", "mnt_ns", "comm"),
        (PROC,),
    ),
    "vigil_file_event": (
        ("hdr", "proc", "op", "ret", "mode", "owner_uid", "owner_gid", "oflags", "ino",
         "file_id", "dev", "path_len", "path2_len", "data"),
        (HDR, PROC, FILE_TAIL),
    ),
    "vigil_exec_event": (("hdr", "proc", "exe_len", "args_len", "cwd_len", "exe_dev",
                          "exe_ino", "exe_ctime_ns", "data"), (HDR, PROC, EXEC_TAIL)),
    "vigil_exit_event": (("hdr", "proc", "exit_code", "_reserved"), (HDR, PROC, EXIT_TAIL)),
    "vigil_creds": (("uid", "gid", "suid", "sgid", "euid", "egid", "fsuid", "fsgid",
                     "cap_effective", "cap_permitted", "cap_inheritable", "user_ns"), (CREDS,)),
    "vigil_cred_event": (("hdr", "proc", "op", "path_len", "old", "new", "data"),
                         (HDR, PROC, CRED_HEAD, CREDS, CREDS)),
    "vigil_sec_event": (("hdr", "proc", "op", "ret", "target_pid", "arg1", "arg2", "arg3",
                         "target_start_time", "target_comm", "name", "path_len", "path2_len",
                         "_reserved", "data"), (HDR, PROC, SEC_TAIL)),
    "vigil_net_event": (("hdr", "proc", "op", "ret", "family", "protocol", "lport", "rport",
                         "laddr", "raddr", "sock_id", "path_len", "_reserved", "data"),
                        (HDR, PROC, NET_TAIL)),
    "vigil_shell_event": (("hdr", "proc", "tty_major", "tty_minor", "session_leader", "len",
                           "tty_name", "data"), (HDR, PROC, SHELL_TAIL)),
}

NO_ID: Final = 0xFFFFFFFF
_F_CREATED: Final = int(Flag.CREATED)
_F_EXE_DELETED: Final = int(Flag.EXE_DELETED)
_F_ARGS_TRUNC: Final = int(Flag.ARGS_TRUNC)  # shell: the command line was cut


class RawFile:
    """An internal open-for-write notice: the agent pairs it with the close or the exit.
    ``truncated``: the open emptied a file that existed (``O_TRUNC``, which the kernel applies
    at the open: ``: > file``, a shell's ``>`` redirection)."""

    __slots__ = ("created", "event", "file_id", "truncated")

    def __init__(self, event: FileEvent, file_id: int, created: bool,
                 truncated: bool = False) -> None:
        self.event = event
        self.file_id = file_id
        self.created = created
        self.truncated = truncated


Decoded = (FileEvent | ExecEvent | ExitEvent | NetEvent | CredEvent | SecEvent | ShellEvent
           | RawFile)


class Clock:
    """Converts the kernel's CLOCK_MONOTONIC / CLOCK_BOOTTIME stamps to wall clock and ticks."""

    def __init__(self, mono_to_wall_ns: int, clk_tck: int) -> None:
        self.mono_to_wall_ns = mono_to_wall_ns
        self.ns_per_tick = 1_000_000_000 // clk_tck

    @classmethod
    def now(cls) -> Clock:
        import os
        import time

        offset = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        return cls(offset, os.sysconf("SC_CLK_TCK"))


class Decoder:
    """Turns raw records into typed events.

    Records of one process carry the same who-data block; it is decoded once and the Process
    object shared by its events (so enrichment and rendering run once per process, not once per
    event). An exec changes what a process is without changing that block's identity fields, so
    an exec forgets every block of its process (by pid: the others go on being shared).

    ``malformed`` counts the records dropped because they cannot be events, by reason (see
    MALFORMED_REASONS): "short" (shorter than the header or its kind's struct), "bad-length"
    (its path, executable, argument or working directory lengths point past its end),
    "unknown-kind", "unknown-op". The kernel side never sends such records: any count means a
    layout mismatch between the objects and this decoder, or damage, and the events are lost.
    """

    _CACHE_MAX: Final = 4096

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._procs: dict[bytes, Process] = {}
        self._keys: dict[int, list[bytes]] = {}   # pid -> its blocks in _procs
        self.malformed: Counter[str] = Counter()

    def _proc(self, buf: memoryview | bytes, fresh: bool = False) -> Process:
        key = bytes(buf[PROC_OFF:TAIL_OFF])
        if not fresh:
            hit = self._procs.get(key)
            if hit is not None:
                return hit
        (start, pstart, cgroup, pid, tid, ppid, uid, gid, euid, egid, auid, ses, mntns,
         comm) = PROC.unpack_from(key)
        tick = self.clock.ns_per_tick
        p = Process(
            pid=pid, tid=tid, ppid=ppid, start_time=start // tick,
            parent_start_time=pstart // tick, uid=uid, gid=gid, euid=euid, egid=egid, auid=auid,
            session_id=ses, comm=comm.split(b"\0", 1)[0], cgroup_id=cgroup, mnt_ns=mntns,
        )
        procs, keys = self._procs, self._keys
        if fresh:
            for k in keys.pop(pid, ()):
                procs.pop(k, None)
        if len(procs) >= self._CACHE_MAX:
            procs.clear()
            keys.clear()
        procs[key] = p
        keys.setdefault(pid, []).append(key)
        return p

    def decode(self, buf: memoryview | bytes) -> Decoded | None:
        """One record; None (counted in ``malformed``) for one that cannot be an event."""
        if len(buf) < HDR_SIZE:
            self.malformed["short"] += 1
            return None
        kind, flags, _size, ktime = HDR.unpack_from(buf, 0)
        ts = ktime + self.clock.mono_to_wall_ns
        if kind == Kind.FILE and len(buf) >= FILE_EVENT_SIZE:
            return self._file(buf, ts, flags)
        if kind == Kind.EXEC and len(buf) >= EXEC_EVENT_SIZE:
            exe_len, args_len, cwd_len, dev, ino, ctime = EXEC_TAIL.unpack_from(buf, TAIL_OFF)
            start = EXEC_EVENT_SIZE
            end_args = start + exe_len + args_len
            if end_args + cwd_len > len(buf):
                self.malformed["bad-length"] += 1
                return None
            proc = self._proc(buf, fresh=True)
            proc.executable = bytes(buf[start:start + exe_len])
            if flags & _F_EXE_DELETED:   # as the kernel's d_path (and /proc/PID/exe) say it
                proc.executable += b" (deleted)"
            proc.args = split_args(bytes(buf[start + exe_len:end_args]))
            cwd = bytes(buf[end_args:end_args + cwd_len]) if cwd_len else None
            if not ino:   # no file behind the process (a kernel thread's exec)
                return ExecEvent(ts, proc, flags, cwd)
            return ExecEvent(ts, proc, flags, cwd, exe_dev=dev, exe_ino=ino, exe_ctime_ns=ctime)
        if kind == Kind.EXIT and len(buf) >= EXIT_EVENT_SIZE:
            (code, _reserved) = EXIT_TAIL.unpack_from(buf, TAIL_OFF)
            return ExitEvent(ts, self._proc(buf), code, flags)
        if kind == Kind.NET and len(buf) >= NET_EVENT_SIZE:
            return self._net(buf, ts, flags)
        if kind == Kind.CRED and len(buf) >= CRED_EVENT_SIZE:
            return self._cred(buf, ts, flags)
        if kind == Kind.SEC and len(buf) >= SEC_EVENT_SIZE:
            return self._sec(buf, ts, flags)
        if kind == Kind.SHELL and len(buf) >= SHELL_EVENT_SIZE:
            return self._shell(buf, ts, flags)
        self.malformed["short" if kind in _KINDS else "unknown-kind"] += 1
        return None

    def _file(self, buf: memoryview | bytes, ts: int, flags: int) -> Decoded | None:
        (op, ret, mode, ouid, ogid, oflags, ino, file_id, dev, plen,
         p2len) = FILE_TAIL.unpack_from(buf, TAIL_OFF)
        start = FILE_EVENT_SIZE
        if start + plen + p2len > len(buf):
            self.malformed["bad-length"] += 1
            return None
        path = bytes(buf[start:start + plen])
        path2 = bytes(buf[start + plen:start + plen + p2len]) if p2len else None
        if op == OP_OPEN_WRITE:
            ev = FileEvent(ts, FileOp.CREATE, path, self._proc(buf), 0, None, mode, None, None,
                           ino, dev, flags)
            created = bool(flags & _F_CREATED)
            return RawFile(ev, file_id, created, not created and bool(oflags & os.O_TRUNC))
        fop = _FILE_OPS.get(op)
        if fop is None:
            self.malformed["unknown-op"] += 1
            return None
        chown = fop is FileOp.CHOWN
        # positional: a dataclass's __init__ with keywords costs three times as much
        return FileEvent(
            ts, fop, path, self._proc(buf), -ret if ret < 0 else 0, path2,
            mode if fop in _MODE_OPS else None,
            ouid if chown and ouid != NO_ID else None,
            ogid if chown and ogid != NO_ID else None,
            ino or None, dev or None, flags, "kernel", file_id)

    def _net(self, buf: memoryview | bytes, ts: int, flags: int) -> NetEvent | None:
        (op, ret, family, protocol, lport, rport, laddr, raddr, sock_id, plen,
         _reserved) = NET_TAIL.unpack_from(buf, TAIL_OFF)
        if NET_EVENT_SIZE + plen > len(buf):
            self.malformed["bad-length"] += 1
            return None
        nop = _NET_OPS.get(op)
        if nop is None:
            self.malformed["unknown-op"] += 1
            return None
        path = bytes(buf[NET_EVENT_SIZE:NET_EVENT_SIZE + plen]) if plen else None
        return NetEvent(ts, nop, self._proc(buf), family, protocol, laddr, lport, raddr, rport,
                        errno=-ret if ret < 0 else 0, path=path, flags=flags, sock_id=sock_id)

    def _cred(self, buf: memoryview | bytes, ts: int, flags: int) -> CredEvent | None:
        op, plen = CRED_HEAD.unpack_from(buf, TAIL_OFF)
        if CRED_EVENT_SIZE + plen > len(buf):
            self.malformed["bad-length"] += 1
            return None
        cop = _CRED_OPS.get(op)
        if cop is None:
            self.malformed["unknown-op"] += 1
            return None
        at = TAIL_OFF + CRED_HEAD.size
        old = Creds(*CREDS.unpack_from(buf, at))
        new = Creds(*CREDS.unpack_from(buf, at + CREDS.size))
        path = bytes(buf[CRED_EVENT_SIZE:CRED_EVENT_SIZE + plen]) if plen else None
        # the who-data is the process's before the change: never the shared cached object
        return CredEvent(ts, cop, self._proc(buf), old, new, path, flags)

    def _sec(self, buf: memoryview | bytes, ts: int, flags: int) -> SecEvent | None:
        (op, ret, tpid, arg1, arg2, arg3, tstart, tcomm, name, plen, p2len,
         _reserved) = SEC_TAIL.unpack_from(buf, TAIL_OFF)
        start = SEC_EVENT_SIZE
        if start + plen + p2len > len(buf):
            self.malformed["bad-length"] += 1
            return None
        sop = _SEC_OPS.get(op)
        if sop is None:
            self.malformed["unknown-op"] += 1
            return None
        target = None
        if tpid:
            comm = tcomm.split(b"\0", 1)[0]
            target = Target(tpid, tstart // self.clock.ns_per_tick if tstart else None,
                            comm or None)
        return SecEvent(ts, sop, self._proc(buf), errno=-ret if ret < 0 else 0, target=target,
                        arg1=arg1, arg2=arg2, arg3=arg3, name=name.split(b"\0", 1)[0],
                        path=bytes(buf[start:start + plen]) if plen else None,
                        path2=bytes(buf[start + plen:start + plen + p2len]) if p2len else None,
                        flags=flags)

    def _shell(self, buf: memoryview | bytes, ts: int, flags: int) -> ShellEvent | None:
        major, minor, leader, n, tty = SHELL_TAIL.unpack_from(buf, TAIL_OFF)
        if SHELL_EVENT_SIZE + n > len(buf):
            self.malformed["bad-length"] += 1
            return None
        return ShellEvent(ts, self._proc(buf), bytes(buf[SHELL_EVENT_SIZE:SHELL_EVENT_SIZE + n]),
                          major, minor, tty.split(b"\0", 1)[0].decode("utf-8", "replace"),
                          leader, bool(flags & _F_ARGS_TRUNC))

    def decode_batch(self, records: Iterable[memoryview | bytes]) -> Iterator[Decoded]:
        for rec in records:
            ev = self.decode(rec)
            if ev is not None:
                yield ev


_FILE_OPS: Final = {int(op): op for op in FileOp}  # a dict lookup: FileOp(op) raises
_NET_OPS: Final = {int(op): op for op in NetOp}
_CRED_OPS: Final = {int(op): op for op in CredOp}
_SEC_OPS: Final = {int(op): op for op in SecOp}
_MODE_OPS = frozenset({FileOp.CHMOD, FileOp.CREATE, FileOp.MKDIR, FileOp.MKNOD, FileOp.OPEN})


def split_args(raw: bytes) -> list[bytes]:
    """argv as the kernel keeps it: NUL-separated, NUL-terminated."""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return raw.split(b"\0") if raw else []
