"""Decoding raw records built with the C layout (pure logic, no kernel)."""

from __future__ import annotations

from vigil.events import layout
from vigil.events.layout import Clock, Decoder, Flag, RawFile
from vigil.events.model import ExecEvent, ExitEvent, FileEvent, FileOp

CLOCK = Clock(mono_to_wall_ns=1_000_000_000_000, clk_tck=100)


def decode(rec: bytes, clock: Clock) -> object:
    return Decoder(clock).decode(rec)


def proc_bytes(pid: int = 42, comm: bytes = b"touch") -> bytes:
    return layout.PROC.pack(
        123 * 10_000_000, 7 * 10_000_000, 99, pid, pid + 1, 1, 1000, 1000, 0, 0, 1000, 3, 4026,
        comm)


def file_record(op: int, path: bytes, path2: bytes = b"", ret: int = 0, flags: int = 0,
                file_id: int = 0) -> bytes:
    tail = layout.FILE_TAIL.pack(op, ret, 0o644, 0xFFFFFFFF, 0xFFFFFFFF, 0, 77, file_id, 8,
                                 len(path), len(path2))
    body = proc_bytes() + tail + path + path2
    return layout.HDR.pack(layout.Kind.FILE, flags, layout.HDR_SIZE + len(body), 5) + body


def exec_record(exe: bytes, args: bytes, cwd: bytes = b"", flags: int = 0,
                cwd_len: int | None = None) -> bytes:
    tail = layout.EXEC_TAIL.pack(len(exe), len(args), len(cwd) if cwd_len is None else cwd_len,
                                 (8 << 20) | 1, 4242, 1_700_000_000_123_456_789)
    body = proc_bytes() + tail + exe + args + cwd
    return layout.HDR.pack(layout.Kind.EXEC, flags, layout.HDR_SIZE + len(body), 1) + body


def test_file_event_fields() -> None:
    ev = decode(file_record(FileOp.RENAME, b"/w/a", b"/w/b"), CLOCK)
    assert isinstance(ev, FileEvent)
    assert ev.op is FileOp.RENAME
    assert (ev.path, ev.target_path) == (b"/w/a", b"/w/b")
    assert ev.timestamp_ns == 1_000_000_000_005
    p = ev.process
    assert (p.pid, p.tid, p.ppid, p.uid, p.euid, p.auid, p.session_id) == (42, 43, 1, 1000, 0,
                                                                           1000, 3)
    assert p.comm == b"touch"
    # boot-time ns become clock ticks, the unit of /proc/PID/stat field 22
    assert (p.start_time, p.parent_start_time) == (123, 7)
    assert ev.inode == 77 and ev.errno == 0


def test_failed_attempt_has_errno_and_no_owner() -> None:
    ev = decode(file_record(FileOp.DELETE, b"/w/x", ret=-13), CLOCK)
    assert isinstance(ev, FileEvent)
    assert ev.failed and ev.errno == 13
    assert ev.owner_uid is None and ev.mode is None


def test_open_write_is_internal() -> None:
    raw = decode(file_record(layout.OP_OPEN_WRITE, b"/w/n", flags=Flag.CREATED, file_id=5),
                 CLOCK)
    assert isinstance(raw, RawFile)
    assert raw.created and raw.file_id == 5 and raw.event.path == b"/w/n"


def test_invalid_utf8_and_newline_survive() -> None:
    name = b"/w/bad\xff\nname"
    ev = decode(file_record(FileOp.CREATE, name), CLOCK)
    assert isinstance(ev, FileEvent) and ev.path == name


def test_exec_and_exit() -> None:
    exe, args = b"/usr/bin/true", b"true\0--x\0y z\0"
    ev = decode(exec_record(exe, args, b"/srv/www"), CLOCK)
    assert isinstance(ev, ExecEvent)
    assert ev.process.executable == exe and ev.process.args == [b"true", b"--x", b"y z"]
    assert ev.cwd == b"/srv/www" and ev.flags == 0
    # the executed file's identity, for the exec hash (vigil.enrich.exehash)
    assert (ev.exe_dev, ev.exe_ino, ev.exe_ctime_ns) == ((8 << 20) | 1, 4242,
                                                         1_700_000_000_123_456_789)
    body = proc_bytes() + layout.EXIT_TAIL.pack(3 << 8, 0)
    ex = decode(layout.HDR.pack(layout.Kind.EXIT, 0, 16 + len(body), 1) + body, CLOCK)
    assert isinstance(ex, ExitEvent) and ex.status == 3 and ex.signal == 0


