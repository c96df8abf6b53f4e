"""Which BTF libbpf relocates Vigil's objects against, and where it came from.

Owns the run-time choice, in this order:

1. an explicit file: `--btf FILE`, else the `VIGIL_BTF` environment variable (kind "file");
2. the running kernel's own `/sys/kernel/btf/vmlinux` (kind "kernel": libbpf finds it itself);
3. a vmlinux of this exact release where distributions and libbpf put them (/boot/vmlinux-R,
   /lib/modules/R/vmlinux-R, /lib/modules/R/build/vmlinux, debug-package paths) (kind "file");
4. the tailored-BTF archive shipped in the package (or `VIGIL_BTF_ARCHIVE`), looked up by
   /etc/os-release ID and VERSION_ID, architecture and `uname -r`; the member is written to a
   private 0700 directory removed at exit (kind "tailored").

If nothing fits, one BtfNotFoundError lists everything tried. `VIGIL_TEST_HIDE_KERNEL_BTF=1`
makes step 2 (and only it) pretend the kernel has no BTF, so tests can exercise 3 and 4 on a
kernel that has it.

A BTF that is not the running kernel's own describes types for CO-RE only: the kernel still
needs its own BTF to attach fentry/fexit, LSM and tp_btf programs, so `BtfSource.kernel_btf_hooks`
is False for every kind but "kernel" and backends must not choose those hooks then.
Does not load programs (vigil.kernel.loader does, with `custom_path`).
"""

from __future__ import annotations

import atexit
import logging
import mmap
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vigil.btfhub.elf import Elf
from vigil.kernel import arch as archmod
from vigil.kernel.btf_archive import SHIPPED, BtfArchive, BtfArchiveError, kernel_key
from vigil.kernel.errors import BtfNotFoundError, VigilError

log = logging.getLogger(__name__)

KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
BTF_ENV = "VIGIL_BTF"
ARCHIVE_ENV = "VIGIL_BTF_ARCHIVE"
HIDE_ENV = "VIGIL_TEST_HIDE_KERNEL_BTF"
OS_RELEASE = Path("/etc/os-release")
# libbpf's own list (libbpf_find_kernel_btf) plus Debian's debug package path.
VMLINUX_LOCATIONS = (
    "/boot/vmlinux-{r}",
    "/lib/modules/{r}/vmlinux-{r}",
    "/lib/modules/{r}/build/vmlinux",
    "/usr/lib/modules/{r}/kernel/vmlinux",
    "/usr/lib/debug/boot/vmlinux-{r}",
    "/usr/lib/debug/boot/vmlinux-{r}.debug",
    "/usr/lib/debug/lib/modules/{r}/vmlinux",
)

BtfKind = Literal["kernel", "file", "tailored"]


@dataclass(frozen=True)
class BtfSource:
    kind: BtfKind
    path: Path
    origin: str  # "the running kernel", "--btf", "archive key debian/12/x86_64/6.1.0-50-amd64"

    @property
    def custom_path(self) -> str | None:
        """What to hand libbpf as btf_custom_path (None: it uses the kernel's own)."""
        return None if self.kind == "kernel" else str(self.path)

    @property
    def kernel_btf_hooks(self) -> bool:
        """Whether fentry/fexit, LSM and tp_btf programs can be used: they need the running
        kernel's own BTF, whatever BTF CO-RE relocations use."""
        return self.kind == "kernel"

    def describe(self) -> str:
        what = {"kernel": "the running kernel's BTF", "file": "kernel BTF from a file",
                "tailored": "tailored BTF"}[self.kind]
        return f"{what} {self.path} ({self.origin})"


