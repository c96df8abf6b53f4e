"""The test kernel module (tests/kmod/vigil_escalate.c) built on the host for one matrix kernel,
before its VM boots: ``build/kmod/<release>/vigil_escalate.ko``, which the guest sees at the same
path (the host's filesystem is the guest's read-only root; tests/kernel/kmod.py finds it).

Owns getting the kernel's headers from Debian's archive through the matrix's private apt
(kernels.PrivateApt): ``linux-headers-<release>``, the ``linux-headers-*-common`` and
``linux-kbuild-*`` packages it depends on, all of the kernel's own package version, downloaded
into ``<cache>/debs`` and unpacked with ``dpkg-deb -x`` into ``<cache>/headers/<release>`` (the
host's /usr/src is never written; the tree's one absolute path, the include in its Makefile, is
pointed at the unpacked copy). Then ``make -C <headers> M=<copy of tests/kmod> modules`` and the
cache stamp: the module is rebuilt only when tests/kmod, the release or the host's compiler
changes.

Where the kernel was built with another compiler than the host has (bullseye's gcc-10, trixie's
gcc-14; the host is Debian 12 with gcc-12) the host's ``gcc`` builds the module; flags that only
the newer compiler knows get the fallback the kernel's own Makefile uses for older compilers
(``-falign-functions`` for ``-fmin-function-alignment``), and module BTF is not generated (the
host's pahole may be older than the kernel's flags; the tests do not need it). Where the kernel's
own ``linux-kbuild`` binaries (fixdep, modpost, objtool) need a newer C library than the host's
(trixie's need glibc 2.38, the host has 2.36), the same upstream version built for an older
suite is used instead (``linux-kbuild-6.12.118+deb12`` from bookworm-security for trixie's
6.12.118): those are host tools; the kernel's configuration, headers and Module.symvers (the
symbol versions the module is checked against) stay the guest kernel's.

A kernel whose module cannot be built is left without one (any stale .ko is removed, the reason
is in ``build/kmod/<release>/build.log``): its tests see no module file.

Does not own getting the kernels (kernels.py) nor loading the module (the tests, in the guest).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from kernels import CACHE, SERIES, Kernel, KernelError, PrivateApt

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "kmod"
OUT = ROOT / "build" / "kmod"
MODULE = "vigil_escalate.ko"
# Bump when the way the module is built changes (flags, tree layout): forces rebuilds.
RECIPE = "1"


class KmodError(Exception):
    """The module could not be built for a kernel; the message says which step and why."""


def log(msg: str) -> None:
    print(f"kmod: {msg}", file=sys.stderr, flush=True)


def module_path(release: str, out: Path = OUT) -> Path:
    """Where the module for ``release`` is (and where the guest looks for it)."""
    return out / release / MODULE


# ---------------------------------------------------------------------------------------------
# Package metadata


def parse_depends(field: str) -> list[tuple[str, str]]:
    """(name, version constraint) of each dependency of a Depends field; of alternatives
    (``a | b``) the first."""
    deps = []
    for item in field.split(","):
        first = item.split("|")[0].strip()
        m = re.match(r"^([a-z0-9][a-z0-9+.-]*)(?::\w+)?\s*(?:\(([^)]*)\))?", first)
        if m:
            deps.append((m[1], (m[2] or "").strip()))
    return deps


def stanzas(text: str) -> list[dict[str, str]]:
    """``apt-cache show`` output as one dict per package version (single-line fields)."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", block, re.M))
        if "Package" in fields:
            out.append(fields)
    return out


