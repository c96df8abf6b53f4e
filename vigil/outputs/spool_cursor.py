"""The syslog spool's cursor file: where the sender is, stored after every send.

Owns the file's format and its torn-store safety; what the position means is
vigil.outputs.spool. Two 40-byte slots (generation, segment, offset, sequence number, CRC-32)
written in turn through a shared mapping: a store is a memory copy (no system call), in the
page cache at once, and a ``kill -9`` in the middle of one leaves the other slot whole. The
newest slot whose CRC matches wins at load.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from pathlib import Path
from typing import Final

_SLOT: Final = struct.Struct("<QQQQ")     # generation, segment, offset, seq
_CRC: Final = struct.Struct("<I")
_SLOT_SIZE: Final = 40
SIZE: Final = 2 * _SLOT_SIZE


class CursorFile:
    """OSError when the file cannot be opened or mapped."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(self._fd).st_size < SIZE:
                os.ftruncate(self._fd, SIZE)
            self._map = mmap.mmap(self._fd, SIZE)
        except OSError:
            os.close(self._fd)
            raise
        self._gen = 0

    def load(self) -> tuple[int, int, int] | None:
        """(segment, offset, seq) of the newest whole store, or None."""
        best: tuple[int, int, int, int] | None = None
        for i in range(2):
            at = i * _SLOT_SIZE
            raw = self._map[at:at + _SLOT.size]
            (crc,) = _CRC.unpack_from(self._map, at + _SLOT.size)
            gen, seg, off, seq = _SLOT.unpack(raw)
            if gen and crc == zlib.crc32(raw) and (best is None or gen > best[0]):
                best = (gen, seg, off, seq)
        if best is None:
            return None
        self._gen = max(self._gen, best[0])
        return best[1], best[2], best[3]

    def store(self, seg: int, off: int, seq: int) -> None:
        self._gen += 1
        raw = _SLOT.pack(self._gen, seg, off, seq)
        at = (self._gen % 2) * _SLOT_SIZE
        self._map[at:at + _SLOT.size + _CRC.size] = raw + _CRC.pack(zlib.crc32(raw))

    def close(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1
