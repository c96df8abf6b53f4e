"""The syslog output's on-disk spool: a bounded, crash-safe queue of framed messages.

Owns the files of one spool folder and what they mean; formatting is vigil.outputs.syslog_msg,
sending is vigil.outputs.syslog.

- **Segments** ``<first seq, 20 digits>.seg`` hold messages exactly as a stream transport sends
  them: RFC 6587 octet-counted frames ``LEN SP MSG``, message after message, their sequence
  numbers consecutive inside a segment (a gap starts a new segment). A batch is appended with
  ONE ``write()``: it sits in the page cache at once and survives a ``kill -9`` of the agent
  (not a power cut: nothing is fsync'd, on purpose, it would cost a disk flush per batch).
- **The cursor** ``cursor`` (vigil.outputs.spool_cursor, mmap'd, torn stores survived) says
  where the sender is: the segment, the byte offset and the sequence number of the next message
  to send, always at a message boundary. It is stored after every send() with the whole
  messages the kernel took, so a restart resends nothing already sent, except if killed
  between send() returning and the store (a few microseconds): then the messages of that one
  send() come again, with the same sequence numbers, which a receiver can dedupe. A broken
  connection may take the cursor back (``rewind``): see vigil.outputs.syslog_transport.
- **Bound**: the segments never exceed ``max_bytes`` together. An append that does not fit drops
  the oldest segments (the unsent messages in them are counted in ``dropped``, cumulative);
  a batch larger than the whole spool keeps only its newest messages.
- **Recovery**: at open, every segment is parsed; a torn last record (the agent killed in the
  middle of a write) or anything that is not a frame with the expected sequence number is cut
  off and counted in ``torn_bytes``, never replayed.

One writer thread (``append``) and one reader thread (``take``/``advance``/``rewind``); a lock
keeps their shared state (the segment list, the cursor, the counters) consistent.
"""

from __future__ import annotations

import bisect
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from vigil.kernel.errors import VigilError
from vigil.outputs.spool_cursor import CursorFile

_SUFFIX: Final = ".seg"
MAX_LEN_DIGITS: Final = 9                   # frames up to 999,999,999 bytes


class SpoolError(VigilError):
    """The spool folder cannot be used (not creatable, not writable)."""


def frame(msg: bytes) -> bytes:
    """``LEN SP MSG`` (RFC 6587 octet counting): the spool's record and TCP's wire format."""
    return b"%d %s" % (len(msg), msg)


@dataclass(eq=False)
class Segment:
    first: int                  # sequence number of its first message
    path: Path
    size: int = 0               # committed bytes: whole frames only
    count: int = 0              # messages in it


@dataclass(eq=False)
class Chunk:
    """Unsent frames of one segment handed to the sender: bytes [start, ends[-1]) of ``fd``."""

    seg: Segment
    fd: int
    view: mmap.mmap
    start: int
    first_seq: int
    ends: list[int] = field(default_factory=list)
    sent: int = 0               # frames of it counted as sent

    @property
    def end(self) -> int:
        return self.ends[-1]


def _parse(data: bytes | mmap.mmap, pos: int, end: int) -> tuple[int, int] | None:
    """(message start, frame end) of the frame at ``pos``, or None if no whole frame is there."""
    sp = data.find(b" ", pos, min(end, pos + MAX_LEN_DIGITS + 1))
    if sp <= pos:
        return None
    digits = bytes(data[pos:sp])
    if not digits.isdigit() or digits[:1] == b"0":
        return None
    stop = sp + 1 + int(digits)
    return (sp + 1, stop) if stop <= end else None