def upstream(version: str) -> str:
    """The upstream part of a Debian version: ``6.12.118-1~deb12u1`` -> ``6.12.118``."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def version_ok(have: str, constraint: str) -> bool:
    """Whether version ``have`` satisfies a Depends constraint such as ``>= 2.38``."""
    if not constraint:
        return True
    op, _, want = constraint.partition(" ")
    ops = {">=": "ge", "<=": "le", ">>": "gt", "<<": "lt", "=": "eq"}
    if op not in ops:
        return False
    return subprocess.run(["dpkg", "--compare-versions", have, ops[op], want.strip()],
                          check=False).returncode == 0


def host_libc() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libc6"], capture_output=True,
                          text=True, check=True).stdout.strip()


def runs_here(stanza: dict[str, str], libc: str) -> bool:
    """Whether a linux-kbuild package's programs run with the host's C library."""
    return all(version_ok(libc, c) for n, c in parse_depends(stanza.get("Depends", ""))
               if n == "libc6")


def choose_kbuild(own: dict[str, str], candidates: list[dict[str, str]],
                  libc: str) -> dict[str, str]:
    """The kernel's own linux-kbuild when it runs here, else another package of the same
    upstream version that does (the newest such); KmodError when none does."""
    if runs_here(own, libc):
        return own
    same = [s for s in candidates
            if s["Package"].startswith("linux-kbuild-") and s is not own
            and upstream(s["Version"]) == upstream(own["Version"]) and runs_here(s, libc)]
    if not same:
        need = [c for n, c in parse_depends(own.get("Depends", "")) if n == "libc6"]
        raise KmodError(f"{own['Package']} {own['Version']} needs libc6 {' '.join(need)} (the "
                        f"host has {libc}) and no linux-kbuild package of upstream version "
                        f"{upstream(own['Version'])} runs with the host's C library")
    return sorted(same, key=lambda s: s["Package"])[-1]


# ---------------------------------------------------------------------------------------------
# The headers tree


def _show(apt: PrivateApt, *pkgs: str) -> list[dict[str, str]]:
    return stanzas(apt.run("apt-cache", "show", *pkgs).stdout)


def fetch_headers(k: Kernel, cache: Path = CACHE, apt: PrivateApt | None = None) -> Path:
    """``<cache>/headers/<release>``, holding usr/src/linux-headers-<release> ready for
    ``make -C``; downloaded and unpacked when not there yet."""
    tree = cache / "headers" / k.release
    if (tree / ".complete").exists():
        return tree
    apt = apt or PrivateApt(cache)
    apt.write_config(list(SERIES.values()))
    apt.update()
    arch_pkg = f"linux-headers-{k.release}"
    try:
        mine = [s for s in _show(apt, arch_pkg) if s["Version"] == k.version]
    except KernelError as e:
        raise KmodError(f"no {arch_pkg} in the archive: {e}") from e
    if not mine:
        raise KmodError(f"no {arch_pkg} of version {k.version} (the kernel's) in the archive")
    deps = parse_depends(mine[0].get("Depends", ""))
    common = [n for n, _ in deps if n.startswith("linux-headers-") and n.endswith("-common")]
    kbuild = [n for n, _ in deps if n.startswith("linux-kbuild-")]
    if len(common) != 1 or len(kbuild) != 1:
        raise KmodError(f"{arch_pkg} {k.version}: expected one -common and one linux-kbuild "
                        f"dependency, found {common} and {kbuild}")
    all_kbuild = [n for n in apt.run("apt-cache", "pkgnames", "linux-kbuild-").stdout.split()]
    candidates = _show(apt, *sorted(all_kbuild))
    own = [s for s in candidates if s["Package"] == kbuild[0] and s["Version"] == k.version]
    if not own:
        raise KmodError(f"no {kbuild[0]} of version {k.version} in the archive")
    chosen = choose_kbuild(own[0], candidates, host_libc())
    if chosen is not own[0]:
        log(f"{own[0]['Package']} {k.version} needs a newer C library than the host's: using "
            f"its host tools as built in {chosen['Package']} {chosen['Version']}")
    debs = [apt.download(arch_pkg, k.version, cache / "debs"),
            apt.download(common[0], k.version, cache / "debs"),
            apt.download(chosen["Package"], chosen["Version"], cache / "debs")]
    part = tree.with_name(tree.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    for deb in debs:
        log(f"dpkg-deb -x {deb.name}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(part)], check=True)
    _relocate(part, k.release, tree, kbuild[0], chosen["Package"])
    shutil.rmtree(tree, ignore_errors=True)
    part.rename(tree)
    (tree / ".complete").write_text(json.dumps(
        {"headers": f"{arch_pkg} {k.version}", "kbuild": f"{chosen['Package']} "
         f"{chosen['Version']}"}) + "\n")
    return tree


def _relocate(part: Path, release: str, final: Path, kbuild: str, chosen: str) -> None:
    """Make the unpacked tree work where it is: the Makefile includes the -common tree by its
    absolute /usr/src path; a stand-in linux-kbuild goes where the headers' links point."""
    if chosen != kbuild:
        (part / "usr/lib" / chosen).rename(part / "usr/lib" / kbuild)
    makefile = part / "usr/src" / f"linux-headers-{release}" / "Makefile"
    text = makefile.read_text()
    fixed = re.sub(r"^include /usr/src/", f"include {final}/usr/src/", text, flags=re.M)
    if fixed == text:
        raise KmodError(f"{makefile}: no 'include /usr/src/...' line to point at the cache")
    makefile.write_text(fixed)


