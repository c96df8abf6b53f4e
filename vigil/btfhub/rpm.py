"""Kernel images and configs out of .rpm packages (Fedora, openSUSE, RHEL, ...).

Owns the rpm format, read in pure Python without the rpm tools: the lead, the signature and
main headers (NAME, VERSION, RELEASE, ARCH, PAYLOADCOMPRESSOR: their counts and sizes checked
against the file and rpm's own limits), then the compressed cpio ("newc") payload, read as a
stream; Fedora-style packages keep the image in lib/modules/<release>/vmlinuz, older ones in
boot/. What a kernel package holds (KernelPackage) and which members matter is
vigil.btfhub.packages'.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from vigil.btfhub.limits import MAX_IMAGE, ToolStream, decompressing, size_text
from vigil.btfhub.packages import KernelPackage, PackageError, is_interesting, limit, wanted

_NAME_MAX = 4096  # PATH_MAX: a longer name in a cpio header is damage
_RPM_INDEX_MAX = 1 << 16  # entries of one rpm header (rpm itself allows fewer)
_RPM_STORE_MAX = 256 << 20  # bytes of one rpm header's data (rpm's own limit)
_RPMTAG_NAME, _RPMTAG_VERSION, _RPMTAG_RELEASE, _RPMTAG_ARCH = 1000, 1001, 1002, 1022
_RPMTAG_PAYLOADCOMPRESSOR = 1125


def _rpm_header(f: IO[bytes], source: str, pad: bool) -> dict[int, str]:
    """String tags of one header structure; ``f`` is left after it (and its padding)."""
    at = f.tell()
    intro = f.read(16)
    if len(intro) < 16 or intro[:4] != b"\x8e\xad\xe8\x01":
        raise PackageError("damaged rpm header (no header magic)", source=source, offset=at)
    nindex, hsize = struct.unpack(">II", intro[8:16])
    if nindex > _RPM_INDEX_MAX or hsize > _RPM_STORE_MAX:
        raise PackageError(f"rpm header claims {nindex} entries and {hsize} bytes of data: "
                           f"refused (at most {_RPM_INDEX_MAX} and "
                           f"{size_text(_RPM_STORE_MAX)})", source=source, offset=at + 8)
    index = f.read(16 * nindex)
    store = f.read(hsize)
    if len(index) < 16 * nindex or len(store) < hsize:
        raise PackageError("truncated rpm header", source=source, offset=at)
    if pad:
        f.read((8 - (16 + 16 * nindex + hsize) % 8) % 8)
    tags: dict[int, str] = {}
    for i in range(nindex):
        tag, typ, off, _count = struct.unpack_from(">IIII", index, 16 * i)
        if typ in (6, 8, 9) and off < hsize:  # STRING, STRING_ARRAY, I18NSTRING: the first
            end = store.find(b"\0", off)
            tags[tag] = store[off: end if end >= 0 else hsize].decode("utf-8", "replace")
    return tags


def read_rpm(f: IO[bytes], path: Path, source: str) -> KernelPackage:
    pkg = KernelPackage(path)
    lead = f.read(96)
    if len(lead) < 96 or lead[:4] != b"\xed\xab\xee\xdb":
        raise PackageError("not an rpm package (no lead)", source=source)
    _rpm_header(f, source, pad=True)  # the signature header
    tags = _rpm_header(f, source, pad=False)
    pkg.name = tags.get(_RPMTAG_NAME, "")
    pkg.version = f"{tags.get(_RPMTAG_VERSION, '')}-{tags.get(_RPMTAG_RELEASE, '')}"
    pkg.arch = tags.get(_RPMTAG_ARCH, "")
    comp = tags.get(_RPMTAG_PAYLOADCOMPRESSOR, "gzip")
    suffix = {"gzip": ".gz", "xz": ".xz", "lzma": ".xz", "bzip2": ".bz2", "zstd": ".zst",
              "identity": ""}.get(comp)
    if suffix is None:
        raise PackageError(f"unknown rpm payload compressor {comp!r}", source=source)
    tools: list[ToolStream] = []
    try:
        stream = decompressing(f, suffix, f"the {comp} payload", source, tools)
        for name, data in cpio_newc(stream, source):
            if is_interesting(name):
                wanted(name, pkg, data)
    finally:
        for t in tools:
            t.close()
    return pkg


def cpio_newc(f: IO[bytes], source: str,
              keep: Callable[[str], bool] = is_interesting) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the members of a "newc" cpio stream (what rpm writes); the data only
    of regular files ``keep`` wants (b"" for the others, which are skipped)."""
    pos = 0
    kept = 0
    while True:
        hdr = f.read(110)
        if len(hdr) < 110 or hdr[:6] not in (b"070701", b"070702"):
            raise PackageError("damaged cpio payload (no newc header"
                               + (")" if len(hdr) == 110 else ": truncated)"),
                               source=source, offset=pos)
        try:
            fields = [int(hdr[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise PackageError("damaged cpio header (a field is not hexadecimal)",
                               source=source, offset=pos) from None
        mode, size, namesize = fields[1], fields[6], fields[11]
        if not 1 <= namesize <= _NAME_MAX:
            raise PackageError(f"cpio header with a name of {namesize} bytes", source=source,
                               offset=pos + 94)
        raw = f.read(namesize)
        if len(raw) < namesize:
            raise PackageError("truncated cpio payload", source=source, offset=pos + 110)
        name = raw.rstrip(b"\0").decode("utf-8", "replace")
        f.read((4 - (110 + namesize) % 4) % 4)
        pos += 110 + namesize + (4 - (110 + namesize) % 4) % 4
        if name == "TRAILER!!!":
            return
        wanted = keep(name) and mode & 0o170000 == 0o100000
        if wanted:
            if size > limit(name) or kept + size > MAX_IMAGE:
                raise PackageError(f"{name} is {size} bytes, too big for a kernel",
                                   source=source, offset=pos)
            data = f.read(size)
            if len(data) < size:
                raise PackageError(f"{name}: truncated cpio payload", source=source,
                                   offset=pos + len(data))
            kept += size
        else:
            data = b""
            left = size
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    raise PackageError("truncated cpio payload", source=source,
                                       offset=pos + size - left)
                left -= len(chunk)
        f.read((4 - size % 4) % 4)
        pos += size + (4 - size % 4) % 4
        yield name, data
