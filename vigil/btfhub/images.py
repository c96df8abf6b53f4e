"""Kernel BTF out of a kernel image file of any supported architecture.

Owns finding the BTF blob in what distributions ship as the kernel:

- an ELF vmlinux (ppc64el's /boot/vmlinux, debug packages): its .BTF section;
- an uncompressed image (arm64's raw `Image`, riscv64's EFI `Image`): the blob is found by its
  header (magic 0xeB9F, version 1, 24-byte header, sizes that add up, types that parse);
- a compressed one (x86 bzImage, ARM zImage, s390 image, Image.gz): the payload is found by
  its magic (gzip, xz, zstd, lz4, bzip2, lzma; for a bzImage at the offset its setup header
  gives), decompressed, and searched the same way (recursively, for nested containers);
- a debug vmlinux without BTF but with DWARF: pahole makes the BTF (btf_from_dwarf).

It also reads the release the image calls itself ("Linux version 6.1.0-50-amd64 (...").
Does not open packages (vigil.btfhub.packages) nor write files (vigil.btfhub.extract).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vigil.btfhub.elf import ELF_MAGIC, Elf
from vigil.btfhub.limits import (
    MAX_PAYLOAD,
    MAX_PAYLOADS_TOTAL,
    DecompressError,
    TooBigError,
    ToolMissingError,
    decompress,
    size_text,
)
from vigil.btfhub.rawbtf import RawBtf, blob_length, detect_arch, find_blobs
from vigil.kernel.errors import InputError

__all__ = ["DamagedImageError", "KernelBtf", "NoBtfError", "ToolMissingError",
           "btf_from_dwarf", "btf_from_image", "has_dwarf"]

_BANNER = re.compile(rb"Linux version (\d[\w.+~-]*) \(")
_PROBE = 1 << 16  # bytes decompressed to tell a real stream from a stray magic
_MIN_KERNEL = 1 << 20  # a kernel is megabytes: smaller streams are stray
_MAX_CANDIDATES = 24  # per format; stray matches of short magics are common in a kernel
_MAX_DEPTH = 2
_PAHOLE_TIMEOUT = 1800  # seconds; a debug vmlinux takes a minute or two


class NoBtfError(InputError):
    """A kernel image or package holds no BTF."""


class DamagedImageError(InputError):
    """A kernel image's payload is damaged or truncated, and no BTF was found elsewhere."""


@dataclass(frozen=True)
class KernelBtf:
    blob: bytes
    release: str | None  # from the image's banner (None when it has none)
    arch: str | None  # uname -m, from the BTF's struct pt_regs
    how: str  # "bzImage payload (xz) -> ELF .BTF"


# ---------------------------------------------------------------------------------------------
# Payload formats. Decompression is bounded (vigil.btfhub.limits): one payload at most
# MAX_PAYLOAD, all the streams tried for one image at most MAX_PAYLOADS_TOTAL.


@dataclass(frozen=True)
class _Format:
    name: str
    magic: bytes
    probe: bool = True  # try a small prefix first (short magics match stray bytes often)


FORMATS = (
    _Format("gzip", b"\x1f\x8b\x08"),
    _Format("xz", b"\xfd7zXZ\x00"),
    # the kernel's lz4 is the legacy frame format, which only the tool reads
    _Format("zstd", b"\x28\xb5\x2f\xfd", probe=False),
    _Format("lz4", b"\x02\x21\x4c\x18", probe=False),
    _Format("bzip2", b"BZh"),
    _Format("lzma", b"\x5d\x00\x00"),
)


