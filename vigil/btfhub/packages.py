"""Kernel images and configs out of distribution kernel packages (.deb and .rpm).

Owns the two package formats, read in pure Python with no dpkg or rpm tools:

- .deb: an `ar` archive; its control.tar.* gives Package, Version and Architecture, its
  data.tar.* (xz, gzip, bzip2, zstd) holds boot/vmlinuz-<release> (or vmlinux-) and
  boot/config-<release>, or for a debug package usr/lib/debug/boot/vmlinux-<release>. The
  tar is read as a stream and left as soon as /boot is behind, so the modules (most of the
  package) are never decompressed.
- .rpm: the lead, the signature and main headers (NAME, VERSION, RELEASE, ARCH,
  PAYLOADCOMPRESSOR), then a compressed cpio ("newc") payload; Fedora-style packages keep the
  image in lib/modules/<release>/vmlinuz, older ones in boot/.

Does not look inside the images (vigil.btfhub.images).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from vigil.btfhub.images import ToolMissingError
from vigil.kernel.errors import VigilError

# Where packages keep the kernel image and its config, as paths inside the package.
_IMAGE = re.compile(r"^(?:\./)?(?:usr/)?(?:lib/debug/)?(?:boot/(?:vmlinu[xz]|Image)-(?P<r1>[^/]+)|"
                    r"lib/modules/(?P<r2>[^/]+)/(?:vmlinu[xz]|Image))$")
_CONFIG = re.compile(r"^(?:\./)?(?:usr/)?(?:boot/config-(?P<r1>[^/]+)|"
                     r"lib/modules/(?P<r2>[^/]+)/config)$")
_MAX_MEMBER = 512 << 20


class PackageError(VigilError):
    """A package file is damaged or not of the kind its name says."""


@dataclass
class KernelPackage:
    path: Path
    name: str = ""
    version: str = ""
    arch: str = ""  # as the package says (Debian: amd64, arm64, ...; rpm: x86_64, aarch64)
    images: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # release -> (path, data)
    configs: dict[str, str] = field(default_factory=dict)  # release -> config text

    def btf_config(self, release: str) -> str | None:
        """'y', 'not set', or None when the package carries no config for ``release``."""
        text = self.configs.get(release)
        if text is None:
            return None
        if re.search(r"^CONFIG_DEBUG_INFO_BTF=y$", text, re.M):
            return "y"
        return "not set"


def _release(m: re.Match[str]) -> str:
    return m.group("r1") or m.group("r2")


def _wanted(name: str, pkg: KernelPackage, data: bytes) -> None:
    m = _IMAGE.match(name)
    if m:
        pkg.images[_release(m)] = (name.removeprefix("./"), data)
        return
    m = _CONFIG.match(name)
    if m:
        pkg.configs[_release(m)] = data.decode("utf-8", "replace")


def _is_interesting(name: str) -> bool:
    return bool(_IMAGE.match(name) or _CONFIG.match(name))


def read_package(path: Path) -> KernelPackage:
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"!<arch>\n":
        return read_deb(path)
    if head[:4] == b"\xed\xab\xee\xdb":
        return read_rpm(path)
    raise PackageError(f"{path} is neither a .deb nor an .rpm package")


# ---------------------------------------------------------------------------------------------
# .deb


def _ar_members(f: IO[bytes], path: Path) -> Iterator[tuple[str, int]]:
    """(name, size) of each member; ``f`` is left at the member's data."""
    if f.read(8) != b"!<arch>\n":
        raise PackageError(f"{path} is not an ar archive (.deb)")
    while True:
        hdr = f.read(60)
        if not hdr:
            return
        if len(hdr) < 60 or hdr[58:60] != b"`\n":
            raise PackageError(f"{path}: damaged ar member header")
        name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(hdr[48:58].decode("ascii").strip())
        start = f.tell()
        yield name, size
        f.seek(start + size + (size & 1))


def _decompressing(f: IO[bytes], suffix: str, path: Path) -> IO[bytes]:
    if suffix in ("", ".tar"):
        return f
    if suffix == ".xz":
        return lzma.open(f)
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    if suffix == ".bz2":
        return bz2.open(f)
    if suffix == ".zst":
        if shutil.which("zstd") is None:
            raise ToolMissingError(f"{path} is compressed with zstd: apt-get install zstd")
        p = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert p.stdin is not None and p.stdout is not None
        # Feeding and reading at once needs a thread; the member is small enough to hand over
        # whole, and the output is read as a stream.
        data = f.read()
        out, _ = p.communicate(data)
        return io.BytesIO(out)
    raise PackageError(f"{path}: unknown compression {suffix!r}")


