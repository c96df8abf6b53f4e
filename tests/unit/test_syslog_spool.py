"""The syslog spool's own logic on real files: order, the cursor across reopenings, the bound
(oldest dropped and counted exactly), torn records cut off, the cursor's torn store survived."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from vigil.outputs.spool import Chunk, Spool, frame
from vigil.outputs.syslog_msg import seq_valid

_SEQ = re.compile(rb'seq="(\d+)"')


def msg(seq: int, pad: int = 20) -> bytes:
    return b'<109>1 - host vigil 1 exec [vigil@32473 seq="%d"] ' % seq + b"x" * pad


def push(sp: Spool, n: int, pad: int = 20) -> None:
    seq = sp.next_seq
    sp.append([frame(msg(seq + i, pad)) for i in range(n)], seq)


def open_spool(d: Path, max_bytes: int = 1 << 20, seg: int | None = None) -> Spool:
    return Spool(d, max_bytes, valid=seq_valid, segment_bytes=seg)


def seqs_of(chunk: Chunk) -> list[int]:
    data = chunk.view[chunk.start:chunk.end]
    return [int(m) for m in _SEQ.findall(data)]


def drain(sp: Spool, limit: int | None = None) -> list[int]:
    """Takes and 'sends' everything (or ``limit`` messages), as the sender would."""
    got: list[int] = []
    while (c := sp.take(max_bytes=300)) is not None:
        seqs = seqs_of(c)
        if limit is not None and len(got) + len(seqs) > limit:
            k = limit - len(got)
            sp.advance(c, c.ends[k - 1]) if k else None
            got += seqs[:k]
            break
        sp.advance(c, c.end)
        got += seqs
    return got


def test_order_and_resume_after_reopen(tmp_path: Path) -> None:
    sp = open_spool(tmp_path, seg=1000)
    for _ in range(10):
        push(sp, 7)
    assert drain(sp, limit=23) == list(range(1, 24))
    sp.close()
    sp = open_spool(tmp_path, seg=1000)         # the agent restarted
    assert sp.stats()["queued"] == 70 - 23
    push(sp, 5)
    assert drain(sp) == list(range(24, 76))
    assert sp.stats()["queued"] == 0
    # wholly sent segments are removed, not kept forever
    assert sp.stats()["segments"] <= 2
    sp.close()


def test_partial_send_keeps_the_cursor_at_a_whole_message(tmp_path: Path) -> None:
    sp = open_spool(tmp_path)
    push(sp, 3)
    c = sp.take()
    assert c is not None
    assert sp.advance(c, c.ends[0] + 5) == 1     # one whole message and a bit of the next
    sp.close()
    sp = open_spool(tmp_path)
    assert drain(sp) == [2, 3]
    sp.close()


def test_torn_last_record_is_cut_off(tmp_path: Path) -> None:
    sp = open_spool(tmp_path)
    push(sp, 4)
    sp.close()
    seg = next(tmp_path.glob("*.seg"))
    whole = seg.read_bytes()
    # a kill -9 in the middle of the next batch's write: its first frame whole, the second cut
    with open(seg, "ab") as f:
        f.write(frame(msg(5)) + frame(msg(6))[:17])
    sp = open_spool(tmp_path)
    assert sp.torn_bytes == 17
    assert sp.next_seq == 6
    push(sp, 2)
    assert drain(sp) == [1, 2, 3, 4, 5, 6, 7]
    assert seg.read_bytes().startswith(whole)
    sp.close()


@pytest.mark.parametrize("garbage", [b"\0" * 64, b"12 <13>1 no seq here", b"abc def",
                                     frame(msg(99))])
def test_garbage_after_the_last_record_is_never_replayed(tmp_path: Path,
                                                         garbage: bytes) -> None:
    sp = open_spool(tmp_path)
    push(sp, 2)
    sp.close()
    with open(next(tmp_path.glob("*.seg")), "ab") as f:
        f.write(garbage)
    sp = open_spool(tmp_path)
    assert sp.torn_bytes == len(garbage)
    assert drain(sp) == [1, 2]
    sp.close()


def test_full_spool_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    size = len(frame(msg(100, pad=200)))
    sp = open_spool(tmp_path, max_bytes=40 * size, seg=8 * size)
    total = 0
    for _ in range(30):
        push(sp, 7, pad=200)
        total += 7
        st = sp.stats()
        assert st["spool_bytes"] <= 40 * size
    st = sp.stats()
    got = drain(sp)
    # the newest survive, in order, and every missing one is counted
    assert got == list(range(total - len(got) + 1, total + 1))
    assert st["dropped"] == total - len(got) == sp.dropped
    assert st["queued"] == len(got)
    sp.close()
    # the count is this process's; the messages themselves stay gone after a restart
    sp = open_spool(tmp_path, max_bytes=40 * size, seg=8 * size)
    assert drain(sp) == []
    sp.close()


def test_drop_while_a_chunk_is_being_sent(tmp_path: Path) -> None:
    size = len(frame(msg(100, pad=200)))
    sp = open_spool(tmp_path, max_bytes=20 * size, seg=5 * size)
    push(sp, 5, pad=200)
    c = sp.take()
    assert c is not None and seqs_of(c) == [1, 2, 3, 4, 5]
    for _ in range(4):                  # the writer fills the spool: segment 1 is dropped
        push(sp, 5, pad=200)
    assert sp.dropped == 5
    sp.advance(c, c.ends[1])            # yet two of them made it out
    assert (sp.dropped, sp.sent) == (3, 2)
    assert drain(sp) == list(range(6, 26))
    sp.close()


def test_batch_larger_than_the_spool_keeps_its_newest(tmp_path: Path) -> None:
    size = len(frame(msg(100, pad=100)))
    sp = open_spool(tmp_path, max_bytes=10 * size)
    push(sp, 25, pad=100)
    assert sp.dropped == 15
    assert drain(sp) == list(range(16, 26))
    push(sp, 1, pad=100)
    assert drain(sp) == [26]
    sp.close()


def test_rewind_sends_again(tmp_path: Path) -> None:
    sp = open_spool(tmp_path)
    push(sp, 6)
    c = sp.take()
    assert c is not None
    sp.advance(c, c.end)
    # the receiver's kernel acknowledged two messages and a half: the rest go again
    assert sp.rewind(c, c.ends[1] + 3) == 4
    assert drain(sp) == [3, 4, 5, 6]
    sp.close()


def test_torn_cursor_store_falls_back_to_the_other_slot(tmp_path: Path) -> None:
    sp = open_spool(tmp_path)
    push(sp, 5)
    assert drain(sp, limit=2) == [1, 2]
    c = sp.take()
    assert c is not None
    sp.advance(c, c.ends[0])            # the newest slot says 3 were sent
    sp.close()
    cur = tmp_path / "cursor"
    raw = bytearray(cur.read_bytes())
    slots = [raw[0:40], raw[40:80]]
    newest = max(range(2), key=lambda i: int.from_bytes(slots[i][:8], "little"))
    raw[newest * 40 + 20] ^= 0xFF       # that store was torn by a kill
    cur.write_bytes(bytes(raw))
    sp = open_spool(tmp_path)
    assert drain(sp) == [3, 4, 5]       # the slot before: one message more, never one less
    sp.close()


def test_spool_folder_that_cannot_be_made(tmp_path: Path) -> None:
    from vigil.outputs.spool import SpoolError
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match=r"syslog spool .*file/x: Not a directory"):
        open_spool(tmp_path / "file" / "x")


def test_segment_files_are_private(tmp_path: Path) -> None:
    sp = open_spool(tmp_path / "s")
    push(sp, 1)
    for p in (tmp_path / "s").iterdir():
        assert os.stat(p).st_mode & 0o077 == 0
    assert os.stat(tmp_path / "s").st_mode & 0o077 == 0
    sp.close()
