"""Debian kernels for the VM test matrix: which ones, where they come from, where they live.

Owns the kernel catalogue (series -> Debian suite and package name pattern), a private apt
configuration under the cache directory (own sources list, lists, archives cache, dpkg status and
configuration parts: the host's apt setup is never read for sources nor written), downloading the
newest matching image with ``apt-get download``, unpacking it with ``dpkg-deb -x`` and installing
its modules into ``/lib/modules/<release>`` (plus ``depmod``), which is where virtme-ng looks for
them. A series already unpacked in the cache is used without asking the network again
(``refresh=True`` looks for a newer package).

Does not own booting the kernels (vm.py) nor what runs inside them (guest.py).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE = Path(os.environ.get("VIGIL_KERNEL_CACHE", "/var/cache/vigil-kernels"))
# The archive the host's own sources use; the security archive carries the newest kernels of
# stable and oldstable between point releases.
MIRROR = os.environ.get("VIGIL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("VIGIL_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
# debian-archive-keyring (Debian 12's, 2023.3+deb12u2 and later) holds the bullseye, bookworm and
# trixie archive and security keys: every Release file here is verified against it.
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MODULES = Path("/lib/modules")


@dataclass(frozen=True)
class Series:
    """One kernel series of the matrix: the newest image in ``suites`` whose name matches."""

    name: str  # what --kernel takes: "5.10"
    suites: tuple[str, ...]  # "<codename>-security" comes from the security archive
    package: re.Pattern[str]


def _suites(codename: str) -> tuple[str, ...]:
    # point releases, stable updates, and the security archive (newest kernels between releases)
    return (codename, f"{codename}-updates", f"{codename}-security")


# Signed images (no "-unsigned", no "-dbg"): the same bzImage, and the name users install.
# To add a kernel, add a line: a name, the suites that carry it, its package name pattern.
SERIES: dict[str, Series] = {s.name: s for s in (
    Series("5.10", _suites("bullseye"), re.compile(r"^linux-image-5\.10\.0-\d+-amd64$")),
    Series("6.1", _suites("bookworm"), re.compile(r"^linux-image-6\.1\.0-\d+-amd64$")),
    Series("6.12", _suites("trixie"), re.compile(r"^linux-image-6\.12\.\d+\+deb13-amd64$")),
)}


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot: its image and the release its modules are installed under."""

    series: str
    package: str
    version: str
    release: str  # uname -r
    vmlinuz: str

    @property
    def modules(self) -> Path:
        return MODULES / self.release

    @property
    def boot_image(self) -> Path:
        """The image to boot: beside its modules, so virtme-ng takes its modules from the
        guest's /lib/modules (the host's, read-only). Booted from the cache, it would link them
        from the cache, which the guest cannot see under its own tmpfs /var/cache."""
        return self.modules / "vmlinuz"


class KernelError(Exception):
    """A kernel could not be found, downloaded or installed; the message says which and why."""


