"""Vigil's health check on a real arm64 Debian kernel under QEMU emulation (issue 5, 6c).

    .venv/bin/python tests/arm64/health.py [--suite bookworm|trixie]
                                       (root; first run ~10 min, then 5-10 min under TCG)

Host side. Prepares, once, under /var/cache/vigil-kernels/btf/arm64/: an arm64 Debian bookworm
root made with debootstrap (python3, python3-yaml, libbpf1, kmod, busybox-static; orjson's
aarch64 wheel from PyPI through pip), and the suite's newest arm64 kernel package (through
`vigil btf fetch`) with its modules installed in that root and in the host's /lib/modules (where
virtme-ng looks). Then boots the kernel with virtme-ng (qemu-system-aarch64, TCG), the checkout
mounted read-only at /opt/vigil, and runs guest_health.py there; it judges the result: the
guest is aarch64, and the agent reported create, modify, chmod and delete of the watched file,
each with the acting process's who-data (pid, uid 65534, executable). Exit status 0 = healthy.

Needs qemu-system-arm, qemu-user-static, debootstrap, binfmt-support (apt) and virtme-ng (the
`vm` extra); it says what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vigil.btfhub.debian import fetch  # noqa: E402
from vigil.btfhub.packages import read_package  # noqa: E402

CACHE = Path("/var/cache/vigil-kernels/btf/arm64")
ROOTFS = CACHE / "rootfs"
VNG = ROOT / ".venv" / "bin" / "vng"
PACKAGES = "python3,python3-yaml,libbpf1,kmod,busybox-static"
TOOLS = {"qemu-system-aarch64": "qemu-system-arm", "debootstrap": "debootstrap",
         "qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support"}


def say(msg: str) -> None:
    print(f"arm64-health: {msg}", flush=True)


def run(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, text=True, **kw)


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        sys.exit(f"arm64-health: missing tools: apt-get install {' '.join(missing)}")
    if not VNG.exists():
        sys.exit("arm64-health: virtme-ng missing: .venv/bin/pip install -e '.[dev,vm]'")


def ensure_binfmt() -> None:
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        run("mount", "binfmt_misc", "-t", "binfmt_misc", "/proc/sys/fs/binfmt_misc")
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        run("update-binfmts", "--enable", "qemu-aarch64")


def ensure_rootfs() -> None:
    if (ROOTFS / "usr" / "bin" / "python3").exists() and (ROOTFS / ".vigil-ready").exists():
        return
    say("debootstrap of an arm64 bookworm root (a few minutes under emulation)")
    shutil.rmtree(ROOTFS, ignore_errors=True)
    ROOTFS.parent.mkdir(parents=True, exist_ok=True)
    run("debootstrap", "--arch=arm64", "--variant=minbase", f"--include={PACKAGES}",
        "bookworm", str(ROOTFS), "http://deb.debian.org/debian", capture_output=True)
    for name in ("poweroff", "reboot"):  # virtme-ng's guest ends with one of them
        link = ROOTFS / "sbin" / name
        if not link.exists():
            link.symlink_to("/bin/busybox")
    (ROOTFS / ".vigil-ready").touch()


def ensure_deps() -> None:
    deps = ROOTFS / "opt" / "vigil-deps"
    if (deps / "orjson").exists():
        return
    say("orjson's aarch64 wheel into the root")
    run(str(ROOT / ".venv" / "bin" / "pip"), "install", "-q", "--target", str(deps),
        "--platform", "manylinux2014_aarch64", "--python-version", "3.11",
        "--implementation", "cp", "--only-binary=:all:", "--no-deps", "orjson")


def ensure_kernel(suite: str) -> tuple[str, Path]:
    deb = fetch([suite], ["arm64"], CACHE.parent, report=lambda _: None)[-1].path
    pkg = read_package(deb)
    release = next(iter(pkg.images))
    unpacked = CACHE / "kernel" / release
    if not (unpacked / "boot" / f"vmlinuz-{release}").exists():
        say(f"unpacking {deb.name}")
        unpacked.mkdir(parents=True, exist_ok=True)
        run("dpkg-deb", "-x", str(deb), str(unpacked))
    for root in (ROOTFS, Path("/")):
        mods = root / "lib" / "modules" / release
        if not (mods / "modules.dep").exists():
            if mods.exists():
                shutil.rmtree(mods)
            src = unpacked / "lib" / "modules" / release
            if not src.exists():  # trixie's packages are merged-/usr
                src = unpacked / "usr" / "lib" / "modules" / release
            shutil.copytree(src, mods, symlinks=True)
            run("depmod", "-b", str(root), release)
    return release, unpacked / "boot" / f"vmlinuz-{release}"


def boot(image: Path, out: Path) -> str:
    for d in ("opt/vigil", "out"):
        (ROOTFS / d).mkdir(parents=True, exist_ok=True)
    cmd = [str(VNG), "--arch", "arm64", "--root", str(ROOTFS), "-r", str(image),
           "--disable-kvm", "--cpus", "2", "--memory", "2G",
           f"--rodir=/opt/vigil={ROOT}", f"--rwdir=/out={out}",
           "--", "/usr/bin/python3", "/opt/vigil/tests/arm64/guest_health.py"]
    say("booting: " + " ".join(cmd))
    env = dict(os.environ, PATH=f"{VNG.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False, env=env)
    return p.stdout + p.stderr


def judge(result: dict[str, Any]) -> list[str]:
    problems = []
    if result["machine"] != "aarch64":
        problems.append(f"the guest is {result['machine']}, not aarch64")
    if not result["ready"]:
        problems.append("the agent never reported the readiness sentinel")
    pid = result["child_pid"]
    mine = [e for e in result["events"] if e.get("process", {}).get("pid") == pid]
    path = "/tmp/vigil-health/health.txt"
    actions = [e["event"]["action"] for e in mine if e.get("file", {}).get("path") == path]
    for wanted in ("created", "modified", "mode-changed", "deleted"):
        if wanted not in actions:
            problems.append(f"no {wanted} event for {path} (got {actions})")
    for e in mine:
        who = (e.get("user", {}).get("id"), e.get("process", {}).get("executable"))
        if who[0] != "65534" or not str(who[1]).startswith("/usr/bin/python3"):
            problems.append(f"{e['event']['action']}: who-data {who}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="bookworm", choices=("bullseye", "bookworm", "trixie"),
                        help="whose newest arm64 kernel to boot (the root stays bookworm)")
    args = parser.parse_args()
    check_tools()
    ensure_binfmt()
    ensure_rootfs()
    ensure_deps()
    release, image = ensure_kernel(args.suite)
    with tempfile.TemporaryDirectory(prefix="vigil-arm64-") as tmp:
        out = Path(tmp)
        log = boot(image, out)
        result_file = out / "result.json"
        if not result_file.exists():
            print(log[-6000:])
            say("FAILED: the guest wrote no result")
            return 1
        result = json.loads(result_file.read_text())
        shutil.copy(result_file, CACHE / "last-result.json")
    say(f"guest: {result['machine']}, kernel {result['kernel']} (BTF: {result['kernel_btf']}), "
        f"Python {result['python']}, LSMs {result['lsm']}")
    for line in result["stderr"]:
        if "backend" in line or "event buffer" in line or "BTF" in line:
            say(f"agent: {line}")
    say(f"agent ready after {result['seconds_to_ready']} s")
    for e in result["events"]:
        p = e.get("process", {})
        say(f"event: {e['event']['action']:13} {e.get('file', {}).get('path')} pid={p.get('pid')}"
            f" uid={e.get('user', {}).get('id')} exe={p.get('executable')}")
    problems = judge(result)
    if problems:
        for line in result["stderr"]:
            say(f"agent stderr: {line}")
        for name, verdict in result.get("diagnosis", {}).items():
            say(f"diagnosis: {name}.bpf.o tracepoint programs alone: {verdict}")
    for msg in problems:
        say(f"FAILED: {msg}")
    if not problems:
        say(f"healthy: create, modify, chmod and delete seen with who-data on {release}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
