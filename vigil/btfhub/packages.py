"""Kernel images and configs out of distribution kernel packages (.deb and .rpm).

Owns the two package formats, read in pure Python with no dpkg or rpm tools:

- .deb: an `ar` archive; its control.tar.* gives Package, Version and Architecture, its
  data.tar.* (xz, gzip, bzip2, zstd) holds boot/vmlinuz-<release> (or vmlinux-) and
  boot/config-<release>, or for a debug package usr/lib/debug/boot/vmlinux-<release>. The
  tar is read as a stream and left as soon as /boot is behind, so the modules (most of the
  package) are never decompressed.
- .rpm: the lead, headers and cpio payload, in vigil.btfhub.rpm.

Every size a header claims is checked against the bytes there and against the limits of
vigil.btfhub.limits before anything is read or allocated; a damaged package (a header that
does not parse, a member past the end, a stream that does not decompress) is a PackageError
naming the file, the member and the offset. Does not look inside the images
(vigil.btfhub.images).
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from vigil.btfhub.limits import MAX_IMAGE, MAX_SMALL, ToolStream, decompressing, size_text
from vigil.kernel.errors import InputError

# Where packages keep the kernel image and its config, as paths inside the package.
_IMAGE = re.compile(r"^(?:\./)?(?:usr/)?(?:lib/debug/)?(?:boot/(?:vmlinu[xz]|Image)-(?P<r1>[^/]+)|"
                    r"lib/modules/(?P<r2>[^/]+)/(?:vmlinu[xz]|Image))$")
_CONFIG = re.compile(r"^(?:\./)?(?:usr/)?(?:boot/config-(?P<r1>[^/]+)|"
                     r"lib/modules/(?P<r2>[^/]+)/config)$")


class PackageError(InputError):
    """A package file is damaged or not of the kind its name says."""


@dataclass
class KernelPackage:
    path: Path
    name: str = ""
    version: str = ""
    arch: str = ""  # as the package says (Debian: amd64, arm64, ...; rpm: x86_64, aarch64)
    images: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # release -> (path, data)
    configs: dict[str, str] = field(default_factory=dict)  # release -> config text
    kept: int = 0  # bytes of images and configs held: bounded by MAX_IMAGE

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


def limit(name: str) -> int:
    """How big a wanted member may be: an image, or a small config."""
    return MAX_IMAGE if _IMAGE.match(name) else MAX_SMALL


def _want(pkg: KernelPackage, name: str, size: int, source: str) -> None:
    """Refuse a member too big to be what its name says, before reading it."""
    if size > limit(name):
        raise PackageError(f"{name} is {size} bytes, too big for a kernel "
                           f"{'image' if _IMAGE.match(name) else 'config'} (at most "
                           f"{size_text(limit(name))})", source=source)
    if pkg.kept + size > MAX_IMAGE:
        raise PackageError(f"more than {size_text(MAX_IMAGE)} of kernel images and configs: "
                           f"refused", source=source)


def wanted(name: str, pkg: KernelPackage, data: bytes) -> None:
    pkg.kept += len(data)
    m = _IMAGE.match(name)
    if m:
        pkg.images[_release(m)] = (name.removeprefix("./"), data)
        return
    m = _CONFIG.match(name)
    if m:
        pkg.configs[_release(m)] = data.decode("utf-8", "replace")


def is_interesting(name: str) -> bool:
    return bool(_IMAGE.match(name) or _CONFIG.match(name))


def read_package(path: Path) -> KernelPackage:
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below, after the format is known)
    except OSError as e:
        raise PackageError(f"cannot read: {e.strerror}", source=str(path)) from None
    with f:
        return read_package_file(f, path)


def read_package_file(f: IO[bytes], path: Path, source: str | None = None) -> KernelPackage:
    """The package in ``f`` (positioned at its start); ``path`` is what errors name."""
    source = source or str(path)
    head = f.read(8)
    f.seek(0)
    try:
        if head == b"!<arch>\n":
            return _read_deb(f, path, source)
        if head[:4] == b"\xed\xab\xee\xdb":
            from vigil.btfhub.rpm import read_rpm  # it builds on this module

            return read_rpm(f, path, source)
    except tarfile.TarError as e:
        raise PackageError(f"damaged tar data: {e}", source=source) from None
    except OSError as e:
        raise PackageError(f"cannot read: {e.strerror or e}", source=source) from None
    raise PackageError("neither a .deb nor an .rpm package", source=source)


# ---------------------------------------------------------------------------------------------
# Streams: decompressed, counted, their failures typed


class _Member(tarfile.TarInfo):
    """A tar header whose extended headers (pax, GNU long names), which tarfile reads whole
    into memory, must be small."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                         tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE) and self.size > MAX_SMALL:
            raise tarfile.HeaderError(f"an extended header of {self.size} bytes at "
                                      f"{self.offset:#x}")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _tar_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of a tar stream. tarfile keeps every member it has read in a list, which
    a hostile stream of millions of headers would grow without end: it is emptied as we go
    (a stream is read once; nothing looks back)."""
    for m in tar:
        yield m
        tar.__dict__["members"].clear()  # not in typeshed


def _read_member(tar: tarfile.TarFile, m: tarfile.TarInfo, source: str) -> bytes | None:
    ex = tar.extractfile(m)
    if ex is None:
        return None
    data = ex.read(m.size)
    if len(data) != m.size:
        raise PackageError(f"{m.name}: {len(data)} of its {m.size} bytes (truncated)",
                           source=source)
    return data


# ---------------------------------------------------------------------------------------------
# .deb


def _ar_members(f: IO[bytes], source: str) -> Iterator[tuple[str, int]]:
    """(name, size) of each member; ``f`` is left at the member's data."""
    if f.read(8) != b"!<arch>\n":
        raise PackageError("not an ar archive (.deb)", source=source)
    end = f.seek(0, io.SEEK_END)
    pos = f.seek(8)
    while True:
        hdr = f.read(60)
        if not hdr:
            return
        if len(hdr) < 60 or hdr[58:60] != b"`\n":
            raise PackageError("damaged ar member header", source=source, offset=pos)
        name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
        field_ = hdr[48:58].decode("ascii", "replace").strip()
        if not field_.isdigit():
            raise PackageError(f"ar member {name!r} has no valid size ({field_!r})",
                               source=source, offset=pos + 48)
        size = int(field_)
        start = pos + 60
        if start + size > end:
            raise PackageError(f"ar member {name!r} claims {size} bytes, past the end of the "
                               f"file ({end} bytes): truncated?", source=source, offset=pos)
        yield name, size
        pos = f.seek(start + size + (size & 1))


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