def log(msg: str) -> None:
    print(f"kernels: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The private apt


class PrivateApt:
    """apt-get and apt-cache with everything under ``<cache>/apt``: sources, lists, archives,
    an empty dpkg status (nothing counts as installed) and an empty configuration parts
    directory (no host hooks run). Only amd64 is fetched."""

    def __init__(self, cache: Path = CACHE) -> None:
        self.root = cache / "apt"
        self.conf = self.root / "apt.conf"

    def write_config(self, series: list[Series]) -> None:
        r = self.root
        for d in ("lists/partial", "archives/partial", "parts", "sources.list.d",
                  "preferences.d", "trusted.gpg.d"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "status").touch()
        signed = f"[arch=amd64 signed-by={KEYRING}]"
        suites = sorted({suite for s in series for suite in s.suites})
        lines = [f"deb {signed} {SECURITY if suite.endswith('-security') else MIRROR} {suite} main"
                 for suite in suites]
        text = "\n".join(lines) + "\n"
        if not (r / "sources.list").exists() or (r / "sources.list").read_text() != text:
            (r / "sources.list").write_text(text)
            (r / "lists.stamp").unlink(missing_ok=True)
        self.conf.write_text("\n".join([
            f'Dir::Etc::SourceList "{r}/sources.list";',
            f'Dir::Etc::SourceParts "{r}/sources.list.d";',
            f'Dir::Etc::Parts "{r}/parts";',
            f'Dir::Etc::Preferences "{r}/preferences";',
            f'Dir::Etc::PreferencesParts "{r}/preferences.d";',
            f'Dir::Etc::TrustedParts "{r}/trusted.gpg.d";',
            f'Dir::State "{r}";',
            f'Dir::State::Lists "{r}/lists";',
            f'Dir::State::status "{r}/status";',
            f'Dir::Cache "{r}";',
            f'Dir::Cache::Archives "{r}/archives";',
            'Dir::Cache::pkgcache "";',
            'Dir::Cache::srcpkgcache "";',
            'APT::Architecture "amd64";',
            'APT::Architectures { "amd64"; };',
            'Acquire::Languages "none";',
            'Acquire::GzipIndexes "true";',
            # As in the host's own configuration: the registry serves archive snapshots whose
            # Release files may be past their Valid-Until. Signatures are still checked.
            'Acquire::Check-Valid-Until "false";',
            'Acquire::Check-Date "false";',
            'Acquire::IndexTargets::deb::DEP-11 { DefaultEnabled "false"; };',
            'Acquire::IndexTargets::deb::Contents-deb { DefaultEnabled "false"; };',
            "",
        ]))

    def env(self) -> dict[str, str]:
        return {**os.environ, "APT_CONFIG": str(self.conf), "DEBIAN_FRONTEND": "noninteractive"}

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(list(args), env=self.env(), cwd=cwd, capture_output=True, text=True,
                           check=False)
        if p.returncode != 0:
            raise KernelError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stderr.strip()}")
        return p

    def update(self) -> None:
        if (self.root / "lists.stamp").exists():
            return
        log("apt-get update (private lists under " f"{self.root})")
        p = self.run("apt-get", "update", "-q")
        # apt-get update can exit 0 when a source failed to verify: refuse unsigned lists.
        for line in p.stderr.splitlines():
            if line.startswith(("W:", "E:")) and ("NO_PUBKEY" in line or "not signed" in line):
                raise KernelError(f"archive signature check failed: {line}")
        (self.root / "lists.stamp").touch()

    def refresh(self) -> None:
        (self.root / "lists.stamp").unlink(missing_ok=True)
        self.update()

    def newest(self, series: Series) -> tuple[str, str]:
        """(package, version): the highest candidate version among matching package names."""
        names = self.run("apt-cache", "pkgnames", "linux-image-").stdout.split()
        matching = sorted(n for n in names if series.package.match(n))
        found: list[tuple[str, str]] = []
        if matching:
            out = self.run("apt-cache", "show", "--no-all-versions", *matching).stdout
            for stanza in out.split("\n\n"):
                p = re.search(r"^Package: (\S+)$", stanza, re.M)
                v = re.search(r"^Version: (\S+)$", stanza, re.M)
                if p and v:
                    found.append((p[1], v[1]))
        if not found:
            raise KernelError(f"no package matching {series.package.pattern} in "
                              f"{', '.join(series.suites)}")

        def cmp(a: tuple[str, str], b: tuple[str, str]) -> int:
            if a[1] == b[1]:
                return 0
            gt = subprocess.run(["dpkg", "--compare-versions", a[1], "gt", b[1]], check=False)
            return 1 if gt.returncode == 0 else -1

        return max(found, key=functools.cmp_to_key(cmp))

    def download(self, package: str, version: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        have = sorted(dest.glob(f"{package}_*.deb"))
        want = [p for p in have if version.replace(":", "%3a") in p.name]
        if want:
            return want[0]
        log(f"apt-get download {package}={version}")
        self.run("apt-get", "download", "-q", f"{package}={version}", cwd=dest)
        got = sorted(dest.glob(f"{package}_*.deb"))
        new = [p for p in got if p not in have]
        if not new:
            raise KernelError(f"apt-get download {package} left no .deb in {dest}")
        return new[0]


# ---------------------------------------------------------------------------------------------
# Unpacking and installing


def _manifest(series: Series, cache: Path) -> Path:
    return cache / "kernels" / f"{series.name}.json"


def _unpack(deb: Path, tree: Path) -> tuple[str, Path]:
    """(release, vmlinuz) after ``dpkg-deb -x`` into ``tree`` (reused when already there)."""
    if not tree.exists():
        tmp = tree.with_name(tree.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log(f"dpkg-deb -x {deb.name}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(tree)
    images = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise KernelError(f"{deb.name}: expected one boot/vmlinuz-*, found {images}")
    return images[0].name.removeprefix("vmlinuz-"), images[0]


def _modules_in(tree: Path, release: str) -> Path:
    # merged-/usr packages (trixie) ship usr/lib/modules
    for sub in ("lib/modules", "usr/lib/modules"):
        if (tree / sub / release).is_dir():
            return tree / sub / release
    raise KernelError(f"no modules for {release} in {tree}")


def install(src: Path, release: str, vmlinuz: Path) -> Path:
    """Copy (hard links when on the same filesystem) the modules to /lib/modules/<release>, run
    depmod, and put the image beside them as ``vmlinuz``; nothing when the stamp says this
    exact tree is already there."""
    dest = MODULES / release
    stamp = dest / ".vigil-installed"
    if stamp.exists() and stamp.read_text() == str(src) and (dest / "vmlinuz").exists():
        return dest
    if dest.exists() and not stamp.exists():
        # Somebody else's modules (a real installed kernel): use them as they are.
        log(f"{dest} exists and was not installed by Vigil's matrix; using its modules")
        if not (dest / "vmlinuz").exists():
            shutil.copy2(vmlinuz, dest / "vmlinuz")
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    MODULES.mkdir(parents=True, exist_ok=True)
    log(f"installing modules into {dest}")
    same_fs = os.stat(src).st_dev == os.stat(MODULES).st_dev
    subprocess.run(["cp", "-al" if same_fs else "-a", str(src), str(dest)], check=True)
    subprocess.run(["depmod", release], check=True)
    shutil.copy2(vmlinuz, dest / "vmlinuz")
    stamp.write_text(str(src))
    return dest


def prepare(name: str, *, refresh: bool = False, cache: Path = CACHE,
            apt: PrivateApt | None = None) -> Kernel:
    """The kernel of series ``name``, downloaded and installed if needed. Runs of the matrix
    on the same machine take turns here (one lock file in the cache)."""
    if name not in SERIES:
        raise KernelError(f"unknown kernel {name!r}; known: {', '.join(SERIES)}")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepare(SERIES[name], refresh, cache, apt)


def _prepare(series: Series, refresh: bool, cache: Path, apt: PrivateApt | None) -> Kernel:
    manifest = _manifest(series, cache)
    if manifest.exists() and not refresh:
        k = Kernel(**json.loads(manifest.read_text()))
        if Path(k.vmlinuz).exists():
            vmlinuz = Path(k.vmlinuz)
            install(_modules_in(vmlinuz.parents[1], k.release), k.release, vmlinuz)
            return k
    apt = apt or PrivateApt(cache)
    apt.write_config(list(SERIES.values()))
    if refresh:
        apt.refresh()
    else:
        apt.update()
    package, version = apt.newest(series)
    deb = apt.download(package, version, cache / "debs")
    tree = cache / "trees" / deb.stem
    release, vmlinuz = _unpack(deb, tree)
    install(_modules_in(tree, release), release, vmlinuz)
    k = Kernel(series.name, package, version, release, str(vmlinuz))
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(asdict(k), indent=2) + "\n")
    return k


if __name__ == "__main__":
    # `python tests/vm/kernels.py [SERIES ...]`: fetch and install, print what is ready.
    for arg in sys.argv[1:] or list(SERIES):
        print(json.dumps(asdict(prepare(arg))))
