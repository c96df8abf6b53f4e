"""What runs inside each VM of the kernel matrix: the doctor, then the matrix tests per backend.

Owns the guest's scratch filesystem (an ext4 image on a loop device in guest memory, mounted on
/var/tmp where the kernel tests make their area: virtme-ng gives the guest a tmpfs there, and
tmpfs before Linux 6.6 refuses user.* xattrs), running ``vigil doctor --json``, deciding each
requested backend from its report (cells.availability), running ``pytest -m matrix tests/kernel``
(``--suite kernel``: all of tests/kernel) with ``VIGIL_TEST_BACKEND`` set (unset for auto), and
writing doctor.json, one JUnit XML and one cell JSON per backend (with each skipped test and
its reason) into the results directory shared with the host.

With ``--btf-archive FILE --btf-key KEY`` (``./do test-kernels --btf tailored``) the kernel's own
/sys/kernel/btf/vmlinux is hidden from Vigil (VIGIL_TEST_HIDE_KERNEL_BTF=1) and the tailored
archive the host made for this kernel is the one looked in (VIGIL_BTF_ARCHIVE) for the doctor,
``vigil btf which`` and every agent the tests start. ``vigil btf which`` must name that archive
entry before any test runs (saved as btf-which.txt), and the tests' agent harness checks each
agent's start-up log for it (VIGIL_TEST_EXPECT_BTF), so a cell cannot pass on the kernel's BTF.

Started by matrix.py as ``<checkout>/.venv/bin/python <checkout>/tests/vm/guest.py ...``; the
host's filesystem is the guest's root (read-only, with tmpfs overlays on /etc, /var, /tmp, ...),
so nothing here changes the host except the results directory. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cells import (
    AUTO,
    KERNEL_BTF,
    SUITES,
    TAILORED_BTF,
    Cell,
    availability,
    btf_which_problem,
    cell_file,
    expand,
    junit_counts,
    verdict,
)

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
SCRATCH_IMG = Path("/run/vigil-scratch.img")


def say(msg: str) -> None:
    print(f"guest: {msg}", flush=True)


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, text=True, check=False, **kw)


def scratch_fs(size_mb: int = 768) -> None:
    """ext4 on /var/tmp, backed by a sparse file in the guest's own tmpfs /run."""
    for mod in ("loop", "ext4"):
        run(["modprobe", mod], capture_output=True)  # built in on some kernels
    with open(SCRATCH_IMG, "wb") as f:
        f.truncate(size_mb << 20)
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    p = run([mkfs, "-q", "-F", "-O", "^has_journal", str(SCRATCH_IMG)], capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"mkfs.ext4 failed: {p.stderr.strip()}")
    p = run(["mount", "-o", "loop", str(SCRATCH_IMG), "/var/tmp"], capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"mounting the scratch filesystem failed: {p.stderr.strip()}")
    os.chmod("/var/tmp", 0o1777)


def writable_accounts() -> None:
    """virtme-ng binds a tmpfs copy of /etc/shadow over the file; useradd replaces the file by a
    rename, which fails across that mount. Without it, /etc/shadow is in the guest's /etc
    overlay like the other account files."""
    for f in ("/etc/shadow", "/etc/gshadow"):
        if os.path.ismount(f):
            run(["umount", f], capture_output=True)


def use_tailored_btf(archive: Path, key: str, out: Path) -> str:
    """Point this process and its children (doctor, pytest, the agents) at the tailored archive
    with the kernel's BTF hidden; what ``vigil btf which`` says then, which must be ``key``."""
    os.environ["VIGIL_TEST_HIDE_KERNEL_BTF"] = "1"
    os.environ["VIGIL_BTF_ARCHIVE"] = str(archive)
    os.environ["VIGIL_TEST_EXPECT_BTF"] = key
    p = run([str(VENV_BIN / "vigil"), "btf", "which"], capture_output=True, timeout=300)
    (out / "btf-which.txt").write_text(p.stdout + p.stderr)
    problem = btf_which_problem(p.stdout, key) if p.returncode == 0 else \
        f"vigil btf which exited {p.returncode}: {p.stderr.strip()[-500:]}"
    if problem:
        raise RuntimeError(problem)
    kind, path, origin = p.stdout.strip().split("\t")
    used = f"{kind} BTF {path} ({origin})"
    say(f"BTF: {used}; /sys/kernel/btf/vmlinux "
        f"{'exists but is hidden' if Path('/sys/kernel/btf/vmlinux').exists() else 'absent'}")
    return used


def doctor(out: Path) -> dict[str, Any]:
    """``vigil doctor --json``, saved as doctor.json; raises with its stderr when unreadable."""
    t0 = time.monotonic()
    p = run([str(VENV_BIN / "vigil"), "doctor", "--json"], capture_output=True, timeout=600)
    (out / "doctor.stderr").write_text(p.stderr)
    try:
        report: dict[str, Any] = json.loads(p.stdout)
    except ValueError as e:
        raise RuntimeError(f"vigil doctor --json exited {p.returncode} without a JSON report: "
                           f"{p.stderr.strip()[-500:]}") from e
    (out / "doctor.json").write_text(json.dumps(report, indent=2) + "\n")
    backend = report.get("backend") or {}
    say(f"doctor ({time.monotonic() - t0:.0f}s): chosen {backend.get('chosen')!r} "
        f"({backend.get('reason', '')}); rejected: {json.dumps(backend.get('rejected') or {})}; "
        f"BTF in use: {report.get('btf_in_use')}")
    return report


