"""Benchmark: how soon `vigil run` reports its first event, and how much memory the agent holds.

What it measures. Each run starts `.venv/bin/vigil run --config CFG -o json` with stdout to a
file. CFG is the embedded default configuration (vigil/data/default.yaml: rules, exec events,
network, shell, FIM, health check, metrics all on) with four changes only: its directories
missing on this machine left out (the embedded default skips them itself), a temporary
directory added to the watched directories, the baseline and state under a temporary directory
(no other run's baseline reused), and the metrics endpoint on a free loopback port (several
benches run at once on this machine). From the moment of exec the bench creates a new file in
the watched directory every ~2 ms and polls the output file for the first line whose
`file.path` is in that directory.

Columns. `first event s`: from just before exec to that line appearing in the output (what a
user waiting for the agent sees). `first seen s`: from exec to the creation of the earliest file
the agent reported (when the kernel side started capturing; what came later is the agent's
user-space start and its first batch). `any line s`: exec to the first output line of any kind
(an exec, a network event...). `agent cpu s`: the agent's CPU time (user + system, all
threads, the kernel's verifier included) when its first event was seen: on a busy machine,
less noisy than the wall clock. `rss MB` / `hwm MB`: the agent's VmRSS and VmHWM
(/proc/PID/status) right after the first event, then `settled` one second later (the startup
FIM scan and the health check running), then after a burst of 100,000 file events (created,
modified, deleted for each of 33,334 files, written by a child Python) once the output stopped
growing for 5 s. A first, cold run (new state directory: no cached rule files) is shown
apart; the others share one state directory, as starts on one host do. min and median over
the runs; nothing is asserted.

    .venv/bin/python bench/startup.py [--runs 5] [--vigil PATH] [--no-burst]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VIGIL = ROOT / ".venv" / "bin" / "vigil"
BURST_FILES = 33_334  # x3 events (created, modified, deleted) = 100,002

BURST = """\
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
flags = os.O_CREAT | os.O_WRONLY
for i in range(n):
    p = f"{d}/b{i}"
    os.close(os.open(p, flags, 0o644))
    os.unlink(p)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(scratch: Path, watched: Path, state: Path | None = None) -> Path:
    """The default configuration, ``watched`` added, the baseline in ``scratch`` and the
    state directory ``state`` (default: in ``scratch``)."""
    cfg = yaml.safe_load((ROOT / "vigil" / "data" / "default.yaml").read_text())
    cfg["database"] = str(scratch / "baseline.db")
    cfg["state_dir"] = str(state or scratch / "state")
    cfg["metrics"]["port"] = free_port()
    # the embedded default skips its directories missing here (/root/.ssh...); a file may not
    cfg["directories"] = [d for d in cfg["directories"] if os.path.exists(d["path"])]
    cfg["directories"].append({"path": str(watched)})
    path = scratch / "vigil.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of ``pid`` in MB."""
    vals: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                vals[key] = int(rest.split()[0]) / 1024
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)


@dataclass
class Run:
    first_event: float = float("nan")
    first_seen: float = float("nan")
    any_line: float = float("nan")
    cpu_first: float = float("nan")
    mem_first: tuple[float, float] = (0.0, 0.0)
    mem_settled: tuple[float, float] = (0.0, 0.0)
    mem_burst: tuple[float, float] = (0.0, 0.0)
    burst_lines: int = 0
    summary: str = ""
    notes: list[str] = field(default_factory=list)