def _read_deb(f: IO[bytes], path: Path, source: str) -> KernelPackage:
    pkg = KernelPackage(path)
    for name, size in _ar_members(f, source):
        if not name.startswith(("control.tar", "data.tar")):
            continue
        what = f"member {name}"
        suffix = name.split(".tar", 1)[1]
        raw = io.BufferedReader(_Bounded(f, size), 1 << 20)
        tools: list[ToolStream] = []
        try:
            stream = decompressing(raw, suffix, what, source, tools)
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_Member) as tar:
                if name.startswith("control.tar"):
                    _control(tar, pkg, source)
                else:
                    _scan_tar(tar, pkg, source)
        finally:
            for t in tools:
                t.close()
    if not pkg.name:
        raise PackageError("no control file (not a Debian binary package?)", source=source)
    return pkg


def _control(tar: tarfile.TarFile, pkg: KernelPackage, source: str) -> None:
    for m in _tar_members(tar):
        if m.name.lstrip("./") == "control" and m.isfile():
            if m.size > MAX_SMALL:
                raise PackageError(f"control is {m.size} bytes: refused", source=source)
            data = _read_member(tar, m, source)
            if data is not None:
                fields = _control_fields(data.decode("utf-8", "replace"))
                pkg.name = fields.get("Package", "")
                pkg.version = fields.get("Version", "")
                pkg.arch = fields.get("Architecture", "")
            return


def _scan_tar(tar: tarfile.TarFile, pkg: KernelPackage, source: str) -> None:
    """Collect images and configs; stop at the first member outside the directories they were
    found in (the rest is modules, most of the package)."""
    dirs: set[str] = set()
    for m in _tar_members(tar):
        name = m.name.removeprefix("./")
        if is_interesting(name) and m.isfile():
            _want(pkg, name, m.size, source)
            data = _read_member(tar, m, source)
            if data is not None:
                wanted(name, pkg, data)
                dirs.add(name.rsplit("/", 1)[0])
        elif pkg.images and name.rsplit("/", 1)[0] not in dirs and name not in dirs:
            return
