"""`vigil btf check`: an offline compatibility matrix, kernel BTFs x Vigil's objects.

Owns collecting the BTFs to judge (a file, a directory of *.btf in BTFHub's layout or flat, a
`vigil btf gen` output directory, or a tailored-BTF archive), choosing each one's architecture
(--arch, else the layout, else the BTF's own `struct pt_regs`), and rendering the matrix:
one row per BTF, one column per object, "ok" or what is missing. The verdicts themselves come
from vigil.btfhub.core (libbpf's matching rules, plus reachability of unresolved relocations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vigil.btfhub.core import BpfObject, ObjectCheck, check_object
from vigil.btfhub.rawbtf import RawBtf, detect_arch
from vigil.kernel import arch as archmod
from vigil.kernel.btf_archive import INDEX, ArchiveIndex, BtfArchive
from vigil.kernel.errors import InputError, VigilError
from vigil.kernel.loader import OBJECTS_DIR


class CheckError(InputError):
    """The BTFs or objects to check could not be found or read."""


@dataclass(frozen=True)
class Target:
    label: str
    btf: RawBtf
    arch: str | None  # from --arch or the layout; None = ask the BTF


@dataclass
class Row:
    label: str
    arch: str
    results: dict[str, ObjectCheck] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results.values())


def _arch_from_parts(parts: tuple[str, ...]) -> str | None:
    """The <arch> of <distro>/<version>/<arch>/<release>.btf (or of an index key)."""
    if len(parts) >= 2:
        try:
            return archmod.canonical(parts[-2])
        except VigilError:
            return None
    return None


def collect(paths: list[Path]) -> Iterator[Target]:
    for path in paths:
        if path.is_dir() and (path / INDEX).is_file() and (path / "btf").is_dir():
            try:
                text = (path / INDEX).read_bytes()
            except OSError as e:
                raise CheckError(f"{path / INDEX}: cannot read: {e.strerror}") from None
            index = ArchiveIndex.from_json(text, str(path / INDEX))
            for key, sha in sorted(index.kernels.items()):
                f = path / "btf" / f"{sha}.btf"
                try:
                    blob = f.read_bytes()
                except OSError as e:
                    raise CheckError(f"{f}: cannot read the BTF {INDEX} names for {key}: "
                                     f"{e.strerror}") from None
                yield Target(key, RawBtf(blob, str(f)), _arch_from_parts(tuple(key.split("/"))))
        elif path.is_dir():
            files = sorted(path.rglob("*.btf"))
            if not files:
                raise CheckError(f"{path}: no *.btf files")
            for f in files:
                rel = f.relative_to(path)
                yield Target(str(rel), RawBtf.from_file(f), _arch_from_parts(rel.parts))
        elif path.name.endswith(".tar.xz"):
            archive = BtfArchive(path)
            for key, sha in sorted(archive.index.kernels.items()):
                yield Target(key, RawBtf(archive.blob(sha), f"{path}:{key}"),
                             _arch_from_parts(tuple(key.split("/"))))
        elif path.is_file():
            yield Target(str(path), RawBtf.from_file(path), None)
        else:
            raise CheckError(f"{path}: no such file or directory")


def check(paths: list[Path], *, arch: str | None = None,
          objects_dir: Path = OBJECTS_DIR) -> list[Row]:
    forced = archmod.canonical(arch) if arch else None
    objects: dict[str, list[tuple[str, BpfObject]]] = {}
    rows: list[Row] = []
    for t in collect(paths):
        a = forced or t.arch or detect_arch(t.btf)
        if a is None:
            raise CheckError(f"{t.label}: cannot tell which architecture this BTF is for "
                             f"(no struct pt_regs, not in a <distro>/<version>/<arch>/ "
                             f"layout): pass --arch")
        a = archmod.canonical(a)
        if a not in objects:
            objs = sorted((objects_dir / a).glob("*.bpf.o"))
            if not objs:
                raise CheckError(f"no BPF objects for {a} in {objects_dir / a} "
                                 f"(run make -C bpf)")
            objects[a] = [(p.name, BpfObject.from_file(str(p))) for p in objs]
        row = Row(t.label, a)
        for name, obj in objects[a]:
            row.results[name] = check_object(obj, t.btf)
        rows.append(row)
    return rows


def render(rows: list[Row], verbose: bool = False) -> str:
    names = sorted({n for r in rows for n in r.results})
    label_w = max([len("BTF"), *(len(r.label) for r in rows)])
    cells = [[_cell(r.results.get(n)) for n in names] for r in rows]
    widths = [max(len(n), *(len(c[i]) for c in cells)) if cells else len(n)
              for i, n in enumerate(names)]
    lines = ["  ".join(["BTF".ljust(label_w), "arch".ljust(7),
                        *(n.ljust(w) for n, w in zip(names, widths, strict=True))]).rstrip()]
    for r, c in zip(rows, cells, strict=True):
        lines.append("  ".join([r.label.ljust(label_w), r.arch.ljust(7),
                                *(x.ljust(w) for x, w in zip(c, widths, strict=True))]).rstrip())
        if verbose:
            for n in names:
                res = r.results.get(n)
                for f in (res.failures if res else []):
                    lines.append(f"    {n} {f.program}: {f.relo.spec}: {f.reason}")
                for f in (res.conditional if res else []):
                    lines.append(f"    {n} {f.program}: {f.relo.spec}: {f.reason} (only past "
                                 f"a branch on a load-time setting the loader chooses)")
                for f in (res.dead if res else []):
                    lines.append(f"    {n} {f.program}: {f.relo.spec}: {f.reason} "
                                 f"(in code this kernel never runs: fine)")
    bad = sum(1 for r in rows if not r.ok)
    lines.append(f"{len(rows) - bad} of {len(rows)} BTFs resolve every relocation of every "
                 f"program" + (f"; {bad} do not" if bad else "") + " (-v: the details)")
    return "\n".join(lines)


def _cell(res: ObjectCheck | None) -> str:
    if res is None:
        return "-"
    if res.ok:
        text = f"ok ({res.total}" if res.total else "ok (no CO-RE"
        if res.conditional:
            text += f"; {len(res.conditional)} depend on a load-time setting"
        return text + ")"
    return "missing: " + "; ".join(res.missing())


def main(paths: list[Path], arch: str | None, verbose: bool,
         out: Callable[[str], None] = print) -> int:
    rows = check(paths, arch=arch)
    out(render(rows, verbose))
    return 0 if all(r.ok for r in rows) else 1