class _Bounded(io.RawIOBase):
    """A window of ``size`` bytes of ``f`` starting at its current position."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f, self._left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self._left)
        data = self._f.read(n)
        b[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _control_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith((" ", "\t")):
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def read_deb(path: Path) -> KernelPackage:
    pkg = KernelPackage(path)
    with open(path, "rb") as f:
        for name, size in _ar_members(f, path):
            if not name.startswith(("control.tar", "data.tar")):
                continue
            suffix = name.split(".tar", 1)[1]
            raw = io.BufferedReader(_Bounded(f, size), 1 << 20)
            stream = _decompressing(raw, suffix, path)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                if name.startswith("control.tar"):
                    for m in tar:
                        if m.name.lstrip("./") == "control" and m.isfile():
                            ex = tar.extractfile(m)
                            if ex is not None:
                                fields = _control_fields(ex.read().decode("utf-8", "replace"))
                                pkg.name = fields.get("Package", "")
                                pkg.version = fields.get("Version", "")
                                pkg.arch = fields.get("Architecture", "")
                            break
                else:
                    _scan_tar(tar, pkg)
    if not pkg.name:
        raise PackageError(f"{path}: no control file (not a Debian binary package?)")
    return pkg


def _scan_tar(tar: tarfile.TarFile, pkg: KernelPackage) -> None:
    """Collect images and configs; stop at the first member outside the directories they were
    found in (the rest is modules, most of the package)."""
    dirs: set[str] = set()
    for m in tar:
        name = m.name.removeprefix("./")
        if _is_interesting(name) and m.isfile():
            if m.size > _MAX_MEMBER:
                raise PackageError(f"{pkg.path}: {name} is {m.size} bytes, too big for a kernel")
            ex = tar.extractfile(m)
            if ex is not None:
                _wanted(name, pkg, ex.read())
                dirs.add(name.rsplit("/", 1)[0])
        elif pkg.images and name.rsplit("/", 1)[0] not in dirs and name not in dirs:
            return


# ---------------------------------------------------------------------------------------------
# .rpm

_RPMTAG_NAME, _RPMTAG_VERSION, _RPMTAG_RELEASE, _RPMTAG_ARCH = 1000, 1001, 1002, 1022
_RPMTAG_PAYLOADCOMPRESSOR = 1125


def _rpm_header(f: IO[bytes], path: Path, pad: bool) -> dict[int, str]:
    """String tags of one header structure; ``f`` is left after it (and its padding)."""
    intro = f.read(16)
    if len(intro) < 16 or intro[:4] != b"\x8e\xad\xe8\x01":
        raise PackageError(f"{path}: damaged rpm header")
    nindex, hsize = struct.unpack(">II", intro[8:16])
    index = f.read(16 * nindex)
    store = f.read(hsize)
    if len(store) < hsize:
        raise PackageError(f"{path}: truncated rpm header")
    if pad:
        f.read((8 - (16 + 16 * nindex + hsize) % 8) % 8)
    tags: dict[int, str] = {}
    for i in range(nindex):
        tag, typ, off, _count = struct.unpack_from(">IIII", index, 16 * i)
        if typ in (6, 8, 9):  # STRING, STRING_ARRAY, I18NSTRING: the first string
            tags[tag] = store[off: store.find(b"\0", off)].decode("utf-8", "replace")
    return tags


def read_rpm(path: Path) -> KernelPackage:
    pkg = KernelPackage(path)
    with open(path, "rb") as f:
        lead = f.read(96)
        if lead[:4] != b"\xed\xab\xee\xdb":
            raise PackageError(f"{path} is not an rpm package")
        _rpm_header(f, path, pad=True)  # the signature header
        tags = _rpm_header(f, path, pad=False)
        pkg.name = tags.get(_RPMTAG_NAME, "")
        pkg.version = f"{tags.get(_RPMTAG_VERSION, '')}-{tags.get(_RPMTAG_RELEASE, '')}"
        pkg.arch = tags.get(_RPMTAG_ARCH, "")
        comp = tags.get(_RPMTAG_PAYLOADCOMPRESSOR, "gzip")
        suffix = {"gzip": ".gz", "xz": ".xz", "lzma": ".xz", "bzip2": ".bz2", "zstd": ".zst",
                  "identity": ""}.get(comp)
        if suffix is None:
            raise PackageError(f"{path}: unknown rpm payload compressor {comp!r}")
        stream = _decompressing(f, suffix, path)
        for name, data in _cpio_newc(stream, path):
            if _is_interesting(name):
                _wanted(name, pkg, data)
    return pkg


def _cpio_newc(f: IO[bytes], path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular files of a "newc" cpio stream (what rpm writes)."""
    while True:
        hdr = f.read(110)
        if len(hdr) < 110 or hdr[:6] not in (b"070701", b"070702"):
            raise PackageError(f"{path}: damaged cpio payload")
        fields = [int(hdr[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = f.read(namesize)[:-1].decode("utf-8", "replace")
        f.read((4 - (110 + namesize) % 4) % 4)
        if name == "TRAILER!!!":
            return
        if size > _MAX_MEMBER and _is_interesting(name):
            raise PackageError(f"{path}: {name} is {size} bytes, too big for a kernel")
        if _is_interesting(name) and mode & 0o170000 == 0o100000:
            data = f.read(size)
        else:
            data = b""
            left = size
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    raise PackageError(f"{path}: truncated cpio payload")
                left -= len(chunk)
        f.read((4 - size % 4) % 4)
        yield name, data
