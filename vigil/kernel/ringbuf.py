"""A batch reader of a BPF ring buffer map, in Python, straight from its shared memory.

Owns: mapping the ring (consumer page read-write, producer page and data read-only, the data
once: the kernel's second copy would double the ring's share of the agent's RSS), waiting for
data with epoll, and handing out every committed record of a batch: the batch's bytes are
copied out of the ring at once (in two pieces when it wraps) and the consumer position advanced
before any record is handed out, so a slow batch never holds ring space the kernel needs
during a burst.

Why not libbpf's ring_buffer__poll: it calls back into Python once per record through ctypes,
which drains ~0.3-0.5 M records/s; reading the memory in bulk is several times faster.

Memory ordering: x86-64 loads are not reordered with other loads, so reading the producer
position and then the record headers needs no barrier. On weakly ordered CPUs this reader is not
safe and ``RingReader`` refuses to start (see ``ORDERED_ARCHES``). Nor on 32-bit x86: there the
kernel's positions are 4-byte unsigned longs (and the producer page's next word is another
field), while this reader reads and writes them as 8 bytes. Those machines use the perf
event array.
"""

from __future__ import annotations

import contextlib
import mmap
import platform
import select
import struct
from collections.abc import Iterator
from typing import Final

from vigil.kernel.errors import NotSupportedError

_BUSY: Final = 1 << 31
_DISCARD: Final = 1 << 30
_LEN_MASK: Final = ~(_BUSY | _DISCARD)
_HDR: Final = 8
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")

ORDERED_ARCHES: Final = frozenset({"x86_64"})


def committed(view: memoryview, base: int, mask: int, cons: int,
              avail: int) -> tuple[int, list[tuple[int, int]]]:
    """The committed prefix of the ``avail`` bytes of ring data after position ``cons``, the
    data (``mask`` + 1 bytes, a power of two) at ``view[base:]``: its length (up to the first
    record still reserved, whose successors wait for it) and each record's payload as
    (start, length) relative to ``cons``; discarded records take room but are not listed.
    Headers are 8-byte aligned, so a header never wraps; a payload may."""
    spans: list[tuple[int, int]] = []
    pos = 0
    unpack = _U32.unpack_from
    while pos < avail:
        word = unpack(view, base + ((cons + pos) & mask))[0]
        if word & _BUSY:
            break  # reserved, not yet committed
        length = word & _LEN_MASK
        if not word & _DISCARD:
            spans.append((pos + _HDR, length))
        pos += (length + _HDR + 7) & ~7
    return pos, spans


class RingReader:
    """Reads records of one ring buffer map fd. Not thread-safe; one reader per ring."""

    def __init__(self, map_fd: int, size: int) -> None:
        arch = platform.machine()
        if arch not in ORDERED_ARCHES:
            raise NotSupportedError(
                "reading the ring buffer from Python",
                "a strongly ordered 64-bit CPU (x86_64)",
                arch,
            )
        if size & (size - 1):
            raise ValueError(f"ring size {size} is not a power of two")
        page = mmap.PAGESIZE
        self._size = size
        self._mask = size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        # The producer page and the data once (the kernel offers the data twice in a row, for
        # wrapped records to be contiguous; but it maps every page at once, so each copy
        # counts fully in the agent's RSS): a batch that wraps is copied in two pieces.
        self._data = mmap.mmap(map_fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)
        self._view = memoryview(self._data)
        self._base = page  # data starts after the producer page
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)
        self.records = 0

    def wait(self, timeout: float) -> None:
        """Sleeps until the kernel forces a wakeup or ``timeout`` seconds pass.

        The BPF side submits without waking the reader until enough bytes are pending, so a
        timeout is the normal way to bound latency for a trickle of events.
        """
        with contextlib.suppress(InterruptedError):
            self._epoll.poll(timeout)

    def drain(self, max_bytes: int | None = None) -> Iterator[memoryview]:
        """Yields every record committed when the call starts (up to ``max_bytes`` of the
        ring), copied out of the ring in one go: the consumer position advances before the
        first record is yielded, so the kernel may fill the whole ring again while the batch
        is processed (a burst is not held back by the batch in hand).

        The memoryviews point into the batch's copy: they stay valid as long as they are
        referenced, after the next call too.
        """
        cons = _U64.unpack_from(self._consumer, 0)[0]
        prod = _U64.unpack_from(self._data, 0)[0]
        limit = prod if max_bytes is None else min(prod, cons + max_bytes)
        view, base, size = self._view, self._base, self._size
        end, spans = committed(view, base, self._mask, cons, limit - cons)
        if not end:
            return
        off = cons & self._mask
        if off + end <= size:
            batch = memoryview(view[base + off:base + off + end].tobytes())
        else:  # the batch wraps at the end of the data
            batch = memoryview(b"".join((view[base + off:base + size],
                                         view[base:base + off + end - size])))
        self._consumer[0:8] = _U64.pack(cons + end)
        self.records += len(spans)
        for start, length in spans:
            yield batch[start:start + length]

    def fill_ratio(self) -> float | None:
        """How full the ring is, 0..1: bytes the kernel wrote that this reader has not consumed
        yet, over the ring's size, from the two positions in the shared pages. Safe to call
        from another thread (two 8-byte loads, no state changed); None once closed."""
        try:
            cons = _U64.unpack_from(self._consumer, 0)[0]
            prod = _U64.unpack_from(self._data, 0)[0]
        except ValueError:  # mapping closed
            return None
        return min(max(prod - cons, 0) / self._size, 1.0)

    def close(self) -> None:
        """Unmaps the ring. After an error in the middle of a batch, a traceback may still
        hold views of it: the mappings then go with the last of them (no second error over
        the first)."""
        self._epoll.close()
        self._view.release()
        for m in (self._data, self._consumer):
            with contextlib.suppress(BufferError):
                m.close()

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

