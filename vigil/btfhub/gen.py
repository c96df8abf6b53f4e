"""`vigil btf gen`: tailored BTF for every source kernel BTF, de-duplicated, indexed, archived.

Owns the BTFGen step: for each source `<distro>/<version>/<arch>/<release>.btf`, run
`bpftool gen min_core_btf SRC DST OBJ...` over *all* of Vigil's objects of that architecture at
once (the architecture comes from the path and must agree with the BTF's own `struct pt_regs`),
keep each distinct result once under its sha256, index kernels by key, and pack the index and
blobs into one tar.xz (vigil.kernel.btf_archive) that ships in the package.

bpftool cannot open an object of the other byte order, so for a big-endian architecture
(s390x) it is given the little-endian twins `make -C bpf le-twins` builds from the same
sources and defines; their CO-RE relocations are checked to be identical to the shipped
objects' first, and the tailored BTF is written back in the kernel's byte order.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vigil.btfhub.core import BpfObject
from vigil.btfhub.rawbtf import RawBtf, detect_arch
from vigil.kernel import arch as archmod
from vigil.kernel.btf_archive import ArchiveIndex, kernel_key, write_archive
from vigil.kernel.errors import VigilError
from vigil.kernel.loader import OBJECTS_DIR

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TWINS = ROOT / "build" / "bpf-le-twins"


class GenError(VigilError):
    """Tailored BTF could not be generated."""


@dataclass(frozen=True)
class Source:
    path: Path
    distro: str
    version: str
    arch: str
    release: str

    @property
    def key(self) -> str:
        return kernel_key(self.distro, self.version, self.arch, self.release)


@dataclass
class GenResult:
    index: ArchiveIndex = field(default_factory=ArchiveIndex)
    blobs: dict[str, bytes] = field(default_factory=dict)
    source_bytes: int = 0
    tailored_bytes: int = 0  # before de-duplication
    archive_bytes: int = 0
    archive: Path | None = None

    def story(self) -> str:
        n, d = len(self.index.kernels), len(self.blobs)
        distinct = sum(len(b) for b in self.blobs.values())
        return (f"{n} kernel BTFs, {_size(self.source_bytes)} -> {n} tailored, "
                f"{_size(self.tailored_bytes)} -> {d} distinct, {_size(distinct)} -> "
                f"archive {_size(self.archive_bytes)} (tar.xz)")


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


def find_sources(source: Path) -> list[Source]:
    """Every <distro>/<version>/<arch>/<release>.btf under ``source``."""
    if not source.is_dir():
        raise GenError(f"--source {source}: not a directory")
    out: list[Source] = []
    stray: list[str] = []
    for p in sorted(source.rglob("*.btf")):
        parts = p.relative_to(source).parts
        if len(parts) != 4:
            stray.append(str(p.relative_to(source)))
            continue
        distro, version, arch, name = parts
        out.append(Source(p, distro, version, archmod.canonical(arch), name[:-4]))
    if stray:
        raise GenError(f"{source}: {', '.join(stray[:5])} not in the layout "
                       f"<distro>/<version>/<arch>/<release>.btf (vigil btf extract --distro "
                       f"writes it)")
    if not out:
        raise GenError(f"{source}: no <distro>/<version>/<arch>/<release>.btf files")
    return out


def objects_for(arch: str, objects_dir: Path) -> list[Path]:
    objs = sorted((objects_dir / arch).glob("*.bpf.o"))
    if not objs:
        raise GenError(f"no BPF objects for {arch} in {objects_dir / arch} (run make -C bpf)")
    return objs


def core_signature(objs: list[Path]) -> str:
    """sha256 over the sorted CO-RE relocation signatures of all ``objs``."""
    sigs = sorted({s for p in objs for s in BpfObject.from_file(str(p)).signature()})
    return hashlib.sha256("\n".join(sigs).encode()).hexdigest()


def _bpftool_objects(arch: str, objects_dir: Path, twins_dir: Path) -> list[Path]:
    """The objects bpftool can open for ``arch``: the shipped ones, or their twins."""
    objs = objects_for(arch, objects_dir)
    if archmod.ARCHES[arch].big_endian == (sys.byteorder == "big"):
        return objs
    twins = [twins_dir / arch / p.name for p in objs]
    missing = [str(t) for t in twins if not t.is_file()]
    if missing:
        raise GenError(f"{arch} objects are big-endian and bpftool here reads only "
                       f"little-endian ones: build their twins with `make -C bpf le-twins` "
                       f"(missing: {', '.join(missing)})")
    for obj, twin in zip(objs, twins, strict=True):
        a = BpfObject.from_file(str(obj)).signature()
        b = BpfObject.from_file(str(twin)).signature()
        if a != b:
            raise GenError(f"{twin} does not carry the same CO-RE relocations as {obj}: "
                           f"rebuild both (make -C bpf all le-twins)")
    return twins


def tailor(src: Path, objs: list[Path], big_endian: bool) -> bytes:
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        raise GenError("bpftool is needed: apt-get install bpftool")
    with tempfile.TemporaryDirectory(prefix="vigil-btfgen-") as tmp:
        dst = Path(tmp) / "min.btf"
        p = subprocess.run([bpftool, "gen", "min_core_btf", str(src), str(dst),
                            *map(str, objs)], capture_output=True, text=True, check=False)
        if p.returncode != 0 or not dst.is_file():
            raise GenError(f"bpftool gen min_core_btf {src} failed: "
                           f"{(p.stderr or p.stdout).strip()}")
        return RawBtf(dst.read_bytes(), str(src)).in_byte_order(big_endian)


def gen(source: Path, out: Path, *, objects_dir: Path = OBJECTS_DIR,
        twins_dir: Path = DEFAULT_TWINS, archive: Path | None = None,
        report: Callable[[str], None] = print) -> GenResult:
    sources = find_sources(source)
    res = GenResult()
    per_arch: dict[str, list[Path]] = {}
    for s in sources:
        raw = RawBtf.from_file(s.path)
        seen = detect_arch(raw)
        if seen is not None and seen != s.arch:
            raise GenError(f"{s.path} is filed under {s.arch} but describes a {seen} kernel")
        if s.arch not in per_arch:
            per_arch[s.arch] = _bpftool_objects(s.arch, objects_dir, twins_dir)
            res.index.signatures[s.arch] = core_signature(objects_for(s.arch, objects_dir))
        blob = tailor(s.path, per_arch[s.arch], raw.big_endian)
        sha = hashlib.sha256(blob).hexdigest()
        new = sha not in res.blobs
        res.blobs.setdefault(sha, blob)
        res.index.kernels[s.key] = sha
        size = s.path.stat().st_size
        res.index.source_sizes[s.key] = size
        res.source_bytes += size
        res.tailored_bytes += len(blob)
        report(f"{s.key}: {_size(size)} -> {_size(len(blob))} "
               f"{'new ' if new else 'same as before '}{sha[:12]}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "btf").mkdir(exist_ok=True)
    for sha, blob in res.blobs.items():
        (out / "btf" / f"{sha}.btf").write_bytes(blob)
    (out / "index.json").write_bytes(res.index.to_json())
    res.archive = archive or out / "btf-archive.tar.xz"
    res.archive_bytes = write_archive(res.archive, res.index, res.blobs)
    report(f"size: {res.story()}")
    report(f"archive: {res.archive}")
    return res
