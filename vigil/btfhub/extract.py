"""`vigil btf extract`: kernel BTF out of packages and images, written as <release>.btf.

Owns turning each input (a .deb, an .rpm, or a vmlinux/vmlinuz/Image file) into one BTF file
per kernel release it contains (a debug vmlinux's DWARF is turned into BTF with pahole when
asked: --from-dwarf), named after the release, either flat in the output directory or
in BTFHub's layout (`<distro>/<version>/<arch>/<release>.btf`) when the distribution is given;
the architecture comes from the package and is checked against the BTF itself. An input without
BTF is an error that says why (a package's config usually tells: CONFIG_DEBUG_INFO_BTF is not
set). Finding the BTF is vigil.btfhub.images' job, opening packages vigil.btfhub.packages'.
Nothing is written until every image of an input has given its BTF, and each file is written
atomically (vigil.btfhub.limits.write_atomic): a damaged input leaves no output behind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vigil.btfhub.images import KernelBtf, NoBtfError, btf_from_dwarf, btf_from_image, has_dwarf
from vigil.btfhub.limits import MAX_IMAGE, size_text, write_atomic
from vigil.btfhub.packages import read_package
from vigil.kernel import arch as archmod
from vigil.kernel.errors import InputError, VigilError

_FILE_RELEASE = re.compile(r"^(?:vmlinu[xz]|Image)-(.+?)(?:\.(?:gz|xz|zst|lz4|bz2|lzma))?$")
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,199}")
_DISTRO = re.compile(r"^[a-z0-9][a-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ExtractError(InputError):
    """An input gave no usable BTF."""


@dataclass(frozen=True)
class Extracted:
    source: str  # "linux-image-...deb:boot/vmlinuz-6.1.0-50-amd64"
    release: str
    arch: str | None
    path: Path
    size: int
    how: str


def _package_arch(name: str) -> str | None:
    """uname -m name of a package's architecture (Debian or rpm spelling)."""
    try:
        return archmod.canonical(name)
    except VigilError:
        return None


def _dest(out: Path, distro: str | None, arch: str | None, release: str, source: str) -> Path:
    if not _RELEASE.fullmatch(release):  # it comes from the input: it must not be a path
        raise ExtractError(f"{source}: the kernel calls itself {release[:80]!r}, which is "
                           f"not a release name (letters, digits and ._+~- only)")
    if distro is None:
        return out / f"{release}.btf"
    if arch is None:
        raise ExtractError(f"{source}: cannot tell the architecture, which the layout "
                           f"{distro}/<arch>/ needs")
    return out / distro / arch / f"{release}.btf"


def _write(planned: list[Extracted], blobs: list[bytes]) -> None:
    for x, blob in zip(planned, blobs, strict=True):
        try:
            write_atomic(x.path, blob)
        except OSError as e:
            raise ExtractError(f"{x.path}: cannot write: {e.strerror or e}") from None


def _btf(data: bytes, source: str, from_dwarf: bool) -> KernelBtf:
    try:
        return btf_from_image(data, source)
    except NoBtfError:
        if from_dwarf and has_dwarf(data):
            return btf_from_dwarf(data, source)
        raise


def extract_one(path: Path, out: Path, distro: str | None,
                from_dwarf: bool = False) -> list[Extracted]:
    """BTF files written for one input; raises ExtractError / NoBtfError / another InputError
    (a damaged package or image), having written nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        size = path.stat().st_size
    except OSError as e:
        raise ExtractError(f"{path}: cannot read: {e.strerror}") from None
    planned: list[Extracted] = []
    blobs: list[bytes] = []
    if head == b"!<arch>\n" or head[:4] == b"\xed\xab\xee\xdb":
        pkg = read_package(path)
        if not pkg.images:
            raise ExtractError(f"{path.name}: no kernel image in package {pkg.name} "
                               f"(looked for boot/vmlinuz-*, boot/vmlinux-*, "
                               f"lib/modules/*/vmlinuz)")
        pkg_arch = _package_arch(pkg.arch)
        for release, (member, data) in sorted(pkg.images.items()):
            source = f"{path.name}:{member}"
            try:
                k = _btf(data, source, from_dwarf)
            except NoBtfError as e:
                if pkg.btf_config(release) == "not set":
                    raise NoBtfError(f"{source}: no BTF inside: the kernel was built without "
                                     f"it (its config says CONFIG_DEBUG_INFO_BTF is not set); "
                                     f"its debug package (-dbg) with --from-dwarf can make it"
                                     ) from None
                raise e from None
            if pkg_arch and k.arch and k.arch != pkg_arch:
                raise ExtractError(f"{source}: the package is {pkg.arch} but its BTF "
                                   f"describes a {k.arch} kernel")
            arch = pkg_arch or k.arch
            dest = _dest(out, distro, arch, release, source)
            planned.append(Extracted(source, release, arch, dest, len(k.blob), k.how))
            blobs.append(k.blob)
        _write(planned, blobs)
        return planned
    if size > MAX_IMAGE:
        raise ExtractError(f"{path}: {size} bytes, more than a kernel image can be "
                           f"({size_text(MAX_IMAGE)}): refused")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ExtractError(f"{path}: cannot read: {e.strerror}") from None
    k = _btf(data, path.name, from_dwarf)
    m = _FILE_RELEASE.match(path.name)
    named = k.release or (m.group(1) if m else None)
    if named is None:
        raise ExtractError(f"{path.name}: cannot tell the kernel release (no 'Linux version' "
                           f"banner inside, and the name is not vmlinuz-<release>)")
    dest = _dest(out, distro, k.arch, named, path.name)
    planned.append(Extracted(path.name, named, k.arch, dest, len(k.blob), k.how))
    _write(planned, [k.blob])
    return planned


def extract(inputs: list[Path], out: Path, distro: str | None = None, *,
            skip_missing: bool = False, from_dwarf: bool = False,
            report: Callable[[str], None] = print) -> list[Extracted]:
    """Every input in turn. With ``skip_missing`` an input without BTF is reported and
    skipped; otherwise the first one stops the run with its error."""
    if distro is not None and not _DISTRO.match(distro):
        raise ExtractError(f"--distro {distro!r}: expected ID/VERSION_ID as in os-release, "
                           f"e.g. debian/12")
    done: list[Extracted] = []
    for path in inputs:
        if not path.is_file():
            raise ExtractError(f"{path}: no such file")
        try:
            items = extract_one(path, out, distro, from_dwarf)
        except InputError as e:  # no BTF, or damaged: said, and the next input is read
            if not skip_missing:
                raise
            report(f"skipped: {e}")
            continue
        for x in items:
            report(f"{x.source}: {x.how} -> {x.path} ({x.size / 1e6:.1f} MB, "
                   f"{x.arch or 'arch unknown'})")
        done.extend(items)
    return done
