"""Benchmark: what each VFS backend (lsm, fentry, kprobe, tracepoint) costs the overhead
workload, measured inside the VM matrix's Debian 6.12 guest in one boot.

The host's kernel here cannot load lsm or fentry programs and has no kprobes (../shared/
KERNEL.md), so the backends are compared in a guest: the matrix's 6.12 kernel (tests/vm/
kernels.py, cached under /var/cache/vigil-kernels; downloaded once if missing) booted once
under QEMU (software emulation, 2 vCPUs, 2 GiB) with virtme-ng, as ``./do test-kernels`` boots
it (tests/vm/matrix.py): the host's filesystem is the guest's root, read-only with tmpfs
overlays, so the checkout and its virtualenv are used as they are. Inside, bench/overhead.py
runs with ``--backend lsm,fentry,kprobe,tracepoint``: for each round, every backend's
``elsewhere`` and ``watched`` agent runs and a ``none`` run per backend, all in one rotation
(round-robin), in a scratch directory on the guest's tmpfs /run (not /tmp: the built-in
rules watch it). Its per-run numbers come back as JSON through a directory shared read-write
with the guest (build/vm-overhead/).

How to read it. Under emulation the absolute times mean little; the ratios in one run do.
``elsewhere x`` / ``watched x``: the workload's wall time with that backend's agent watching
another directory / the workload's, divided by the ``none`` time (every backend's ``none`` runs
pooled, as they are the same thing): min/min and median/median. ``cpu%``: the watched agent's
CPU while the workload ran, as a share of one core (median). ``account``: overhead.py's
verdict for the watched runs' events (``exact``: every event delivered or counted lost).
overhead.py's own tables (per kind) are in the guest log, printed as it runs. Nothing is
asserted; a VM that fails to boot or a run that fails exits 1 with the log's tail. The VM is
stopped (its whole process group) on every way out.

    .venv/bin/python bench/vm_overhead.py [--iterations 3000] [--runs 3] [--fim]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
BACKENDS = ("lsm", "fentry", "kprobe", "tracepoint")
SERIES = "6.12"

sys.path.insert(0, str(ROOT / "tests" / "vm"))
from kernels import Kernel, KernelError, prepare  # noqa: E402
from matrix import follow  # noqa: E402  (the matrix's: the guest's log as it grows)


def vng_argv(k: Kernel, out: Path, guest_cmd: list[str]) -> list[str]:
    script = (f"cd {shlex.quote(str(ROOT))} && exec {shlex.join(guest_cmd)} "
              f">{shlex.quote(str(out / 'guest.log'))} 2>&1")
    return [str(VENV_BIN / "vng"), "--verbose", "--name", "vigil-vm-overhead",
            "--run", str(k.boot_image), "--disable-kvm", "--cpus", "2", "--memory", "2G",
            "--overlay-rwdir", "/etc", "--rwdir", str(out), "--", script]


def stop_group(p: subprocess.Popen[bytes]) -> None:
    """SIGTERM then SIGKILL to the VM's process group (vng, qemu), until none is left."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            p.poll()
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def boot(k: Kernel, out: Path, guest_cmd: list[str], limit: float) -> int | None:
    """One VM running ``guest_cmd``; its exit status (None: stopped at ``limit`` seconds)."""
    argv = vng_argv(k, out, guest_cmd)
    (out / "vng.argv").write_text(shlex.join(argv) + "\n")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    print(f"vm_overhead: booting {k.release} ({k.package} {k.version}), limit {limit:.0f}s",
          flush=True)
    t0, pos, rc = time.monotonic(), 0, None
    with (out / "vng.log").open("wb") as vlog:
        p = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=vlog,
                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while p.poll() is None and time.monotonic() - t0 < limit:
                pos = follow(out / "guest.log", pos, "guest")
                time.sleep(1)
            rc = p.returncode
        finally:
            stop_group(p)   # a timeout, Ctrl-C or SIGTERM: no qemu left behind
            p.wait()
    follow(out / "guest.log", pos, "guest")
    print(f"vm_overhead: VM ran {time.monotonic() - t0:.0f}s", flush=True)
    return rc


_ROUND_RE = re.compile(r"^\s*round \d+ (\S+)\s+([\d.]+)s(?:  events (\d+) \{[^}]*\}, (.*?), "
                       r"agent cpu .*?, (\d+)%\))?")


def runs_from_log(log: Path) -> list[dict[str, Any]]:
    """The runs overhead.py finished, from its progress lines: for a VM stopped before the
    end (no JSON), so the rounds done still give ratios."""
    runs = []
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        m = _ROUND_RE.match(line.removeprefix("[guest] "))
        if m is None:
            continue
        mode, _, backend = m.group(1).partition("/")
        run: dict[str, Any] = {"mode": mode, "backend": backend, "seconds": float(m.group(2))}
        if m.group(3) is not None:
            run["workload_share"] = float(m.group(5))
            # (kind, expected, delivered, dropped, verdict) as in the JSON; only these two known
            run["verdicts"] = [("all", -1, int(m.group(3)), -1, m.group(4).removeprefix("r1: "))]
        runs.append(run)
    return runs


