"""Vigil's health check on a real Debian kernel of another architecture under QEMU emulation
(issue 5, 6c): arm64, armhf (32-bit ARM) and i386.

    .venv/bin/python tests/arch/health.py [--arch arm64|armhf|i386] [--suite bookworm|...]
                                          [--btf kernel|tailored|full] [--backend NAME]
                                          [--bpf-jit on|off] [--timeout SECONDS]
    (root; the first run of an architecture sets up its root, kernel and BTF, ~5-10 min; then
    a boot-and-run under TCG on 2 cores: i386 ~2-2.5 min, armhf ~3-4.5 min, arm64 ~3.5-6 min)

Host side. Prepares, once per architecture, under /var/cache/vigil-kernels/btf/<debian arch>/:
a Debian bookworm root of that architecture made with debootstrap (python3, python3-yaml,
libbpf1, kmod, busybox-static; orjson's wheel for it from PyPI through pip --platform), and the
suite's newest kernel package of the architecture (through `vigil btf fetch`) with its modules
installed in that root and in the host's /lib/modules (where virtme-ng looks).

Each run then works on a SNAPSHOT of the checkout (vigil/ and tests/arch/, copied to a temporary
directory at the start): rebuilding vigil/bpf_objects during a run disturbs neither the BTF
made for the run nor the guest, which mounts the snapshot read-only at /opt/vigil. The kernel's
BTF, chosen by --btf:

- ``kernel`` (default where Debian builds the kernel with BTF: arm64): the kernel's own;
- ``tailored`` (default for armhf and i386, whose kernels have no BTF): the kernel's full BTF
  (from the image, or made once with pahole from the DWARF of its ``-dbg`` package by `vigil btf
  extract --from-dwarf`, cached under .../<debian arch>/kernel-btf/) is tailored to the
  snapshot's objects by `vigil btf gen` (the snapshot's own code) and handed to the guest's
  agent through VIGIL_BTF_ARCHIVE (the kernel's own BTF hidden); the guest proves it was used
  (`vigil btf which` and the agent's "vigil: using tailored BTF ... key K" line);
- ``full``: the full BTF itself, with `vigil run --btf` (and VIGIL_BTF for doctor): a vmlinux
  BTF keeps function prototypes, so the kprobe backend is possible.

The kernel is booted with virtme-ng (`vng --arch arm64|armhf`: qemu-system-aarch64, or
qemu-system-arm -M virt, TCG); vng has no i386, so that one goes through virtme-run, vng's lower
layer (qemu-system-i386 -machine q35 -cpu max), with the writable overlays vng adds itself. The
guest (guest_health.py) sets net.core.bpf_jit_enable if --bpf-jit says so, runs `vigil btf
which`, `vigil doctor`, then the agent (`--backend` passed through); an unprivileged user
(nobody) creates, modifies, chmods and deletes a watched file. The guest writes result.json
(kept with the host's part as .../<debian arch>/last-result.json, the VM's console log beside it
as last-vng.log): uname -m, release, /sys/kernel/btf/vmlinux, the JIT switch, the doctor's and
agent's output, whether the objects' tracepoint programs load alone when the agent did not come
up, timings. This side judges it. Exit status: 0 healthy (the right machine, the BTF handed over
used, exactly the events of guest_health.EXPECTED_ACTIONS (one "modified" per close), each
with the acting process's who-data: uid 65534, exe /usr/bin/python3*); 1
otherwise.

Needs debootstrap, qemu-system-arm or qemu-system-x86, qemu-user-static and binfmt-support for
the foreign roots, dwarves (pahole) for --btf tailored/full on kernels without BTF (apt), and
virtme-ng (the `vm` extra); it says what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from guest_health import EXPECTED_ACTIONS  # noqa: E402  (beside this file)

from vigil.btfhub.debian import PrivateApt, fetch  # noqa: E402
from vigil.btfhub.packages import read_package  # noqa: E402

BTF_CACHE = Path("/var/cache/vigil-kernels/btf")
VENV_BIN = ROOT / ".venv" / "bin"
VNG = VENV_BIN / "vng"
VNG_ARCHES = ("amd64", "arm64", "armhf", "ppc64el", "s390x", "riscv64")  # vng --arch takes these
GUEST_ROOT = "/opt/vigil"  # where the snapshot is mounted in the guest
CONFIG_NAME = "health-config.json"  # in the snapshot: what the guest is to do
PACKAGES = "python3,python3-yaml,libbpf1,kmod,busybox-static"


@dataclass(frozen=True)
class ArchSpec:
    debian: str  # debootstrap --arch, the kernel package's architecture, the cache directory
    machine: str  # uname -m in the guest, Vigil's object directory
    vm_arch: str  # vng --arch (Debian names); virtme-run --arch (QEMU names) when vng has none
    qemu: str  # the qemu-system binary vng runs
    qemu_package: str
    binfmt: str | None  # the qemu-user binfmt entry debootstrap needs (None: the host runs it)
    wheel: str  # pip --platform of orjson's wheel
    kernel_btf: bool  # Debian builds this architecture's kernel with BTF
    memory: str  # guest memory: 32-bit kernels map little of it directly


ARCHES = {a.debian: a for a in (
    ArchSpec("arm64", "aarch64", "arm64", "qemu-system-aarch64", "qemu-system-arm",
             "qemu-aarch64", "manylinux2014_aarch64", True, "2G"),
    # qemu-system-arm -M virt (cortex-a15) boots Debian's armmp (ARMv7 multiplatform) kernel
    ArchSpec("armhf", "armv7l", "armhf", "qemu-system-arm", "qemu-system-arm",
             "qemu-arm", "manylinux2014_armv7l", False, "1G"),
    # virtme-run (vng knows no i386) -> qemu-system-i386 -machine q35 -cpu max; the host runs
    # i386 programs itself (debootstrap)
    ArchSpec("i386", "i686", "i386", "qemu-system-i386", "qemu-system-x86",
             None, "manylinux2014_i686", False, "1G"),
)}


def say(msg: str) -> None:
    print(f"arch-health: {msg}", flush=True)


def run(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, text=True, **kw)


class Paths:
    """The per-architecture cache: root, unpacked kernels, kernel BTFs, last result."""

    def __init__(self, spec: ArchSpec) -> None:
        self.cache = BTF_CACHE / spec.debian
        self.rootfs = self.cache / "rootfs"
        self.kernels = self.cache / "kernel"
        self.kernel_btf = self.cache / "kernel-btf"  # BTFHub layout: ID/VERSION_ID/arch/R.btf


def check_tools(spec: ArchSpec, btf: str) -> None:
    tools = {spec.qemu: spec.qemu_package, "debootstrap": "debootstrap",
             "dpkg-deb": "dpkg", "depmod": "kmod"}
    if spec.binfmt:
        tools[spec.binfmt + "-static"] = "qemu-user-static"
        tools["update-binfmts"] = "binfmt-support"
    if btf != "kernel" and not spec.kernel_btf:
        tools["pahole"] = "dwarves"
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if missing:
        sys.exit(f"arch-health: missing tools: apt-get install {' '.join(missing)}")
    if not VNG.exists():
        sys.exit("arch-health: virtme-ng missing: .venv/bin/pip install -e '.[dev,vm]'")


def ensure_binfmt(spec: ArchSpec) -> None:
    if spec.binfmt is None:
        return
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        run("mount", "binfmt_misc", "-t", "binfmt_misc", "/proc/sys/fs/binfmt_misc")
    if not Path(f"/proc/sys/fs/binfmt_misc/{spec.binfmt}").exists():
        run("update-binfmts", "--enable", spec.binfmt)


def ensure_rootfs(spec: ArchSpec, paths: Paths) -> None:
    root = paths.rootfs
    if (root / "usr" / "bin" / "python3").exists() and (root / ".vigil-ready").exists():
        return
    say(f"debootstrap of an {spec.debian} bookworm root (a few minutes under emulation)")
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    run("debootstrap", f"--arch={spec.debian}", "--variant=minbase", f"--include={PACKAGES}",
        "bookworm", str(root), "http://deb.debian.org/debian", capture_output=True)
    for name in ("poweroff", "reboot"):  # virtme-ng's guest ends with one of them
        link = root / "sbin" / name
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
    (root / ".vigil-ready").touch()


def ensure_deps(spec: ArchSpec, paths: Paths) -> None:
    """orjson (a dependency of Vigil's JSON output) is not packaged in bookworm: its wheel for
    the guest's architecture from PyPI, unpacked where the guest's PYTHONPATH points."""
    deps = paths.rootfs / "opt" / "vigil-deps"
    if (deps / "orjson").exists():
        return
    say(f"orjson's {spec.wheel} wheel into the root")
    run(str(VENV_BIN / "pip"), "install", "-q", "--target", str(deps),
        "--platform", spec.wheel, "--python-version", "3.11",
        "--implementation", "cp", "--only-binary=:all:", "--no-deps", "orjson")


@dataclass(frozen=True)
class KernelPkg:
    release: str
    image: Path
    deb: Path
    suite: str


def ensure_kernel(spec: ArchSpec, paths: Paths, suite: str) -> KernelPkg:
    notes: list[str] = []
    got = fetch([suite], [spec.debian], BTF_CACHE, report=notes.append)
    if not got:  # e.g. trixie has no i386 kernel
        sys.exit(f"arch-health: no {spec.debian} kernel in {suite}: {'; '.join(notes)}")
    deb = got[-1].path
    pkg = read_package(deb)
    release = next(iter(pkg.images))
    unpacked = paths.kernels / release
    if not (unpacked / "boot" / f"vmlinuz-{release}").exists():
        say(f"unpacking {deb.name}")
        unpacked.mkdir(parents=True, exist_ok=True)
        run("dpkg-deb", "-x", str(deb), str(unpacked))
    for root in (paths.rootfs, Path("/")):
        mods = root / "lib" / "modules" / release
        if not (mods / "modules.dep").exists():
            if mods.exists():
                shutil.rmtree(mods)
            src = unpacked / "lib" / "modules" / release
            if not src.exists():  # trixie's packages are merged-/usr
                src = unpacked / "usr" / "lib" / "modules" / release
            shutil.copytree(src, mods, symlinks=True)
            run("depmod", "-b", str(root), release)
    return KernelPkg(release, unpacked / "boot" / f"vmlinuz-{release}", deb, suite)


def kernel_config(k: KernelPkg) -> dict[str, str]:
    """What Vigil needs from the kernel's build configuration (/boot/config-R of the package)."""
    wanted = ("BPF_SYSCALL", "BPF_JIT", "KPROBES", "KPROBE_EVENTS", "BPF_EVENTS",
              "FTRACE_SYSCALLS", "BPF_LSM", "DEBUG_INFO_BTF", "DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
    cfg = k.image.parent / f"config-{k.release}"
    values = {}
    try:
        for line in cfg.read_text().splitlines():
            for name in wanted:
                if line.startswith(f"CONFIG_{name}="):
                    values[name] = line.split("=", 1)[1]
    except OSError:
        return {}
    return {name: values.get(name, "n") for name in wanted}


def os_release(root: Path) -> tuple[str, str]:
    """(ID, VERSION_ID) of the guest's userland: what Vigil looks the kernel up by there."""
    vals = {}
    for line in (root / "etc" / "os-release").read_text().splitlines():
        if "=" in line:
            key, v = line.split("=", 1)
            vals[key] = v.strip().strip("\"'")
    return vals["ID"], vals["VERSION_ID"]


def full_btf(spec: ArchSpec, paths: Paths, k: KernelPkg) -> tuple[Path, str]:
    """The kernel's full BTF (cached) and what it was made from: the image's own BTF, or, for
    a kernel built without it, pahole over the DWARF of its -dbg package."""
    distro, version = os_release(paths.rootfs)
    out = paths.kernel_btf / distro / version / spec.machine / f"{k.release}.btf"
    if out.is_file():
        return out, "cached"
    if spec.kernel_btf:
        source, extra = k.deb, []
    else:
        apt = PrivateApt(BTF_CACHE, k.suite, spec.debian)
        apt.update()
        package = f"linux-image-{k.release}-dbg"
        say(f"downloading {package} (DWARF, several hundred MB)")
        source = apt.download(package, apt._version(package), BTF_CACHE / "dbg" / spec.debian)
        extra = ["--from-dwarf"]
    say(f"vigil btf extract {' '.join(extra)} {source.name}")
    p = subprocess.run([str(VENV_BIN / "vigil"), "btf", "extract", *extra, "--distro",
                        f"{distro}/{version}", "--out", str(paths.kernel_btf), str(source)],
                       capture_output=True, text=True, check=False)
    if p.returncode != 0 or not out.is_file():
        sys.exit(f"arch-health: vigil btf extract {source} failed ({p.returncode}): "
                 f"{(p.stderr or p.stdout).strip()[-800:]}")
    say(p.stdout.strip())
    return out, source.name


def snapshot(dest: Path) -> dict[str, Any]:
    """Copy what the guest and `vigil btf gen` need (vigil/, tests/arch/) to ``dest``; the
    objects' sha256s, and whether they agree with BUILDINFO (they may not while the objects
    are being rebuilt: said, not fatal)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "vigil", dest / "vigil", ignore=ignore)
    shutil.copytree(ROOT / "tests" / "arch", dest / "tests" / "arch", ignore=ignore)
    objects = dest / "vigil" / "bpf_objects"
    recorded = {}
    info = objects / "BUILDINFO"
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("sha256 "):
                _, digest, name = line.split()
                recorded[name] = digest
    shas = {str(p.relative_to(objects)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(objects.glob("*/*.bpf.o"))}
    stale = sorted(n for n, d in shas.items() if recorded.get(n) != d)
    return {"sha256": shas, "differ_from_buildinfo": stale,
            "buildinfo_mtime": info.stat().st_mtime if info.is_file() else None}


def snapshot_vigil(snap: Path, *args: str) -> str:
    """`vigil ARGS` with the snapshot's code (its btfhub, its objects), the venv's deps."""
    env = dict(os.environ, PYTHONPATH=str(snap))
    p = subprocess.run([str(VENV_BIN / "python"), "-c",
                        "import sys; from vigil.cli import main; sys.exit(main())", *args],
                       capture_output=True, text=True, check=False, env=env, cwd=snap)
    if p.returncode != 0:
        sys.exit(f"arch-health: vigil {' '.join(args)} exited {p.returncode}: "
                 f"{(p.stderr or p.stdout).strip()[-800:]}")
    return p.stdout


def tailor(spec: ArchSpec, paths: Paths, k: KernelPkg, full: Path, snap: Path,
           work: Path) -> tuple[Path, str, int]:
    """`vigil btf gen` of this one kernel over the snapshot's objects, into the snapshot: the
    archive's path there and the key the guest will look the kernel up by."""
    distro, version = os_release(paths.rootfs)
    key = f"{distro}/{version}/{spec.machine}/{k.release}"
    src = work / "src" / distro / version / spec.machine
    src.mkdir(parents=True)
    shutil.copy(full, src / full.name)
    gen = work / "gen"
    snapshot_vigil(snap, "btf", "gen", "--source", str(work / "src"), "--out", str(gen),
                   "--objects", str(snap / "vigil" / "bpf_objects"))
    entry = (json.loads((gen / "index.json").read_text()).get("kernels") or {}).get(key)
    archive = gen / "btf-archive.tar.xz"
    if not archive.is_file() or not isinstance(entry, dict):
        sys.exit(f"arch-health: vigil btf gen made no archive entry {key} in {gen}")
    blob = gen / "btf" / f"{entry['btf']}.btf"
    # its own name: the agent names the archive it used, and the shipped one is btf-archive.tar.xz
    dest = snap / "btf" / f"arch-health-{spec.debian}.tar.xz"
    dest.parent.mkdir(exist_ok=True)
    shutil.copy(archive, dest)
    return dest, key, blob.stat().st_size if blob.is_file() else 0


# What vng mounts over its read-only root as writable overlays (virtme-run alone does not).
OVERLAYS = ("/etc", "/lib", "/home", "/opt", "/srv", "/usr", "/var", "/tmp")


def vm_command(spec: ArchSpec, paths: Paths, image: Path, snap: Path, out: Path) -> list[str]:
    """vng where it knows the architecture; else virtme-run, vng's lower layer, with what vng
    adds itself (writable overlays over the read-only root)."""
    guest = ["/usr/bin/python3", f"{GUEST_ROOT}/tests/arch/guest_health.py"]
    common = ["--root", str(paths.rootfs), "--disable-kvm", "--cpus", "2",
              "--memory", spec.memory, f"--rodir={GUEST_ROOT}={snap}", f"--rwdir=/out={out}"]
    if spec.vm_arch in VNG_ARCHES:
        return [str(VNG), "--arch", spec.vm_arch, "-r", str(image), *common, "--", *guest]
    overlays = [f"--overlay-rwdir={d}" for d in OVERLAYS]
    return [str(VENV_BIN / "virtme-run"), "--arch", spec.vm_arch, "--kimg", str(image),
            "--mods", "auto", *common, *overlays, "--script-sh", shlex.join(guest)]


def boot(spec: ArchSpec, paths: Paths, image: Path, snap: Path, out: Path,
         timeout: float) -> tuple[str, bool]:
    """The VM with the root, the snapshot read-only at /opt/vigil and ``out`` at /out; its
    console log, and whether it timed out (then QEMU is killed with the runner's session)."""
    for d in ("opt/vigil", "out"):
        (paths.rootfs / d).mkdir(parents=True, exist_ok=True)
    cmd = vm_command(spec, paths, image, snap, out)
    say("booting: " + shlex.join(cmd))
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    # stdin: the QEMU monitor would otherwise read (and stop on) the terminal
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        log, _ = p.communicate(timeout=timeout)
        return log, False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the runner execs QEMU in its own session: ours
        log, _ = p.communicate()
        return log, True


def judge(result: dict[str, Any], spec: ArchSpec, cfg: dict[str, Any]) -> list[str]:
    problems = []
    if result["machine"] != spec.machine:
        problems.append(f"the guest is {result['machine']}, not {spec.machine}")
    problems += btf_problems(result, cfg)
    if not result["ready"]:
        problems.append("the agent never reported the readiness sentinel")
    pid = result["child_pid"]
    mine = [e for e in result["events"] if e.get("process", {}).get("pid") == pid]
    path = "/tmp/vigil-health/health.txt"
    actions = tuple(e["event"]["action"] for e in mine if e.get("file", {}).get("path") == path)
    if actions != EXPECTED_ACTIONS:
        problems.append(f"events for {path}: {list(actions)}, expected exactly "
                        f"{list(EXPECTED_ACTIONS)} (one modified per close)")
    for e in mine:
        who = (e.get("user", {}).get("id"), e.get("process", {}).get("executable"))
        if who[0] != "65534" or not str(who[1]).startswith("/usr/bin/python3"):
            problems.append(f"{e['event']['action']}: who-data {who}")
    return problems


def btf_problems(result: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """That `vigil btf which` and the agent used the BTF this run handed the guest."""
    which = (result.get("btf_which") or {}).get("stdout", "").strip().split("\t")
    using = [ln for ln in result["stderr"] if ln.startswith("vigil: using ")]
    if cfg.get("btf_key"):
        key = cfg["btf_key"]
        origin = f"archive {Path(cfg['btf_archive']).name}, key {key}"
        out = []
        if len(which) != 3 or which[0] != "tailored" or which[2] != origin:
            out.append(f"vigil btf which did not choose the tailored BTF {key}: {which}")
        if not any(ln.startswith("vigil: using tailored BTF ") and ln.endswith(f"({origin})")
                   for ln in using):
            out.append(f"the agent did not say it used the tailored BTF {key}: {using}")
        return out
    if cfg.get("btf_file"):
        path = cfg["btf_file"]
        out = []
        if len(which) != 3 or which[0] != "file" or which[1] != path:
            out.append(f"vigil btf which did not choose {path}: {which}")
        if not any(ln.startswith("vigil: using kernel BTF from a file ") and path in ln
                   for ln in using):
            out.append(f"the agent did not say it used {path}: {using}")
        return out
    if result.get("kernel_btf") and using:
        return [f"the agent did not use the kernel's own BTF: {using}"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="arm64", choices=sorted(ARCHES),
                        help="Debian architecture of the kernel and the root (default arm64)")
    parser.add_argument("--suite", default="bookworm", choices=("bullseye", "bookworm", "trixie"),
                        help="whose newest kernel to boot (the root stays bookworm)")
    parser.add_argument("--btf", choices=("kernel", "tailored", "full"),
                        help="the BTF the agent relocates against (default: the kernel's own "
                        "where it has one, else tailored)")
    parser.add_argument("--backend", help="passed to `vigil run --backend` (default: its choice)")
    parser.add_argument("--bpf-jit", choices=("on", "off"),
                        help="set net.core.bpf_jit_enable in the guest first (default: as booted;"
                        " 32-bit kernels boot with it off)")
    parser.add_argument("--timeout", type=float, default=1500,
                        help="seconds for one boot-and-run (default 1500)")
    args = parser.parse_args()
    spec = ARCHES[args.arch]
    paths = Paths(spec)
    mode = args.btf or ("kernel" if spec.kernel_btf else "tailored")
    if mode == "kernel" and not spec.kernel_btf:
        sys.exit(f"arch-health: Debian's {spec.debian} kernels have no BTF of their own: "
                 f"use --btf tailored or --btf full")
    t0 = time.monotonic()
    check_tools(spec, mode)
    ensure_binfmt(spec)
    ensure_rootfs(spec, paths)
    ensure_deps(spec, paths)
    k = ensure_kernel(spec, paths, args.suite)
    config = kernel_config(k)
    say(f"kernel {k.release} ({k.deb.name}); config: "
        + " ".join(f"{n}={v}" for n, v in config.items()))
    full = full_btf(spec, paths, k)[0] if mode != "kernel" else None
    timings: dict[str, float] = {"prepare": round(time.monotonic() - t0, 1)}
    with tempfile.TemporaryDirectory(prefix=f"vigil-{spec.debian}-") as tmp:
        t1 = time.monotonic()
        snap, out = Path(tmp) / "checkout", Path(tmp) / "out"
        out.mkdir()
        objects = snapshot(snap)
        if objects["differ_from_buildinfo"]:
            say(f"warning: objects differ from BUILDINFO (a rebuild in progress?): "
                f"{objects['differ_from_buildinfo']}")
        cfg: dict[str, Any] = {"arch": spec.debian, "machine": spec.machine, "btf": mode,
                               "backend": args.backend,
                               "bpf_jit": {"on": "1", "off": "0", None: None}[args.bpf_jit]}
        if mode == "tailored":
            assert full is not None
            archive, key, size = tailor(spec, paths, k, full, snap, Path(tmp) / "btf")
            cfg.update(btf_archive=f"{GUEST_ROOT}/{archive.relative_to(snap)}", btf_key=key)
            say(f"tailored BTF {key}: {full.stat().st_size} -> {size} bytes, over the "
                f"snapshot's objects")
        elif mode == "full":
            assert full is not None
            (snap / "btf").mkdir()
            shutil.copy(full, snap / "btf" / full.name)
            cfg["btf_file"] = f"{GUEST_ROOT}/btf/{full.name}"
        (snap / CONFIG_NAME).write_text(json.dumps(cfg, indent=1))
        timings["snapshot_and_btf"] = round(time.monotonic() - t1, 1)
        t2 = time.monotonic()
        log, timed_out = boot(spec, paths, k.image, snap, out, args.timeout)
        timings["boot_and_run"] = round(time.monotonic() - t2, 1)
        (paths.cache / "last-vng.log").write_text(log)
        result_file = out / "result.json"
        if not result_file.exists():
            print(log[-6000:])
            say(f"FAILED: the guest wrote no result{' (timed out)' if timed_out else ''} "
                f"after {timings['boot_and_run']} s; console log {paths.cache / 'last-vng.log'}")
            return 1
        result = json.loads(result_file.read_text())
    result["host"] = {"config": cfg, "kernel_package": k.deb.name, "kernel_config": config,
                      "objects": objects, "timings": timings, "full_btf": str(full or "")}
    (paths.cache / "last-result.json").write_text(json.dumps(result, indent=1))
    return report(result, spec, cfg, k, paths)


def report(result: dict[str, Any], spec: ArchSpec, cfg: dict[str, Any], k: KernelPkg,
           paths: Paths) -> int:
    say(f"guest: {result['machine']}, kernel {result['kernel']} (BTF: {result['kernel_btf']}), "
        f"Python {result['python']}, LSMs {result['lsm']}")
    say(f"net.core.bpf_jit_enable: {result.get('bpf_jit_enable')}")
    say(f"timings: host {result['host']['timings']}, guest {result.get('timings')}")
    which = result.get("btf_which") or {}
    say(f"vigil btf which: rc {which.get('rc')}: {which.get('stdout', '').strip()}")
    for line in which.get("stderr", "").strip().splitlines()[-5:]:
        say(f"  btf which: {line}")
    doctor = result.get("doctor") or {}
    say(f"vigil doctor: rc {doctor.get('rc')}")
    for line in (doctor.get("stdout", "") + doctor.get("stderr", "")).splitlines():
        say(f"  doctor: {line}")
    say(f"agent: rc {result['agent_rc']}")
    for line in result["stderr"]:
        say(f"  agent: {line}")
    if result["ready"]:
        say(f"agent ready after {result['seconds_to_ready']} s")
    for e in result["events"]:
        p = e.get("process", {})
        say(f"event: {e['event']['action']:13} {e.get('file', {}).get('path')} pid={p.get('pid')}"
            f" uid={e.get('user', {}).get('id')} exe={p.get('executable')}")
    for name, verdict in result.get("diagnosis", {}).items():
        say(f"diagnosis: {name}.bpf.o tracepoint programs alone: {verdict}")
    say(f"result: {paths.cache / 'last-result.json'}")
    problems = judge(result, spec, cfg)
    for msg in problems:
        say(f"FAILED: {msg}")
    if not problems:
        say(f"healthy: create, modify, chmod and delete seen with who-data on {k.release} "
            f"({spec.machine}, BTF: {cfg['btf']})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