# ---------------------------------------------------------------------------------------------
# Building


def _compiler(config: str) -> str:
    """The kernel's gcc when the host has it (gcc-12 for 6.1), else the host's gcc."""
    m = re.search(r'^CONFIG_CC_VERSION_TEXT=".*?\bgcc-(\d+)\b', config, re.M)
    if m and shutil.which(f"gcc-{m[1]}"):
        return f"gcc-{m[1]}"
    return "gcc"


def _accepts(cc: str, flag: str) -> bool:
    return subprocess.run([cc, flag, "-x", "c", "-c", "-o", os.devnull, os.devnull],
                          capture_output=True, check=False).returncode == 0


def make_args(headers: Path, cc: str) -> list[str]:
    """make's command line for the module (after ``make -C headers M=dir``)."""
    config = (headers / ".config").read_text()
    args = [f"CC={cc}", "CONFIG_DEBUG_INFO_BTF_MODULES="]
    if re.search(r"^CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=y", config, re.M) and \
            not _accepts(cc, "-fmin-function-alignment=16"):
        args.append("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=")
    return args


def _digest(cc: str) -> str:
    h = hashlib.sha256(RECIPE.encode())
    for f in sorted(SOURCE.iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    h.update(ver.encode())
    return h.hexdigest()


def build(k: Kernel, *, cache: Path = CACHE, out: Path = OUT,
          apt: PrivateApt | None = None) -> Path:
    """The module for kernel ``k``, built if the cached one is not for this source, release
    and compiler. Raises KmodError (and leaves no .ko for this release) when it cannot be."""
    dest = out / k.release
    ko = dest / MODULE
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with open(cache / ".lock", "w") as lock:  # the matrix's runs take turns in the cache
            fcntl.flock(lock, fcntl.LOCK_EX)
            headers = fetch_headers(k, cache, apt) / "usr/src" / f"linux-headers-{k.release}"
            cc = _compiler((headers / ".config").read_text())
            stamp = dest / ".stamp"
            want = json.dumps({"release": k.release, "version": k.version,
                               "digest": _digest(cc)})
            if ko.exists() and stamp.exists() and stamp.read_text() == want:
                return ko
            ko.unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
            src = dest / "src"
            shutil.rmtree(src, ignore_errors=True)
            shutil.copytree(SOURCE, src)
            argv = ["make", "-C", str(headers), f"M={src}", *make_args(headers, cc), "modules"]
            log(f"{k.release}: {' '.join(argv)}")
            p = subprocess.run(argv, capture_output=True, text=True, check=False)
            (dest / "build.log").write_text(f"$ {' '.join(argv)}\n{p.stdout}{p.stderr}")
            if p.returncode != 0 or not (src / MODULE).exists():
                tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-8:])
                raise KmodError(f"make exited {p.returncode}:\n{tail}")
            shutil.copy2(src / MODULE, ko)
            stamp.write_text(want)
            return ko
    except (KmodError, KernelError, OSError, subprocess.CalledProcessError) as e:
        ko.unlink(missing_ok=True)
        why = f"no test module for {k.release}: {e}"
        with (dest / "build.log").open("a") as f:
            f.write(why + "\n")
        raise KmodError(why) from e


if __name__ == "__main__":
    # `python tests/vm/kmod_build.py [SERIES ...]`: prepare the kernels, build, print the paths.
    from kernels import prepare

    status = 0
    for arg in sys.argv[1:] or list(SERIES):
        try:
            print(build(prepare(arg)))
        except KmodError as err:
            print(err, file=sys.stderr)
            status = 1
    sys.exit(status)