@dataclass
class _Search:
    """One image's search: its name, what decompressing may still cost, what went wrong."""

    source: str
    total: int  # MAX_PAYLOADS_TOTAL, read when the search starts
    budget: int = -1
    # Offsets where the payload must be, not a stray magic: the whole file (Image.gz), the
    # one a bzImage's setup header gives. Damage there is worth saying.
    expected: set[int] = field(default_factory=lambda: {0})
    damaged: list[str] = field(default_factory=list)  # "the xz stream at 0x4a00 is damaged"

    def __post_init__(self) -> None:
        self.budget = self.total

    def decompress(self, fmt: _Format, data: memoryview, off: int,
                   expected: bool) -> bytes | None:
        """The stream at the start of ``data`` (``off`` in the image), or None when it is
        not one (a stray magic number). Damage where the payload is ``expected`` is noted; a
        stream bigger than the limits raises TooBigError."""
        if fmt.probe:
            try:
                if not decompress(fmt.name, data[:_PROBE], _PROBE, source=self.source,
                                  offset=off)[0]:
                    return None
            except TooBigError:
                pass  # its first bytes already give more than a probe needs: a real stream
            except DecompressError as e:
                if expected:
                    self._note(fmt, off, e)
                return None  # not even its first bytes decompress: not a stream
        limit = min(MAX_PAYLOAD, self.budget)
        try:
            out, complete = decompress(fmt.name, data, limit, source=self.source, offset=off)
        except TooBigError:
            if limit < MAX_PAYLOAD:
                raise TooBigError(f"the streams tried in this image decompress to more than "
                                  f"{size_text(self.total)} in all: refused (not a kernel "
                                  f"image)", source=self.source) from None
            raise
        except DecompressError as e:
            if expected:
                self._note(fmt, off, e)
            return None
        self.budget -= len(out)
        if not complete and expected:
            self.damaged.append(f"the {fmt.name} stream at {off:#x} ends early (truncated)")
        return out or None

    def _note(self, fmt: _Format, off: int, e: DecompressError) -> None:
        why = e.what.removeprefix(f"damaged {fmt.name} stream: ")
        self.damaged.append(f"the {fmt.name} stream at {off:#x} is damaged ({why})")


def compressed_candidates(data: bytes) -> Iterator[tuple[int, _Format]]:
    """(offset, format) of every place a compressed stream may start, in file order. A bzImage
    says where its payload is; other images are searched for the formats' magic numbers."""
    payload = _bzimage_payload(data)
    if payload is not None:
        start, _ = payload
        for fmt in FORMATS:
            if data.startswith(fmt.magic, start):
                yield start, fmt
    found: list[tuple[int, _Format]] = []
    for fmt in FORMATS:
        pos, n = data.find(fmt.magic), 0
        while pos >= 0 and n < _MAX_CANDIDATES:
            if fmt.name != "bzip2" or data[pos + 3: pos + 4] in b"123456789":
                found.append((pos, fmt))
                n += 1
            pos = data.find(fmt.magic, pos + 1)
    yield from sorted(found, key=lambda c: c[0])


def _bzimage_payload(data: bytes) -> tuple[int, int] | None:
    """(offset, length) of an x86 bzImage's compressed payload, from its setup header."""
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return None
    version = struct.unpack_from("<H", data, 0x206)[0]
    if version < 0x208:
        return None
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return (start, length) if start + length <= len(data) else None


def bzimage_release(data: bytes) -> str | None:
    """The release an x86 bzImage's setup header names (readable without decompressing)."""
    if len(data) < 0x210 or data[0x202:0x206] != b"HdrS":
        return None
    ptr = struct.unpack_from("<H", data, 0x20E)[0]
    if not ptr:
        return None
    text = data[ptr + 0x200: ptr + 0x200 + 256].split(b"\0", 1)[0]
    word = text.split(b" ", 1)[0].decode("ascii", "replace")
    return word or None


def banner_release(data: bytes) -> str | None:
    m = _BANNER.search(data)
    return m.group(1).decode("ascii", "replace") if m else None


def _from_elf(data: bytes, source: str) -> bytes | None:
    elf = Elf(data, source)
    sec = elf.section(".BTF")
    if sec is None:
        return None
    blob = elf.section_data(sec)
    return blob if blob_length(blob) is not None else None


