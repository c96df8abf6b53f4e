"""Debian kernel packages of any architecture, downloaded with a private apt configuration.

Owns fetching `linux-image-*` packages to feed `vigil btf extract`: one apt state per (suite,
architecture) under the cache directory (its own sources list, lists, package cache and empty
dpkg status; `APT::Architecture` set to the foreign architecture, so no `dpkg
--add-architecture` is needed), `apt-get update` only when the lists are missing or older
than a day, the newest image of the suite's main flavour picked by `apt-cache` and
`dpkg --compare-versions`, and `apt-get download` into `<cache>/debs/debian/<version>/<arch>/`
(skipped when the file is already there). The machine's own apt configuration is read by
nothing and changed by nothing.
"""

from __future__ import annotations

import functools
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vigil.kernel.errors import VigilError

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_CACHE = Path("/var/cache/vigil-kernels/btf")
SUITES = {"bullseye": "11", "bookworm": "12", "trixie": "13"}
# Debian architecture -> the flavour of its generic kernel image.
FLAVOURS = {"amd64": "amd64", "arm64": "arm64", "armhf": "armmp", "i386": "686",
            "ppc64el": "powerpc64le", "s390x": "s390x", "riscv64": "riscv64"}
_LISTS_MAX_AGE = 24 * 3600


class FetchError(VigilError):
    """A kernel package could not be listed or downloaded."""


@dataclass(frozen=True)
class Fetched:
    suite: str
    version_id: str
    arch: str  # Debian name
    package: str
    version: str
    path: Path