def ratios(runs: list[dict[str, Any]], base: list[float]) -> str:
    secs = [r["seconds"] for r in runs]
    if not secs:
        return f"{'-':>6} {'-':>6}"
    return (f"{min(secs) / min(base):>6.2f} "
            f"{statistics.median(secs) / statistics.median(base):>6.2f}")


def table(data: dict[str, Any], backends: list[str]) -> None:
    runs = data["runs"]
    base = [r["seconds"] for r in runs if r["mode"] == "none"]
    print(f"{data['machine']} (guest)")
    print(f"none: {len(base)} runs, min {min(base):.3f}s, median "
          f"{statistics.median(base):.3f}s, {data['iterations']} iterations")
    header = (f"{'backend':<11} {'elsewhere x':>13} {'watched x':>13} {'cpu%':>5} "
              f"{'delivered':>11}  account (elsewhere; watched)")
    print(f"{'':<11} {'min':>6} {'med':>6} {'min':>6} {'med':>6}")
    print(header)
    print("-" * len(header))
    for b in backends:
        mine = [r for r in runs if r["backend"] == b]
        els = [r for r in mine if r["mode"] == "elsewhere"]
        wat = [r for r in mine if r["mode"] == "watched"]
        share = (f"{statistics.median(r['workload_share'] for r in wat):.0f}%" if wat else "-")
        total = [r["verdicts"][-1] for r in wat]   # (kind, expected, delivered, dropped, v)
        delivered = ("-" if not total else f"{sum(t[2] for t in total)}"
                     + (f"/{sum(t[1] for t in total)}" if all(t[1] >= 0 for t in total) else ""))

        def verdict(rs: list[dict[str, Any]]) -> str:
            vs = [f"r{i + 1}: {r['verdicts'][-1][4]}" for i, r in enumerate(rs)
                  if r["verdicts"][-1][4] != "exact"]
            return "; ".join(vs) or ("exact" if rs else "-")

        print(f"{b:<11} {ratios(els, base)} {ratios(wat, base)} {share:>5} {delivered:>11}  "
              f"{verdict(els)}; {verdict(wat)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3000,
                    help="workload iterations per run (default 3000: emulation is slow)")
    ap.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--backend", default=",".join(BACKENDS),
                    help=f"comma-separated backends (default {','.join(BACKENDS)})")
    ap.add_argument("--fim", action="store_true",
                    help="keep FIM on in the agents (default: --no-fim, raw file events)")
    ap.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                    help="more `vigil run` arguments for every agent (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "vm-overhead",
                    help="directory shared with the guest: logs and overhead.json")
    ap.add_argument("--timeout", type=float, default=5400, help="seconds for the whole VM")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # unwinds: the VM is stopped
    if os.geteuid() != 0:
        print("vm_overhead.py: must run as root (kernel modules, eBPF in the guest)",
              file=sys.stderr)
        return 2
    if not (VENV_BIN / "vng").exists():
        print(f"vm_overhead.py: {VENV_BIN / 'vng'} missing: run ./do test-kernels once "
              "(it installs virtme-ng and QEMU)", file=sys.stderr)
        return 2
    backends = [b for b in a.backend.split(",") if b]
    if set(backends) - set(BACKENDS):
        print(f"vm_overhead.py: unknown backend(s) "
              f"{', '.join(sorted(set(backends) - set(BACKENDS)))}", file=sys.stderr)
        return 2
    try:
        k = prepare(SERIES)
    except (KernelError, OSError, subprocess.CalledProcessError) as e:
        print(f"vm_overhead.py: the {SERIES} kernel is not available: {e}", file=sys.stderr)
        return 2
    out: Path = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = out / "overhead.json"
    for f in (result, out / "guest.log"):
        f.unlink(missing_ok=True)
    agent_args = ([] if a.fim else ["--no-fim"]) + a.agent_arg
    guest_cmd = [str(VENV_BIN / "python"), str(ROOT / "bench" / "overhead.py"),
                 "--iterations", str(a.iterations), "--runs", str(a.runs),
                 "--modes", "elsewhere,watched", "--backend", ",".join(backends),
                 "--dir", "/run", "--json", str(result), "--time-scale", "5",
                 *(f"--agent-arg={x}" for x in agent_args)]
    try:
        rc = boot(k, out, guest_cmd, a.timeout)
    finally:   # stopped early too (Ctrl-C, SIGTERM, the limit): the rounds done, from the log
        data = json.loads(result.read_text()) if result.exists() else None
        if data is None:
            data = {"machine": "partial: the runs the guest log shows finished",
                    "iterations": a.iterations, "runs": runs_from_log(out / "guest.log")}
        print()
        print(f"Backends in one {k.release} guest (QEMU TCG, 2 vCPUs), {a.runs} rounds, "
              f"agents with {' '.join(agent_args) or 'defaults'}:")
        if any(r["mode"] == "none" for r in data["runs"]):
            table(data, backends)
    if not result.exists():
        print(f"vm_overhead.py: no results file (VM exit status {rc}); see {out}/guest.log "
              f"and {out}/vng.log", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