def _largest_blob(data: bytes) -> bytes | None:
    best = max(find_blobs(data), key=lambda b: b[1], default=None)
    if best is None:
        return None
    off, n = best
    return data[off: off + n]


def _search(data: bytes, search: _Search, depth: int) -> tuple[bytes, str, bytes] | None:
    """(blob, how, the bytes it was found in)."""
    if data[:4] == ELF_MAGIC:
        blob = _from_elf(data, search.source)
        if blob is not None:
            return blob, "ELF .BTF section", data
    blob = _largest_blob(data)
    if blob is not None:
        return blob, "BTF blob found by its header", data
    if depth >= _MAX_DEPTH:
        return None
    tried: set[int] = set()
    view = memoryview(data)
    for off, fmt in compressed_candidates(data):
        if off in tried:  # a bzImage's payload is also found by its magic
            continue
        tried.add(off)
        out = search.decompress(fmt, view[off:], off, depth == 0 and off in search.expected)
        if out is None or len(out) < _MIN_KERNEL:  # skip stray streams
            continue
        found = _search(out, search, depth + 1)
        if found is not None:
            blob, how, where = found
            return blob, f"{fmt.name} payload at {off:#x} -> {how}", where
    return None


def has_dwarf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC and Elf(data).section(".debug_info") is not None


def btf_from_dwarf(data: bytes, source: str) -> KernelBtf:
    """BTF made from a debug vmlinux's DWARF with pahole (what the kernel build itself does
    with CONFIG_DEBUG_INFO_BTF): the way to kernels built without BTF, from their debug
    packages (Debian's linux-image-*-dbg)."""
    pahole = shutil.which("pahole")
    if pahole is None:
        raise ToolMissingError("pahole is needed to make BTF from DWARF: apt-get install dwarves")
    with tempfile.TemporaryDirectory(prefix="vigil-pahole-") as tmp:
        vmlinux, out = Path(tmp) / "vmlinux", Path(tmp) / "vmlinux.btf"
        vmlinux.write_bytes(data)
        try:
            p = subprocess.run([pahole, "-j", f"--btf_encode_detached={out}", str(vmlinux)],
                               capture_output=True, text=True, errors="replace", check=False,
                               timeout=_PAHOLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise NoBtfError(f"pahole did not finish in {_PAHOLE_TIMEOUT} s", source=source
                             ) from None
        if p.returncode != 0 or not out.is_file():
            raise NoBtfError(f"{source}: pahole could not make BTF from its DWARF: "
                             f"{(p.stderr or p.stdout).strip()[-400:]}")
        blob = out.read_bytes()
        version = subprocess.run([pahole, "--version"], capture_output=True, text=True,
                                 check=False).stdout.strip()
    return KernelBtf(blob, banner_release(data), detect_arch(RawBtf(blob, source)),
                     f"DWARF -> BTF (pahole {version})")


def btf_from_image(data: bytes, source: str) -> KernelBtf:
    """The kernel BTF inside ``data`` (a vmlinux, vmlinuz, Image, Image.gz, ...). Raises
    NoBtfError when there is none."""
    search = _Search(source, MAX_PAYLOADS_TOTAL)
    payload = _bzimage_payload(data)
    if payload is not None:
        search.expected.add(payload[0])
    found = _search(data, search, 0)
    if found is None and search.damaged:
        raise DamagedImageError(f"no BTF found: {'; '.join(search.damaged)}", source=source)
    if found is None:
        kind = "a kernel image without BTF (no BTF header in it or in any compressed payload)"
        if data[:4] == ELF_MAGIC:
            kind = "an ELF vmlinux without a .BTF section" + (
                "; it has DWARF, from which --from-dwarf makes BTF" if has_dwarf(data) else "")
        raise NoBtfError(f"{source}: no BTF inside: {kind}")
    blob, how, where = found
    release = bzimage_release(data) or banner_release(where) or banner_release(data)
    return KernelBtf(blob, release, detect_arch(RawBtf(blob, source)), how)