def btf_problem(path: Path) -> str | None:
    """None when ``path`` holds BTF (raw, or an ELF file with a .BTF section); otherwise why
    not. Reads only headers (a debug vmlinux can be hundreds of megabytes)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < 24:
                return "too small to be BTF"
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                head = m[:4]
                if head in (b"\x9f\xeb\x01\x00", b"\xeb\x9f\x01\x00"):
                    return None
                if head == b"\x7fELF":
                    elf = Elf(m, str(path))  # type: ignore[arg-type]
                    return None if elf.section(".BTF") is not None else \
                        "an ELF file without a .BTF section"
                return "neither raw BTF nor an ELF file"
    except FileNotFoundError:
        return "absent"
    except (OSError, ValueError, VigilError) as e:
        return f"unreadable ({e})"


def os_release(path: Path = OS_RELEASE) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip("\"'")
    return out


_runtime_dir: Path | None = None


def _private_dir() -> Path:
    """A 0700 directory for this process, removed at exit (under /run when writable)."""
    global _runtime_dir
    if _runtime_dir is None:
        base = "/run" if os.access("/run", os.W_OK) else None
        _runtime_dir = Path(tempfile.mkdtemp(prefix="vigil-btf-", dir=base))
        os.chmod(_runtime_dir, 0o700)
        atexit.register(shutil.rmtree, _runtime_dir, True)
    return _runtime_dir


def _from_archive(archive_path: Path, key: str, release: str, distro_id: str,
                  arch: str, tried: list[str]) -> BtfSource | None:
    try:
        archive = BtfArchive(archive_path)
        blob = archive.lookup(key)
    except BtfArchiveError as e:
        tried.append(f"tailored-BTF archive: {e}")
        return None
    if blob is None:
        same = sorted(k for k in archive.index.kernels
                      if k.startswith(f"{distro_id}/") and k.split("/")[2] == arch)
        has = f"it has {len(same)} {distro_id} {arch} kernels" + \
            (f", e.g. {same[-1]}" if same else "")
        tried.append(f"tailored-BTF archive {archive_path}: no entry {key} ({has})")
        return None
    dest = _private_dir() / f"{release}.btf"
    dest.write_bytes(blob)
    return BtfSource("tailored", dest, f"archive {archive_path.name}, key {key}")


def resolve_btf(override: str | Path | None = None, *,
                env: Mapping[str, str] | None = None,
                release: str | None = None,
                machine: str | None = None,
                os_release_path: Path = OS_RELEASE,
                kernel_btf: Path = KERNEL_BTF) -> BtfSource:
    """The BTF to relocate against (see the module docstring for the order)."""
    env = os.environ if env is None else env
    release = release or platform.release()
    tried: list[str] = []

    explicit, origin = (override, "--btf") if override else (env.get(BTF_ENV), BTF_ENV)
    if explicit:
        path = Path(explicit)
        problem = btf_problem(path)
        if problem is not None:
            raise BtfNotFoundError(release, [f"{origin} {path}: {problem}"])
        return BtfSource("file", path, origin)

    if env.get(HIDE_ENV) == "1":
        tried.append(f"{kernel_btf}: hidden by {HIDE_ENV}=1")
    elif kernel_btf.exists():
        return BtfSource("kernel", kernel_btf, "the running kernel")
    else:
        tried.append(f"{kernel_btf}: absent (kernel built without CONFIG_DEBUG_INFO_BTF)")

    for pattern in VMLINUX_LOCATIONS:
        path = Path(pattern.format(r=release))
        problem = btf_problem(path)
        if problem is None:
            return BtfSource("file", path, "vmlinux of this release")
        tried.append(f"{path}: {problem}")

    osr = os_release(os_release_path)
    distro_id, version = osr.get("ID", ""), osr.get("VERSION_ID", "")
    try:
        arch = archmod.canonical(machine or platform.machine())
    except VigilError as e:
        tried.append(f"tailored-BTF archive: {e}")
        raise BtfNotFoundError(release, tried) from None
    if not distro_id or not version:
        tried.append(f"tailored-BTF archive: {os_release_path} gives no ID and VERSION_ID "
                     f"to look this kernel up by")
    else:
        key = kernel_key(distro_id, version, arch, release)
        archive_path = Path(env.get(ARCHIVE_ENV) or SHIPPED)
        found = _from_archive(archive_path, key, release, distro_id, arch, tried)
        if found is not None:
            return found
    raise BtfNotFoundError(f"{release}, {distro_id or '?'} {version or '?'}, {arch}", tried)
