"""The ring reader's batch boundary: which records of the shared memory a batch takes (committed
ones up to the first still reserved; discarded ones skipped but consumed), on a hand-built ring
image with the kernel's header layout (length | BUSY | DISCARD, pad to 8 bytes), including a
batch that wraps at the end of the data."""

from __future__ import annotations

import struct

from vigil.kernel.ringbuf import committed

BUSY = 1 << 31
DISCARD = 1 << 30


def image(*records: tuple[bytes, int]) -> bytearray:
    """Ring data: each (payload, flags) as an 8-byte header then the payload padded to 8."""
    out = bytearray()
    for payload, flags in records:
        out += struct.pack("=II", len(payload) | flags, 0) + payload
        out += b"\0" * (-len(payload) % 8)
    return out


def ring(data: bytearray, size: int, cons: int) -> bytearray:
    """A ring of ``size`` bytes holding ``data`` from position ``cons`` on (wrapping)."""
    buf = bytearray(b"\xee" * size)
    for i, b in enumerate(data):
        buf[(cons + i) % size] = b
    return buf


def payloads(buf: bytearray, cons: int, avail: int, base: int = 0) -> tuple[int, list[bytes]]:
    """What a batch hands out, read the way the reader copies it (in two pieces if it wraps)."""
    size = len(buf) - base
    view = memoryview(buf)
    end, spans = committed(view, base, size - 1, cons, avail)
    off = cons % size
    flat = bytes(view[base + off:base + min(off + end, size)]) + \
        bytes(view[base:base + max(off + end - size, 0)])
    return end, [flat[a:a + n] for a, n in spans]


def test_every_committed_record_in_order() -> None:
    data = image((b"one", 0), (b"eight by", 0), (b"", 0), (b"x" * 13, 0))
    end, got = payloads(ring(data, 256, 0), 0, len(data))
    assert got == [b"one", b"eight by", b"", b"x" * 13]
    assert end == len(data)


def test_stops_at_the_first_reserved_record() -> None:
    data = image((b"a", 0), (b"busy", BUSY), (b"after", 0))
    end, got = payloads(ring(data, 256, 0), 0, len(data))
    assert got == [b"a"]
    assert end == 16   # the consumer stops before the reserved record: it comes next time


def test_discarded_records_are_consumed_but_not_handed_out() -> None:
    data = image((b"gone", DISCARD), (b"kept", 0))
    end, got = payloads(ring(data, 256, 0), 0, len(data))
    assert got == [b"kept"]
    assert end == len(data)


def test_limit_and_a_data_area_after_the_producer_page() -> None:
    data = image((b"first", 0), (b"second", 0), (b"third", 0))
    buf = bytearray(b"P" * 64) + ring(data, 256, 24)   # 64 bytes standing for the page
    # a limit inside the second record still takes it whole: records are never split
    end, got = payloads(buf, 24, 17, base=64)
    assert got == [b"first", b"second"]
    assert end == 32
    assert payloads(buf, 24, 0, base=64) == (0, [])


def test_a_batch_that_wraps_past_the_end_of_the_data() -> None:
    data = image((b"before the end", 0), (b"across the end of the ring", 0), (b"after", 0))
    size = 128
    # positions only grow (the offset is cons % size); the second record's header is the
    # data's last 8 bytes and its payload starts over at the beginning
    cons = (1 << 40) + size - 32
    end, got = payloads(ring(data, size, cons), cons, len(data))
    assert got == [b"before the end", b"across the end of the ring", b"after"]
    assert end == len(data)
