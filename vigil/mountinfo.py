"""The mount table as the kernel writes it in /proc/PID/mountinfo: one parser for everyone.

Owns splitting the lines and undoing the kernel's octal escapes. What a mount means is the
callers' business: the baseline walk's mount rules (vigil.fim.mounts) and the devices that may
hold watched files (vigil.events.truncated). A line this parser does not understand is passed
over: the table is outside data, and one odd line is no reason to stop a scan.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

MOUNTINFO = Path("/proc/self/mountinfo")


class MountLine(NamedTuple):
    point: bytes
    fstype: str  # "" when the line has no "-" separator
    major: int
    minor: int


def unescape(field: bytes) -> bytes:
    r"""mountinfo writes space, tab, newline and backslash in a path as \040, \011, \012, \134."""
    if b"\\" not in field:
        return field
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i:i + 1] == b"\\" and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def parse(data: bytes) -> list[MountLine]:
    out: list[MountLine] = []
    for line in data.splitlines():
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        major, colon, minor = fields[2].partition(b":")
        if not (colon and major.isdigit() and minor.isdigit()):
            continue
        try:
            sep = fields.index(b"-", 6)
            fstype = fields[sep + 1].decode("ascii", "replace")
        except (ValueError, IndexError):
            fstype = ""
        out.append(MountLine(unescape(fields[4]), fstype, int(major), int(minor)))
    return out


def read(path: Path = MOUNTINFO) -> list[MountLine]:
    """The mount table; empty when it cannot be read."""
    try:
        return parse(path.read_bytes())
    except OSError:
        return []