class Spool:
    """A spool folder. ``valid(msg, seq)`` says whether a stored message is the one with that
    sequence number (recovery uses it to refuse garbage)."""

    def __init__(self, directory: Path, max_bytes: int,
                 valid: Callable[[bytes, int], bool] = lambda m, s: True,
                 segment_bytes: int | None = None) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(64 << 10, min(max_bytes // 8, 16 << 20))
        self._valid = valid
        self._lock = threading.Lock()
        self.dropped = 0            # messages dropped unsent (cumulative, this process)
        self.sent = 0               # messages the transport took (this process)
        self.torn_bytes = 0         # bytes cut off at recovery
        self.resent = 0             # messages taken back after a break, to send again
        self._gap = False           # the next append starts a segment (sequence gap)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._cursor = CursorFile(directory / "cursor")
        except OSError as e:
            raise SpoolError(f"syslog spool {directory}: {e.strerror}") from None
        self._segs: list[Segment] = []
        self._recover()
        self.last_error = ""
        self.write_errors = 0
        self._wfd = -1
        self._wseg: Segment | None = None
        if self._segs and not self._gap:     # appends continue the newest segment
            self._wseg = self._segs[-1]
            self._wfd = os.open(self._wseg.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        # the reader's open segment
        self._rseg: Segment | None = None
        self._rfd = -1
        self._rmap: mmap.mmap | None = None

    # -- recovery ---------------------------------------------------------------------------

    def _scan(self, seg: Segment) -> None:
        """Counts the segment's valid frames; cuts off the rest of the file."""
        with open(seg.path, "rb") as f:
            data = f.read()
        pos, seq = 0, seg.first
        while pos < len(data):
            got = _parse(data, pos, len(data))
            if got is None or not self._valid(data[got[0]:got[1]], seq):
                break
            pos, seq = got[1], seq + 1
        if pos < len(data):
            self.torn_bytes += len(data) - pos
            os.truncate(seg.path, pos)
        seg.size, seg.count = pos, seq - seg.first

    def _recover(self) -> None:
        segs = []
        for p in self.dir.iterdir():
            stem = p.name[:-len(_SUFFIX)]
            if p.name.endswith(_SUFFIX) and stem.isdigit() and len(stem) == 20:
                segs.append(Segment(int(stem), p))
        segs.sort(key=lambda s: s.first)
        for s in segs:
            self._scan(s)
        cur = self._cursor.load()
        next_seq = segs[-1].first + segs[-1].count if segs else 1
        if cur is not None:
            next_seq = max(next_seq, cur[2])
            # segments wholly before the cursor's were sent (killed before their unlink)
            while segs and segs[0].first < cur[0] and (
                    len(segs) > 1 or segs[0].first + segs[0].count <= cur[2]):
                os.unlink(segs.pop(0).path)
        self._segs = segs
        self.next_seq = next_seq
        self._cur_idx = self._cur_off = 0
        if cur is not None and segs and segs[0].first == cur[0]:
            s = segs[0]
            self._cur_idx = min(max(cur[2] - s.first, 0), s.count)
            self._cur_off = self._offset_of(s, self._cur_idx)
        self._gap = bool(segs) and segs[-1].first + segs[-1].count != next_seq

    def _offset_of(self, seg: Segment, idx: int) -> int:
        with open(seg.path, "rb") as f:
            data = f.read(seg.size)
        pos = 0
        for _ in range(idx):
            got = _parse(data, pos, len(data))
            assert got is not None      # scanned above
            pos = got[1]
        return pos

    # -- writer -----------------------------------------------------------------------------

    def _open_segment(self, first: int) -> None:
        if self._wfd >= 0:
            os.close(self._wfd)
        seg = Segment(first, self.dir / f"{first:020d}{_SUFFIX}")
        self._wfd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                            0o600)
        self._segs.append(seg)
        self._wseg = seg


    def _unlink_first(self) -> Segment:
        """Removes segs[0] (the cursor's segment); the cursor moves to the next one's start."""
        seg = self._segs.pop(0)
        if seg is self._wseg:
            os.close(self._wfd)
            self._wfd, self._wseg = -1, None
        os.unlink(seg.path)
        self._cur_idx = self._cur_off = 0
        self._cursor.store(*self._cursor_tuple())
        return seg

    def _forget_empty(self, seg: Segment) -> None:
        if self._segs[0] is seg:
            self._unlink_first()
            return
        self._segs.remove(seg)
        os.close(self._wfd)
        self._wfd, self._wseg = -1, None
        os.unlink(seg.path)

    def _cursor_tuple(self) -> tuple[int, int, int]:
        if not self._segs:
            return self.next_seq, 0, self.next_seq
        s = self._segs[0]
        return s.first, self._cur_off, s.first + self._cur_idx

    def _total(self) -> int:
        return sum(s.size for s in self._segs)

    def append(self, frames: Sequence[bytes], first_seq: int) -> None:
        """Appends frames numbered ``first_seq``, ``first_seq + 1``... (the caller numbers
        them from ``next_seq``) with one write; drops the oldest segments to stay in bounds."""
        if not frames:
            return
        with self._lock:
            if first_seq != self.next_seq:
                raise ValueError(f"spool: frames numbered from {first_seq}, expected "
                                 f"{self.next_seq}")
            sizes = [len(f) for f in frames]
            need = sum(sizes)
            skip = 0
            while need > self.max_bytes:      # more than the whole spool: keep the newest
                need -= sizes[skip]
                skip += 1
            if skip:
                self.dropped += skip
                self._gap = True
            if skip == len(frames):
                self.next_seq += skip
                return
            seq0 = first_seq + skip
            w = self._wseg
            if w is not None and w.size == 0 and w.first != seq0:
                self._forget_empty(w)      # a segment only a failed write ever touched
                w = None
            if w is None or (w.size and (self._gap or w.size + need > self.segment_bytes
                                         or self._total() + need > self.max_bytes)):
                self._open_segment(seq0)
            while self._total() + need > self.max_bytes and len(self._segs) > 1:
                s = self._segs[0]
                self.dropped += s.count - self._cur_idx
                self._unlink_first()
            w = self._wseg
            assert w is not None
            data = b"".join(frames[skip:]) if skip or len(frames) > 1 else frames[0]
            try:
                done = os.write(self._wfd, data)
            except OSError as e:
                done, self.last_error = -1, f"{w.path}: {e.strerror}"
            if done != len(data):   # disk full, I/O error: the batch is lost, and counted
                if done >= 0:
                    self.last_error = f"{w.path}: short write (disk full?)"
                os.ftruncate(self._wfd, w.size)
                self.dropped += len(frames) - skip
                self.write_errors += 1
                self._gap = True
            else:
                self._gap = False
                w.size += len(data)
                w.count += len(frames) - skip
            self.next_seq += len(frames)
            if len(self._segs) == 1 and w.count and self._cur_idx == 0 and self._cur_off == 0:
                self._cursor.store(*self._cursor_tuple())

    # -- reader -----------------------------------------------------------------------------

    def _reader_open(self, seg: Segment) -> mmap.mmap:
        """The reader's fd and mapping of ``seg``, mapped again when it has grown."""
        if self._rseg is not seg:
            self._reader_close()
            self._rfd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
            self._rseg = seg
        if self._rmap is None or len(self._rmap) < seg.size:
            if self._rmap is not None:
                self._rmap.close()
            self._rmap = mmap.mmap(self._rfd, seg.size, prot=mmap.PROT_READ)
        return self._rmap

    def _reader_close(self) -> None:
        if self._rmap is not None:
            self._rmap.close()
            self._rmap = None
        if self._rfd >= 0:
            os.close(self._rfd)
            self._rfd = -1
        self._rseg = None

    def take(self, max_bytes: int = 1 << 20, max_msgs: int = 4096) -> Chunk | None:
        """The next unsent whole frames (at least one, up to about ``max_bytes``), or None."""
        with self._lock:
            while self._segs:
                seg = self._segs[0]
                if self._cur_off < seg.size:
                    break
                if len(self._segs) == 1:
                    return None
                self._unlink_first()     # wholly sent: the next segment
            else:
                return None
            start, size, seq = self._cur_off, seg.size, seg.first + self._cur_idx
            view = self._reader_open(seg)
            fd = self._rfd
        ends: list[int] = []
        pos, limit = start, start + max_bytes
        while pos < size and len(ends) < max_msgs and (pos < limit or not ends):
            got = _parse(view, pos, size)
            assert got is not None, "committed spool data is whole frames"
            pos = got[1]
            ends.append(pos)
        return Chunk(seg, fd, view, start, seq, ends)

    def advance(self, chunk: Chunk, pos: int) -> int:
        """The transport took bytes up to ``pos`` of the chunk: the cursor moves to the last
        whole message in them and is stored. Returns the messages newly counted as sent."""
        k = _count_upto(chunk.ends, pos)
        with self._lock:
            if not self._segs or self._segs[0] is not chunk.seg:
                # the segment was dropped meanwhile: what it counted as dropped was sent
                done = k - chunk.sent
                chunk.sent = k
                self.dropped -= done
                self.sent += done
                return done
            idx = chunk.first_seq - chunk.seg.first + k
            done = idx - self._cur_idx
            if done <= 0:
                return 0
            self._cur_idx = idx
            self._cur_off = chunk.ends[k - 1]
            chunk.sent = k
            self.sent += done
            self._cursor.store(*self._cursor_tuple())
            return done

    def rewind(self, chunk: Chunk, pos: int) -> int:
        """Back to the message that holds byte ``pos`` of the chunk's segment (the receiver
        never got it whole): it will be sent again. Only inside the chunk; returns the
        messages taken back."""
        k = _count_upto(chunk.ends, max(pos, chunk.start))
        with self._lock:
            if not self._segs or self._segs[0] is not chunk.seg:
                return 0
            idx = chunk.first_seq - chunk.seg.first + k
            back = self._cur_idx - idx
            if back <= 0:
                return 0
            self._cur_idx = idx
            self._cur_off = chunk.ends[k - 1] if k else chunk.start
            self.sent -= back
            self.resent += back
            self._cursor.store(*self._cursor_tuple())
            return back

    # -- state ------------------------------------------------------------------------------

    def queued(self) -> int:
        """Messages not sent yet."""
        with self._lock:
            return sum(s.count for s in self._segs) - self._cur_idx

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"spool_bytes": self._total(),
                    "queued": sum(s.count for s in self._segs) - self._cur_idx,
                    "segments": len(self._segs),
                    "next_seq": self.next_seq,
                    "sent": self.sent,
                    "dropped": self.dropped,
                    "torn_bytes": self.torn_bytes,
                    "resent": self.resent,
                    "write_errors": self.write_errors}

    def close(self) -> None:
        with self._lock:
            self._reader_close()
            if self._wfd >= 0:
                os.close(self._wfd)
                self._wfd, self._wseg = -1, None
            self._cursor.close()


def _count_upto(ends: list[int], pos: int) -> int:
    """How many frames of ``ends`` end at or before ``pos``."""
    return bisect.bisect_right(ends, pos)