def test_exec_working_directory_is_the_last_part() -> None:
    """The record's parts in order: executable, argv, working directory; any bytes."""
    cwd = b"/w/odd \xff\n\tname"
    ev = decode(exec_record(b"/usr/bin/true", b"true\0", cwd, flags=Flag.CWD_TRUNC), CLOCK)
    assert isinstance(ev, ExecEvent)
    assert (ev.process.executable, ev.process.args, ev.cwd) == (b"/usr/bin/true", [b"true"], cwd)
    assert ev.flags & Flag.CWD_TRUNC
    # no argv at all (the kernel could not read it): the directory still follows the executable
    ev = decode(exec_record(b"/usr/bin/true", b"", b"/"), CLOCK)
    assert isinstance(ev, ExecEvent) and ev.process.args == [] and ev.cwd == b"/"
    # cwd_len 0: the kernel knew no working directory
    ev = decode(exec_record(b"/usr/bin/true", b"true\0"), CLOCK)
    assert isinstance(ev, ExecEvent) and ev.cwd is None
    # the longest the kernel sends: three parts of 4095 bytes
    big = b"/" + b"d" * 4094
    ev = decode(exec_record(big, b"a" * 4094 + b"\0", big), CLOCK)
    assert isinstance(ev, ExecEvent) and ev.cwd == big and ev.process.executable == big


def test_unknown_or_short_records_are_skipped() -> None:
    assert decode(b"\x01\x00", CLOCK) is None
    assert decode(layout.HDR.pack(9, 0, 16, 0), CLOCK) is None
    assert decode(file_record(200, b"/x"), CLOCK) is None


def test_dropped_records_are_counted_by_reason() -> None:
    """Nothing the decoder drops is silent: each record is an event or a count."""
    d = Decoder(CLOCK)
    good = file_record(FileOp.CHMOD, b"/w/a")
    over = bytearray(good)
    layout.FILE_TAIL.pack_into(over, layout.TAIL_OFF, FileOp.CHMOD, 0, 0, 0, 0, 0, 0, 0, 0,
                               4000, 0)  # path_len past the record's end
    exe = b"/usr/bin/true"
    body = proc_bytes() + layout.EXEC_TAIL.pack(len(exe), 1 << 30, 0, 0, 0, 0) + exe
    cwd_past_end = exec_record(exe, b"true\0", b"/w", cwd_len=3)  # one byte more than sent
    exec_short = exec_record(exe, b"")[:layout.EXEC_EVENT_SIZE - 1]  # one byte short of the header
    records = [good, b"\x01\x00", good[:100], layout.HDR.pack(9, 0, 16, 0),
               file_record(200, b"/x"), bytes(over), layout.HDR.pack(2, 0, 0, 0) + body,
               cwd_past_end, exec_short, good]
    events = list(d.decode_batch(memoryview(r) for r in records))
    assert len(events) == 2
    assert d.malformed == {"short": 3, "unknown-kind": 1, "unknown-op": 1, "bad-length": 3}
    assert set(d.malformed) <= set(layout.MALFORMED_REASONS)


def test_who_data_is_shared_until_an_exec() -> None:
    d = Decoder(CLOCK)
    a = d.decode(file_record(FileOp.CHMOD, b"/w/a"))
    b = d.decode(file_record(FileOp.CHMOD, b"/w/b"))
    assert isinstance(a, FileEvent) and isinstance(b, FileEvent)
    assert a.process is b.process
    ex = d.decode(exec_record(b"/usr/bin/new", b"new\0", b"/"))
    c = d.decode(file_record(FileOp.CHMOD, b"/w/c"))
    assert isinstance(ex, ExecEvent) and isinstance(c, FileEvent)
    assert c.process is not a.process  # same pid/start/comm, but it exec'd: not the old object


def test_deleted_executable_gets_the_kernels_mark() -> None:
    ev = decode(exec_record(b"/run/x/gone", b"gone\0", flags=Flag.EXE_DELETED), CLOCK)
    assert isinstance(ev, ExecEvent)
    assert ev.process.executable == b"/run/x/gone (deleted)"
    ev = decode(exec_record(b"/memfd:payload", b"p\0", flags=Flag.EXE_DELETED), CLOCK)
    assert isinstance(ev, ExecEvent) and ev.process.executable == b"/memfd:payload (deleted)"
    ev = decode(exec_record(b"/usr/bin/true", b"true\0"), CLOCK)
    assert isinstance(ev, ExecEvent) and ev.process.executable == b"/usr/bin/true"
