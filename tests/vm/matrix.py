"""The kernel x backend test matrix: ``./do test-kernels`` (run as root on the host).

Owns the command line, booting one virtme-ng VM per kernel (QEMU, software emulation), following
the guest's log live, collecting the cells the guest wrote, the check that the host's account
files are unchanged afterwards, and the summary (terminal table and Markdown file). Exit status:
0 when every cell passed or is unsupported, 1 when any failed, 2 when the run itself could not
be done.

With ``--suite kernel`` each cell runs all of tests/kernel instead of the ``matrix`` subset
(the FIM agent, bursts, perf buffer, tailored-BTF, probe and loader tests too), each agent on
the cell's backend; a cell whose tests all skipped fails (cells.verdict).

With ``--btf tailored`` each kernel's VM runs on a tailored BTF instead of the kernel's own
(issue 5): the archive is made here from the kernel's cached package (tailored.py), the guest
hides /sys/kernel/btf/vmlinux from Vigil and checks the tailored BTF is the one used (guest.py);
those cells are columns of their own, "auto (tailored BTF)". ``--btf kernel --btf tailored`` boots
each kernel twice and puts both in one table.

Before each kernel boots, the test kernel module is built for it (kmod_build.py) into
build/kmod/<release>/, which the guest sees at the same path.

Does not own getting the kernels (kernels.py), what runs inside a VM (guest.py), making the
tailored BTF (tailored.py), building the test module (kmod_build.py) nor what a cell means
(cells.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import kmod_build
import tailored
from cells import (
    AUTO,
    BTF_MODES,
    KERNEL_BTF,
    SUITES,
    TAILORED_BTF,
    Cell,
    cell_file,
    column,
    expand,
    markdown,
    run_dir,
)
from kernels import SERIES, Kernel, KernelError, prepare

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
GUEST = Path(__file__).resolve().with_name("guest.py")
# The tests add a user in the guest (useradd writes /etc): the guest sees /etc through an
# overlay in its own memory. It creates this file there; the host must not see it afterwards.
# (Comparing /etc/passwd before and after would race with test runs on the host itself.)
ISOLATION_PROBE = "/etc/.vigil-matrix-isolation-{pid}-{series}"
BOOT_SECONDS = 300  # boot, scratch filesystem and doctor, on top of the per-backend timeout


def say(msg: str) -> None:
    print(f"matrix: {msg}", file=sys.stderr, flush=True)


def probe_path(series: str) -> str:
    return ISOLATION_PROBE.format(pid=os.getpid(), series=series)


def vng_command(k: Kernel, out: Path, backends: list[str], timeout: float,
                append: list[str], pytest_args: list[str],
                btf: tailored.TailoredBtf | None = None, suite: str = "matrix") -> list[str]:
    run = run_dir(k.series, TAILORED_BTF if btf else KERNEL_BTF)
    guest = [str(VENV_BIN / "python"), str(GUEST), "--out", str(out), "--kernel", k.series,
             "--timeout", str(timeout), "--isolation-probe", probe_path(run), "--suite", suite]
    for b in backends:
        guest += ["--backend", b]
    if btf is not None:
        guest += ["--btf-archive", str(btf.archive), "--btf-key", btf.key]
    guest += ["--", *pytest_args]
    script = f"exec {shlex.join(guest)} >{shlex.quote(str(out / 'guest.log'))} 2>&1"
    argv = [str(VENV_BIN / "vng"), "--verbose", "--name", f"vigil-{run}",
            "--run", str(k.boot_image), "--disable-kvm", "--cpus", "2", "--memory", "2G",
            # read-only root; writes to /etc stay in guest memory (also vng's default: be sure)
            "--overlay-rwdir", "/etc", "--rwdir", str(out)]
    for a in append:
        argv += ["--append", a]
    return [*argv, "--", script]


def follow(log: Path, pos: int, prefix: str) -> int:
    """Print what the guest added to its log since ``pos``; the new position."""
    try:
        with log.open("rb") as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return pos
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode(errors="replace").splitlines():
        print(f"[{prefix}] {line}", file=sys.stderr, flush=True)
    return pos + end


def boot(k: Kernel, results: Path, backends: list[str], timeout: float, append: list[str],
         pytest_args: list[str], btf: tailored.TailoredBtf | None = None,
         suite: str = "matrix") -> dict[str, float]:
    """One VM for kernel ``k``: the guest writes its cells under ``results/<series>`` (or
    ``results/<series>-tailored-btf`` when it runs on the tailored BTF ``btf``)."""
    label = run_dir(k.series, TAILORED_BTF if btf else KERNEL_BTF)
    out = results / label
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = vng_command(k, out, backends, timeout, append, pytest_args, btf, suite)
    (out / "vng.argv").write_text(shlex.join(argv) + "\n")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    limit = BOOT_SECONDS + timeout * len(backends)
    say(f"booting {k.release} ({k.package} {k.version}), limit {limit:.0f}s")
    t0 = time.monotonic()
    first = None
    pos = 0
    with (out / "vng.log").open("wb") as vlog:
        p = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=vlog,
                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while p.poll() is None:
                if time.monotonic() - t0 > limit:
                    say(f"{label}: no end after {limit:.0f}s: stopping the VM")
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(20)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
                    break
                pos = follow(out / "guest.log", pos, label)
                if first is None and pos:
                    first = time.monotonic() - t0
                time.sleep(1)
        finally:
            if p.poll() is None:  # interrupted: leave no VM behind
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    follow(out / "guest.log", pos, label)
    total = time.monotonic() - t0
    timing = {"boot_to_guest_s": round(first or 0.0, 1), "vm_total_s": round(total, 1)}
    say(f"{label}: VM ran {total:.0f}s (guest script started after {first or 0:.0f}s)")
    return timing


def collect(series: str, release: str, results: Path, backends: list[str],
            why_missing: str, btf: str = KERNEL_BTF,
            suite: str = "matrix") -> dict[tuple[str, str], Cell]:
    """The cells the guest wrote, keyed by (series, column)."""
    cells = {}
    for b in backends:
        f = cell_file(results, series, b, btf)
        try:
            cell = Cell.load(f)
        except (OSError, ValueError, TypeError):
            cell = Cell(series, b, "error", reason=why_missing, btf=btf, suite=suite)
        cells[(series, column(b, btf))] = cell
    return cells


def btf_notes(cells: dict[tuple[str, str], Cell],
              made: dict[str, tailored.TailoredBtf]) -> list[str]:
    """For the report: how each tailored BTF was made and what the guest used."""
    lines = []
    for series, t in made.items():
        lines.append(f"- {series}: tailored BTF {t.key} made from `{t.source}` "
                     f"({t.source_bytes / 1e6:.1f} MB kernel BTF -> {t.tailored_bytes / 1e3:.1f} "
                     f"KB) by `vigil btf extract` + `vigil btf gen`")
    for (series, col), c in cells.items():
        if c.btf != KERNEL_BTF:
            chose = f", backend {c.chosen}" if c.chosen else ""
            lines.append(f"- {series} / {col}: {c.btf_used or 'BTF in use unknown'}{chose}")
    return lines


def report(kernels: list[tuple[str, str]], columns: list[str],
           cells: dict[tuple[str, str], Cell], timings: dict[str, dict[str, float]],
           argv: list[str], made: dict[str, tailored.TailoredBtf] | None = None) -> str:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "vigil", "bpf",
                            "tests"], capture_output=True, text=True, check=False).stdout.strip()
    lines = [
        "# Vigil kernel matrix",
        "",
        f"`./do test-kernels {shlex.join(argv)}` at {commit or '?'}"
        f"{' (with local changes)' if dirty else ''}, "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. "
        "`auto` is the agent's own choice, shown in brackets. Each cell ran "
        + ", ".join(sorted({f"`pytest {' '.join([*SUITES[c.suite], 'tests/kernel'])}`"
                            for c in cells.values() if c.suite in SUITES}) or ["nothing"])
        + " with the cell's backend."
        + (" Columns marked (tailored BTF): the kernel's /sys/kernel/btf/vmlinux hidden from "
           "Vigil, which runs on a tailored BTF made from the kernel's package."
           if any(c.btf != KERNEL_BTF for c in cells.values()) else ""),
        "",
        markdown(kernels, columns, cells),
    ]
    notes = btf_notes(cells, made or {})
    if notes:
        lines += ["BTF of the tailored cells:", "", *notes, ""]
    if timings:
        lines.append("| kernel | boot to guest script | whole VM |")
        lines.append("| --- | --- | --- |")
        for s, t in timings.items():
            lines.append(f"| {s} | {t['boot_to_guest_s']:.0f} s | {t['vm_total_s']:.0f} s |")
        lines.append("")
    failing = [c for c in cells.values() if c.failures]
    if failing:
        lines.append("Failed tests:")
        lines.append("")
        for c in failing:
            for test in c.failures:
                lines.append(f"- {c.kernel} / {c.column}: `{test}`")
        lines.append("")
    skipping = [c for c in cells.values() if c.skips]
    if skipping:
        lines.append("Skipped tests, with the reason each gave:")
        lines.append("")
        for c in skipping:
            for skip in c.skips:
                test, _, why = skip.partition(": ")
                lines.append(f"- {c.kernel} / {c.column}: `{test}`: {why}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="./do test-kernels",
        description="Boot Debian kernels under QEMU (virtme-ng) and run the tests marked "
                    "`matrix` (or all of tests/kernel: --suite kernel) once per backend.")
    ap.add_argument("--kernel", action="append", default=[], choices=list(SERIES),
                    help="kernel series (repeatable; default: all)")
    ap.add_argument("--backend", action="append", default=[],
                    help="auto (the agent's choice), all, or a backend name (repeatable; "
                         "default: auto)")
    ap.add_argument("--btf", action="append", default=[], choices=BTF_MODES,
                    help="kernel: the kernel's own BTF (default); tailored: hide it from Vigil "
                         "and run on a tailored BTF made here from the kernel's package with "
                         "`vigil btf extract` and `vigil btf gen` (the LSM and fentry backends "
                         "need the kernel's own, so auto picks kprobe or tracepoint); both: "
                         "two VMs per kernel, one table (repeatable)")
    ap.add_argument("--results", type=Path, default=ROOT / "build" / "kernel-matrix",
                    help="per-kernel logs, doctor reports and JUnit XML")
    ap.add_argument("--report", type=Path,
                    help="the Markdown table (default: build/kernel-matrix.md; "
                         "build/kernel-matrix-tailored-btf.md with --btf tailored)")
    ap.add_argument("--suite", choices=list(SUITES), default="matrix",
                    help="matrix (default): the tests marked matrix; kernel: all of "
                         "tests/kernel (FIM agent, bursts, perf buffer, tailored BTF, ...) in "
                         "each cell, on the cell's backend")
    ap.add_argument("--timeout", type=float,
                    help="seconds per kernel x backend (default 900; 3600 with --suite kernel)")
    ap.add_argument("--append", action="append", default=[],
                    help="kernel command line argument, e.g. lsm=...,bpf (repeatable)")
    ap.add_argument("--refresh", action="store_true",
                    help="ask the archive for newer kernel packages than the cached ones")
    ap.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments (-k ...)")
    a = ap.parse_args(raw)
    timeout: float = a.timeout or (900.0 if a.suite == "matrix" else 3600.0)
    # SIGTERM (a CI time limit) unwinds like Ctrl-C, so no VM is left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        say("must run as root (modules go to /lib/modules, the guest runs eBPF as root)")
        return 2
    try:
        backends = expand(a.backend or [AUTO])
    except ValueError as e:
        say(str(e))
        return 2
    for tool in ("vng", "virtme-run"):
        if not (VENV_BIN / tool).exists():
            say(f"{VENV_BIN / tool} missing: run ./do test-kernels (it installs virtme-ng)")
            return 2
    modes = [m for m in BTF_MODES if m in (a.btf or [KERNEL_BTF])]
    if a.suite != "matrix" and TAILORED_BTF in modes:
        say("--suite kernel runs on the kernel's own BTF only: its tests compare that BTF with "
            "a tailored one themselves (test_tailored_btf.py) and probe the kernel's BTF")
        return 2
    report_path: Path = a.report or ROOT / "build" / (
        ("kernel-matrix" if modes == [KERNEL_BTF] else "kernel-matrix-tailored-btf")
        + ("" if a.suite == "matrix" else f"-{a.suite}-suite") + ".md")
    columns = [column(b, m) for m in modes for b in backends]
    series = a.kernel or list(SERIES)
    results: Path = a.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[str, str], Cell] = {}
    timings: dict[str, dict[str, float]] = {}
    kernels: list[tuple[str, str]] = []
    made: dict[str, tailored.TailoredBtf] = {}
    for s in series:
        t0 = time.monotonic()
        try:
            k = prepare(s, refresh=a.refresh)
        except (KernelError, OSError, subprocess.CalledProcessError) as e:
            say(f"{s}: {e}")
            kernels.append((s, ""))
            for m in modes:
                cells.update(collect(s, "", results, backends,
                                     f"kernel not available: {e}"[:300], m, a.suite))
            continue
        say(f"{s}: {k.release} ready in {time.monotonic() - t0:.1f}s")
        kernels.append((s, k.release))
        # The test module (tests/kmod) for this kernel; without it the tests that need it see
        # no module file (tests/kernel/kmod.py) and check what they can.
        t0 = time.monotonic()
        try:
            say(f"{s}: test module {kmod_build.build(k)} ({time.monotonic() - t0:.1f}s)")
        except kmod_build.KmodError as e:
            say(f"{s}: {e}")
        for m in modes:
            btf = None
            if m == TAILORED_BTF:
                t0 = time.monotonic()
                try:
                    btf = made[s] = tailored.make(k)
                except (tailored.TailoredError, OSError, ValueError) as e:
                    say(f"{s}: no tailored BTF: {e}")
                    shutil.rmtree(results / run_dir(s, m), ignore_errors=True)
                    cells.update(collect(s, k.release, results, backends,
                                         f"no tailored BTF: {e}"[:300], m, a.suite))
                    continue
                say(f"{s}: tailored BTF {btf.key} ({btf.tailored_bytes} bytes, from "
                    f"{btf.source}) in {btf.archive}, made in {time.monotonic() - t0:.1f}s")
            timings[run_dir(s, m)] = boot(k, results, backends, timeout, a.append,
                                          a.pytest_args, btf, a.suite)
            cells.update(collect(s, k.release, results, backends,
                                 f"the VM ended before this cell; see "
                                 f"{results / run_dir(s, m)}/guest.log, vng.log", m, a.suite))
    leaked = [p for s in series for m in modes
              if os.path.lexists(p := probe_path(run_dir(s, m)))]
    text = report(kernels, columns, cells, timings, raw, made)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(text)
    print(text)
    say(f"table written to {report_path}")
    if leaked:
        say(f"the guest's writes to /etc reached the host ({', '.join(leaked)}): "
            "it is not isolated; check the vng options")
        for p in leaked:
            os.unlink(p)
        return 2
    bad = [c for c in cells.values() if not c.ok]
    # one plain closing line, as test runners end: tests over all cells (a cell that broke
    # before its tests counts as one failure)
    failed = sum(c.failed or (0 if c.ok else 1) for c in cells.values())
    skipped = sum(c.skipped for c in cells.values())
    passed = sum(c.tests - c.failed - c.skipped for c in cells.values())
    print(f"matrix: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
