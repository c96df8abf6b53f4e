"""A tailored-BTF archive for one matrix kernel, made on the host (``./do test-kernels --btf
tailored``): the pipeline a distribution's kernel without /sys/kernel/btf/vmlinux goes through.

Owns, for one prepared kernel: finding its cached package (or, failing that, its image),
``vigil btf extract --distro ID/VERSION_ID`` into the BTFHub layout under
``build/tailored-btf/<series>/src`` (ID and VERSION_ID from the host's os-release: the guest
shares the host's userland, so that is what Vigil looks the kernel up by in the VM), ``vigil btf
gen`` into ``.../gen``, and checking that the archive's index holds the key the guest will look
up. Everything is regenerated on each run (a few seconds): the tailored BTF must match the BPF
objects of this checkout. The files live in the checkout's build/ directory, which the guest
sees read-only; the guest's /tmp and /var/tmp are its own.

Does not own booting (matrix.py) nor using the archive in the guest (guest.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kernels import CACHE, Kernel

ROOT = Path(__file__).resolve().parents[2]
VIGIL = ROOT / ".venv" / "bin" / "vigil"
WORK = ROOT / "build" / "tailored-btf"
# Debian's amd64 kernels (the only ones the matrix boots) run as uname -m x86_64.
ARCH = "x86_64"


class TailoredError(Exception):
    """The archive could not be made; the message says which step failed and why."""


@dataclass(frozen=True)
class TailoredBtf:
    archive: Path
    key: str  # "debian/12/x86_64/6.12.57+deb13-amd64"
    source: str  # what the BTF was extracted from
    source_bytes: int  # the kernel's BTF
    tailored_bytes: int  # the tailored BTF in the archive's index


def os_release_ids(text: str) -> tuple[str, str]:
    """(ID, VERSION_ID) of an os-release file's text; raises TailoredError when one is missing."""
    vals: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            vals[k.strip()] = v.strip().strip("\"'")
    if not vals.get("ID") or not vals.get("VERSION_ID"):
        raise TailoredError("the host's os-release has no ID and VERSION_ID to file the "
                            "kernel's BTF under")
    return vals["ID"], vals["VERSION_ID"]


def archive_key(distro: str, version: str, release: str, arch: str = ARCH) -> str:
    """The key Vigil looks a kernel up by (vigil.kernel.btf_archive.kernel_key)."""
    return f"{distro}/{version}/{arch}/{release}"


def cached_package(k: Kernel, cache: Path = CACHE) -> Path | None:
    """The .deb the matrix downloaded for ``k`` (kernels.PrivateApt.download names it)."""
    version = k.version.replace(":", "%3a")
    found = sorted(p for p in (cache / "debs").glob(f"{k.package}_*.deb") if version in p.name)
    return found[0] if found else None


def _vigil(*args: str) -> str:
    p = subprocess.run([str(VIGIL), *args], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise TailoredError(f"vigil {' '.join(args)} exited {p.returncode}: "
                            f"{(p.stderr or p.stdout).strip()[-800:]}")
    return p.stdout


def make(k: Kernel, os_release: Path = Path("/etc/os-release"), work: Path = WORK,
         cache: Path = CACHE) -> TailoredBtf:
    """Extract ``k``'s BTF from its package, tailor it, archive it; the archive and its key."""
    distro, version = os_release_ids(os_release.read_text())
    key = archive_key(distro, version, k.release)
    source = cached_package(k, cache) or Path(k.vmlinuz)
    if not source.is_file():
        raise TailoredError(f"neither the package nor the image of {k.release} is cached "
                            f"({source})")
    base = work / k.series
    shutil.rmtree(base, ignore_errors=True)
    src, gen = base / "src", base / "gen"
    _vigil("btf", "extract", "--distro", f"{distro}/{version}", "--out", str(src), str(source))
    btf = src / distro / version / ARCH / f"{k.release}.btf"
    if not btf.is_file():
        got = sorted(str(p.relative_to(src)) for p in src.rglob("*.btf"))
        raise TailoredError(f"vigil btf extract {source.name} wrote {got}, not {btf}")
    _vigil("btf", "gen", "--source", str(src), "--out", str(gen))
    archive = gen / "btf-archive.tar.xz"
    entry = (json.loads((gen / "index.json").read_text()).get("kernels") or {}).get(key)
    if not archive.is_file() or not isinstance(entry, dict) or "btf" not in entry:
        raise TailoredError(f"vigil btf gen made no archive entry {key} in {gen}")
    blob = gen / "btf" / f"{entry['btf']}.btf"
    return TailoredBtf(archive, key, source.name, btf.stat().st_size,
                       blob.stat().st_size if blob.is_file() else 0)