def run_cell(kernel: str, backend: str, report: dict[str, Any], out: Path, timeout: float,
             pytest_args: list[str], btf: str = KERNEL_BTF, btf_used: str = "",
             suite: str = "matrix") -> Cell:
    state, reason = availability(report, backend)
    chosen = str((report.get("backend") or {}).get("chosen") or "")
    if state == "unsupported":
        say(f"{backend}: unsupported ({reason})")
        return Cell(kernel, backend, "unsupported", reason=reason, btf=btf, btf_used=btf_used,
                    suite=suite)
    xml = out / f"{backend}.xml"
    xml.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "VIGIL_TEST_BACKEND"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["VIGIL_TEST_START_TIMEOUT"] = str(max(300.0, timeout / 3))
    # Software emulation runs the suite 10-50 times slower than the host: the tests' waits for
    # children, events and the agent's stop grow by this factor (agent_proc.TIME_SCALE); the
    # 16 MiB burst (about 25 s on the host, child and drain) failed its 120 s limits here.
    env["VIGIL_TEST_TIME_SCALE"] = "5"
    if backend != AUTO:
        env["VIGIL_TEST_BACKEND"] = backend
    select = list(SUITES[suite])
    # -v: each test's verdict reaches the log as it happens, so a VM that dies mid-cell (a
    # guest kernel oops in text patching under TCG was seen) still says what ran
    argv = [sys.executable, "-m", "pytest", *select, str(ROOT / "tests" / "kernel"),
            "-p", "no:cacheprovider", f"--junitxml={xml}", "-v", "--tb=short", "--durations=5",
            *pytest_args]
    say(f"{backend}: {'VIGIL_TEST_BACKEND=' + backend + ' ' if backend != AUTO else ''}"
        f"pytest {' '.join([*select, 'tests/kernel'])} ({state})")
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, cwd=ROOT, env=env, timeout=timeout, check=False)
        rc: int | None = p.returncode
    except subprocess.TimeoutExpired:
        rc = None
    secs = time.monotonic() - t0
    counts = junit_counts(xml)
    status, why = verdict(rc, counts, timeout)
    cell = Cell(kernel, backend, status, reason=why, chosen=chosen if backend == AUTO else "",
                seconds=round(secs, 1), btf=btf, btf_used=btf_used, suite=suite)
    if counts is not None:
        cell.tests, cell.failed, cell.skipped = counts.tests, counts.failed, counts.skipped
        cell.failures, cell.skips = counts.failures, counts.skips
    say(f"{backend}: {cell.text()} in {secs:.0f}s")
    for skip in cell.skips:
        say(f"{backend}: skipped {skip}")
    return cell


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="this kernel's results directory")
    ap.add_argument("--kernel", required=True, help="the series name, for the cells")
    ap.add_argument("--backend", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=900, help="seconds per backend")
    ap.add_argument("--suite", choices=list(SUITES), default="matrix",
                    help="matrix: pytest -m matrix tests/kernel; kernel: all of tests/kernel")
    ap.add_argument("--isolation-probe", type=Path,
                    help="a file to create in /etc; the host checks it never sees it")
    ap.add_argument("--btf-archive", type=Path,
                    help="a tailored-BTF archive to run on, the kernel's own BTF hidden")
    ap.add_argument("--btf-key", help="the archive entry that must be used (ID/VERSION/arch/R)")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    a = ap.parse_args(argv)
    out: Path = a.out
    backends = expand(a.backend or [AUTO])
    if bool(a.btf_archive) != bool(a.btf_key):
        ap.error("--btf-archive and --btf-key go together")
    btf = TAILORED_BTF if a.btf_archive else KERNEL_BTF
    btf_used = ""
    say(f"kernel {os.uname().release}, backends {', '.join(backends)}, {btf} BTF")
    try:
        if a.isolation_probe:
            # fails (read-only) or leaks to the host if the guest's /etc is not an overlay
            a.isolation_probe.write_text("written by the matrix guest\n")
        scratch_fs()
        writable_accounts()
        if a.btf_archive:
            btf_used = use_tailored_btf(a.btf_archive, a.btf_key, out)
        report = doctor(out)
        if a.btf_archive and f"key {a.btf_key}" not in str(report.get("btf_in_use")):
            # its backend choice (auto's, and which backends count as unsupported) would be
            # for another BTF than the agents use
            raise RuntimeError(f"vigil doctor planned on {report.get('btf_in_use')!r}, not the "
                               f"tailored BTF {a.btf_key}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        say(f"setup failed: {e}")
        for b in backends:
            Cell(a.kernel, b, "error", reason=str(e)[:300], btf=btf,
                 btf_used=btf_used, suite=a.suite).save(cell_file(out.parent, a.kernel, b, btf))
        return 1
    for b in backends:
        cell = run_cell(a.kernel, b, report, out, a.timeout, a.pytest_args, btf, btf_used,
                        a.suite)
        cell.save(cell_file(out.parent, a.kernel, b, btf))
    (out / "dmesg.txt").write_text(run(["dmesg"], capture_output=True).stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