class PrivateApt:
    """apt-get/apt-cache for one suite and architecture, with state under ``root``."""

    def __init__(self, cache: Path, suite: str, arch: str, mirror: str = MIRROR) -> None:
        if suite not in SUITES:
            raise FetchError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
        if arch not in FLAVOURS:
            raise FetchError(f"unknown Debian architecture {arch!r} "
                             f"(known: {', '.join(FLAVOURS)})")
        self.suite, self.arch = suite, arch
        self.root = cache / "apt" / f"{suite}-{arch}"
        self.mirror = mirror

    def _prepare(self) -> None:
        for d in ("lists/partial", "cache/archives/partial", "parts", "sources.d", "prefs.d"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        (self.root / "sources.list").write_text(
            f"deb [signed-by={KEYRING}] {self.mirror} {self.suite} main\n")

    def _opts(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::State": r, "Dir::State::Lists": r / "lists", "Dir::State::status": r / "status",
            "Dir::Cache": r / "cache", "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": r / "sources.d", "Dir::Etc::Parts": r / "parts",
            "Dir::Etc::Preferences": r / "preferences", "Dir::Etc::PreferencesParts": r / "prefs.d",
            "APT::Architecture": self.arch, "APT::Architectures::": self.arch,
            "Acquire::Languages": "none", "APT::Sandbox::User": "root",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled": "false",
        }
        out: list[str] = []
        for k, v in opts.items():
            out += ["-o", f"{k}={v}"]
        return out

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        p = subprocess.run([tool, *self._opts(), *args], capture_output=True, text=True,
                           cwd=cwd, check=False)
        if p.returncode != 0:
            raise FetchError(f"{tool} {' '.join(args)} ({self.suite}/{self.arch}) failed: "
                             f"{(p.stderr or p.stdout).strip()[-800:]}")
        return p.stdout

    def update(self, force: bool = False) -> None:
        self._prepare()
        stamp = self.root / "updated"
        fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < _LISTS_MAX_AGE
        if fresh and not force:
            return
        self._run("apt-get", "-q", "update")
        stamp.touch()

    def images(self) -> list[tuple[str, str]]:
        """(package, version) of every generic kernel image in the suite, oldest first; of a
        signed/unsigned pair (the same kernel) only the unsigned one."""
        flavour = FLAVOURS[self.arch]
        # 6.1.0-50, 5.10.0-32, 6.12.107+deb13; not the cloud/rt/16k/64k flavours
        pat = re.compile(rf"^linux-image-\d+\.\d+[\d.]*(?:-\d+)?(?:\+deb\d+)?-"
                         rf"{re.escape(flavour)}(-unsigned)?$")
        names = set(n for n in self._run("apt-cache", "pkgnames", "linux-image-").split()
                    if pat.match(n))
        names = {n for n in names if n.endswith("-unsigned") or n + "-unsigned" not in names}
        if not names:
            raise FetchError(f"no linux-image-*-{flavour} package in {self.suite} for "
                             f"{self.arch}")
        found = [(n, self._version(n)) for n in names]
        return sorted(found, key=functools.cmp_to_key(_by_version))

    def _version(self, package: str) -> str:
        out = self._run("apt-cache", "show", "--no-all-versions", f"{package}:{self.arch}")
        m = re.search(r"^Version: (\S+)$", out, re.M)
        if m is None:
            raise FetchError(f"apt-cache show {package}: no Version")
        return m.group(1)

    def download(self, package: str, version: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        quoted = version.replace(":", "%3a")
        path = dest / f"{package}_{quoted}_{self.arch}.deb"
        if path.is_file():
            return path
        self._run("apt-get", "-q", "download", f"{package}:{self.arch}={version}", cwd=dest)
        if not path.is_file():
            found = sorted(dest.glob(f"{package}_*_{self.arch}.deb"))
            if not found:
                raise FetchError(f"apt-get download {package} wrote no file in {dest}")
            return found[-1]
        return path


def _by_version(a: tuple[str, str], b: tuple[str, str]) -> int:
    return _compare(a[1], b[1])


def _compare(a: str, b: str) -> int:
    if a == b:
        return 0
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0
    return -1 if lt else 1


def fetch(suites: list[str], arches: list[str], cache: Path = DEFAULT_CACHE, *,
          every: bool = False, refresh: bool = False, dbg: bool = False,
          report: Callable[[str], None] = print) -> list[Fetched]:
    """The newest kernel image (``every``: each one) of each suite and architecture, skipping
    the pairs Debian does not build (e.g. trixie/i386), downloaded unless already cached.
    ``dbg``: the images' debug packages instead (``linux-image-<release>-dbg``, their DWARF
    vmlinux), under ``<cache>/dbg/``: the BTF source of kernels built without BTF."""
    out: list[Fetched] = []
    for suite in suites:
        for arch in arches:
            apt = PrivateApt(cache, suite, arch)
            apt.update(force=refresh)
            try:
                images = apt.images()
            except FetchError as e:
                report(f"skipped: {e}")
                continue
            dest = cache / ("dbg" if dbg else "debs") / "debian" / SUITES[suite] / arch
            if dbg:
                images = _debug_packages(apt, images, report)
            if every:
                out.extend(_each_available(apt, images, dest, report))
            else:
                out.append(_newest_available(apt, images, dest, report))
    return out


def debug_package(image: tuple[str, str]) -> str:
    """linux-image-6.1.0-50-686-unsigned -> linux-image-6.1.0-50-686-dbg"""
    return image[0].removesuffix("-unsigned") + "-dbg"


def _debug_packages(apt: PrivateApt, images: list[tuple[str, str]],
                    report: Callable[[str], None]) -> list[tuple[str, str]]:
    out = []
    for image in images:
        package = debug_package(image)
        try:
            out.append((package, apt._version(package)))
        except FetchError as e:
            report(f"{apt.suite}/{apt.arch}: no debug package for {image[0]} ({e})")
    return out


def _download(apt: PrivateApt, package: str, version: str, dest: Path,
              report: Callable[[str], None]) -> Fetched:
    path = apt.download(package, version, dest)
    report(f"{apt.suite}/{apt.arch}: {package} {version} -> {path}")
    return Fetched(apt.suite, SUITES[apt.suite], apt.arch, package, version, path)


def _each_available(apt: PrivateApt, images: list[tuple[str, str]], dest: Path,
                    report: Callable[[str], None]) -> list[Fetched]:
    """Every image the mirror serves (see _newest_available); an error if it serves none."""
    got, failed = [], []
    for package, version in images:
        try:
            got.append(_download(apt, package, version, dest, report))
        except FetchError as e:
            report(f"{apt.suite}/{apt.arch}: {package} {version} not downloadable, skipped ({e})")
            failed.append(e)
    if failed and not got:
        raise failed[0]
    return got


def _newest_available(apt: PrivateApt, images: list[tuple[str, str]], dest: Path,
                      report: Callable[[str], None]) -> Fetched:
    """The newest image the mirror really serves: between a suite's index and its pool a
    mirror can lag (the index names a kernel whose file is not there yet, or any more), so an
    older image of the same suite is taken then, and said."""
    failed: list[FetchError] = []
    for package, version in reversed(images):
        try:
            return _download(apt, package, version, dest, report)
        except FetchError as e:
            report(f"{apt.suite}/{apt.arch}: {package} {version} not downloadable, trying an "
                   f"older one ({e})")
            failed.append(e)
    raise failed[0]