class Tail:
    """New complete lines of a growing file."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._rest = b""
        self.lines = 0

    def read(self) -> list[bytes]:
        data = self._rest + self._f.read()
        *lines, self._rest = data.split(b"\n")
        self.lines += len(lines)
        return lines

    def settle(self, quiet_s: float, poll_s: float) -> None:
        """Reads until no new line has come for ``quiet_s`` seconds."""
        last, still = self.lines, time.monotonic()
        while time.monotonic() - still < quiet_s:
            time.sleep(poll_s)
            self.read()
            if self.lines != last:
                last, still = self.lines, time.monotonic()

    def close(self) -> None:
        self._f.close()


def stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to a running agent, SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_run(vigil: Path, burst: bool, timeout: float, state: Path) -> Run:
    scratch = Path(tempfile.mkdtemp(prefix="vigil-startup-", dir="/var/tmp")).resolve()
    watched = scratch / "w"
    watched.mkdir()
    cfg = write_config(scratch, watched, state)
    out_path = scratch / "out.json"
    out = open(out_path, "wb")  # noqa: SIM115
    err = open(scratch / "err.txt", "wb")  # noqa: SIM115
    run = Run()
    prefix = str(watched) + "/"
    created: dict[str, float] = {}
    t0 = time.monotonic()
    proc = subprocess.Popen([str(vigil), "run", "--config", str(cfg), "-o", "json"],
                            stdout=out, stderr=err, cwd="/")
    tail = Tail(out_path)
    try:
        i = 0
        while time.monotonic() - t0 < timeout and run.first_event != run.first_event:
            name = f"{prefix}s{i}"
            created[name] = time.monotonic() - t0
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))
            i += 1
            for line in tail.read():
                now = time.monotonic() - t0
                if run.any_line != run.any_line:
                    run.any_line = now
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                path = ev.get("file", {}).get("path", "")
                if isinstance(path, str) and path.startswith(prefix):
                    run.first_event = now
                    run.cpu_first = cpu(proc.pid)
                    run.first_seen = created.get(path, float("nan"))
                    break
            if proc.poll() is not None:
                run.notes.append(f"agent exited {proc.returncode}")
                break
            time.sleep(0.002)
        if run.first_event == run.first_event:
            # the earliest creation reported among those the first batch carried
            time.sleep(0.3)
            for line in tail.read():
                try:
                    path = json.loads(line).get("file", {}).get("path", "")
                except ValueError:
                    continue
                if path in created:
                    run.first_seen = min(run.first_seen, created[path])
            run.mem_first = mem(proc.pid)
            time.sleep(1.0)
            run.mem_settled = mem(proc.pid)
            if burst:
                before = tail.lines
                subprocess.run([sys.executable, "-c", BURST, str(watched), str(BURST_FILES)],
                               check=True)
                tail.settle(5.0, 0.2)
                run.burst_lines = tail.lines - before
                run.mem_burst = mem(proc.pid)
    finally:
        stop(proc, 60)
        tail.close()
        out.close()
        err.close()
        lines = (scratch / "err.txt").read_text(errors="replace").splitlines()
        run.summary = next((ln for ln in lines if " events delivered " in ln), "")
        if not run.summary:
            run.notes.append("no summary: " + " | ".join(lines[-5:]))
        shutil.rmtree(scratch, ignore_errors=True)
    return run


def stat(values: list[float]) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return "    -         -"
    return f"{min(vals):8.3f}  {statistics.median(vals):8.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--vigil", type=Path, default=VIGIL, help="the vigil executable to time")
    ap.add_argument("--no-burst", action="store_true", help="skip the 100k-event burst")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/startup.py needs root (vigil run loads eBPF programs)", file=sys.stderr)
        return 2
    runs = []
    # one state directory for all runs (a host's /var/lib/vigil: caches kept between starts);
    # a new baseline each run
    state = Path(tempfile.mkdtemp(prefix="vigil-startup-state-", dir="/var/tmp"))
    try:
        for n in range(args.runs + 1):
            r = one_run(args.vigil, not args.no_burst, args.timeout, state)
            if n == 0:
                print(f"cold start (new state directory, not counted): first event "
                      f"{r.first_event:.3f}s", flush=True)
                continue
            runs.append(r)
            report(n, r, args.no_burst)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    summarise(args, runs)
    return 0


def report(n: int, r: Run, no_burst: bool) -> None:
    print(f"run {n}: first event {r.first_event:.3f}s (captured from "
          f"{r.first_seen:.3f}s, any line {r.any_line:.3f}s); rss/hwm MB first "
          f"{r.mem_first[0]:.1f}/{r.mem_first[1]:.1f}, settled {r.mem_settled[0]:.1f}/"
          f"{r.mem_settled[1]:.1f}" + (f", after burst {r.mem_burst[0]:.1f}/"
                                       f"{r.mem_burst[1]:.1f} ({r.burst_lines} lines)"
                                       if not no_burst else "")
          + (f" [{'; '.join(r.notes)}]" if r.notes else ""), flush=True)


def summarise(args: argparse.Namespace, runs: list[Run]) -> None:
    print(f"\n{args.vigil}, {args.runs} runs       min       median")
    print(f"first event s      {stat([r.first_event for r in runs])}")
    print(f"first seen s       {stat([r.first_seen for r in runs])}")
    print(f"any line s         {stat([r.any_line for r in runs])}")
    print(f"agent cpu s        {stat([r.cpu_first for r in runs])}")
    for label, key in (("first", "mem_first"), ("settled", "mem_settled"),
                       ("burst", "mem_burst")):
        if label == "burst" and args.no_burst:
            continue
        print(f"rss MB {label:<10} {stat([getattr(r, key)[0] for r in runs])}")
        print(f"hwm MB {label:<10} {stat([getattr(r, key)[1] for r in runs])}")
    print(f"last summary: {runs[-1].summary}")


if __name__ == "__main__":
    sys.exit(main())
