"""What runs inside each VM of the kernel matrix: the doctor, then the matrix tests per backend.

Owns the guest's scratch filesystem (an ext4 image on a loop device in guest memory, mounted on
/var/tmp where the kernel tests make their area: virtme-ng gives the guest a tmpfs there, and
tmpfs before Linux 6.6 refuses user.* xattrs), running ``vigil doctor --json``, deciding each
requested backend from its report (cells.availability), running ``pytest -m matrix tests/kernel``
with ``VIGIL_TEST_BACKEND`` set (unset for auto), and writing doctor.json, one JUnit XML and one
cell JSON per backend into the results directory shared with the host.

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

from cells import AUTO, Cell, availability, cell_file, expand, junit_counts

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
        f"({backend.get('reason', '')}); rejected: {json.dumps(backend.get('rejected') or {})}")
    return report


def run_cell(kernel: str, backend: str, report: dict[str, Any], out: Path, timeout: float,
             pytest_args: list[str]) -> Cell:
    state, reason = availability(report, backend)
    chosen = str((report.get("backend") or {}).get("chosen") or "")
    if state == "unsupported":
        say(f"{backend}: unsupported ({reason})")
        return Cell(kernel, backend, "unsupported", reason=reason)
    xml = out / f"{backend}.xml"
    xml.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "VIGIL_TEST_BACKEND"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["VIGIL_TEST_START_TIMEOUT"] = str(max(300.0, timeout / 3))
    if backend != AUTO:
        env["VIGIL_TEST_BACKEND"] = backend
    argv = [sys.executable, "-m", "pytest", "-m", "matrix", str(ROOT / "tests" / "kernel"),
            "-p", "no:cacheprovider", f"--junitxml={xml}", "-q", "--tb=short", "--durations=5",
            *pytest_args]
    say(f"{backend}: {'VIGIL_TEST_BACKEND=' + backend + ' ' if backend != AUTO else ''}"
        f"pytest -m matrix tests/kernel ({state})")
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, cwd=ROOT, env=env, timeout=timeout, check=False)
        rc: int | None = p.returncode
    except subprocess.TimeoutExpired:
        rc = None
    secs = time.monotonic() - t0
    cell = Cell(kernel, backend, "fail", chosen=chosen if backend == AUTO else "",
                seconds=round(secs, 1))
    counts = junit_counts(xml)
    if counts is not None:
        cell.tests, cell.failed, cell.skipped = counts.tests, counts.failed, counts.skipped
        cell.failures = counts.failures
    if rc is None:
        cell.reason = f"timed out after {timeout:.0f}s"
    elif rc == 5 or (counts is not None and counts.tests == 0):
        cell.status, cell.reason = "error", "no test marked matrix ran"
    elif rc == 0 and counts is not None and counts.failed == 0:
        cell.status = "pass"
    elif counts is None:
        cell.reason = f"pytest exited {rc} without a report"
    elif counts.failed == 0:
        cell.tests, cell.reason = 0, f"pytest exited {rc}"
    say(f"{backend}: {cell.text()} in {secs:.0f}s")
    return cell


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="this kernel's results directory")
    ap.add_argument("--kernel", required=True, help="the series name, for the cells")
    ap.add_argument("--backend", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=900, help="seconds per backend")
    ap.add_argument("--isolation-probe", type=Path,
                    help="a file to create in /etc; the host checks it never sees it")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    a = ap.parse_args(argv)
    out: Path = a.out
    backends = expand(a.backend or [AUTO])
    say(f"kernel {os.uname().release}, backends {', '.join(backends)}")
    try:
        if a.isolation_probe:
            # fails (read-only) or leaks to the host if the guest's /etc is not an overlay
            a.isolation_probe.write_text("written by the matrix guest\n")
        scratch_fs()
        writable_accounts()
        report = doctor(out)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        say(f"setup failed: {e}")
        for b in backends:
            Cell(a.kernel, b, "error", reason=str(e)[:300]).save(cell_file(out.parent, a.kernel, b))
        return 1
    for b in backends:
        cell = run_cell(a.kernel, b, report, out, a.timeout, a.pytest_args)
        cell.save(cell_file(out.parent, a.kernel, b))
    (out / "dmesg.txt").write_text(run(["dmesg"], capture_output=True).stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
