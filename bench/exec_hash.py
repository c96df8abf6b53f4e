"""Benchmark: what process.hash.sha256 of every exec (vigil.enrich.exehash) costs the agent on
an exec-heavy workload.

What it measures. A shell loop (`sh -c`, Debian's dash) runs /bin/true N times; each one is an
exec and an exit event. These runs, interleaved round-robin for R rounds (the first one
rotates each round) so that drift on a shared, noisy machine hits every mode alike:

  none      no agent
  hash-off  the agent with `exec_hash: {enabled: false}`
  hash-on   the agent as shipped (exec hashing on, its default budget)
  pair      both agents at once on the same workload (rows "pair hash-off", "pair hash-on"):
            whatever else loads the machine meanwhile hits both alike, so their CPU ratio is
            the steadier one on a shared machine

The agent otherwise runs its defaults (built-in rules on, FIM on) watching one scratch
directory, ECS JSON written to a file. Before each agent run the bench waits until the agent
reports a sentinel file; after the workload it waits until every /bin/true exec is in the
output (or the count stops growing for ten seconds), then stops the agent with SIGTERM.

How to read it. `wall`: the loop's wall time (min and median; x: ratio to `none` of the same
invocation). `agent cpu`: the agent's user+sys CPU seconds (/proc/PID/stat) from the
workload's start until every event was out (min and median; x: ratio to `hash-off`, or to
`pair hash-off` for `pair hash-on`; the issue's target is <= 1.10). `execs`: /bin/true exec
events in the output, worst run, of N; `hashed`: of those, how many carry
process.hash.sha256 (the others' reasons, summed). The last line gives the paired runs' CPU
ratio round by round and its median: the figure least moved by other load. Nothing is
asserted; the script exits 0 after printing.

    .venv/bin/python bench/exec_hash.py [--iterations 20000] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from overhead import cpu_seconds, machine

ROOT = Path(__file__).resolve().parents[1]
VIGIL = ROOT / ".venv" / "bin" / "vigil"
MODES = ("none", "hash-off", "hash-on")
PAIR = ("hash-off", "hash-on")   # both agents at once: any load on the machine hits both
TRUE = "/usr/bin/true"   # what /bin/true is on merged /usr, as the kernel names it
LOOP = 'i=0; while [ "$i" -lt "$1" ]; do /bin/true; i=$((i+1)); done'


@dataclass
class Run:
    mode: str
    seconds: float
    cpu: float = 0.0
    execs: int = 0
    hashed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def workload(n: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", LOOP, "sh", str(n)], check=True)
    return time.perf_counter() - t0


def config(base: Path, mode: str) -> Path:
    """The agent's config for ``mode``: a watched directory, baseline and state of its own
    (two agents run at once in the paired runs)."""
    path = base / f"vigil-{mode}.yaml"
    (base / f"w-{mode}").mkdir(exist_ok=True)
    path.write_text(json.dumps({   # JSON is YAML
        "directories": [{"path": str(base / f"w-{mode}")}],
        "database": str(base / f"baseline-{mode}.db"), "state_dir": str(base / f"state-{mode}"),
        "scan": {"interval": 0}, "exec_hash": {"enabled": mode.endswith("hash-on")}}))
    return path


def count(out: Path) -> tuple[int, int, Counter[str]]:
    """/bin/true execs in the output, how many with a hash, the others' skip reasons."""
    execs = hashed = 0
    skipped: Counter[str] = Counter()
    needle = f'"executable":"{TRUE}"'.encode()
    with open(out, "rb") as fh:
        for line in fh:
            if needle not in line or b'"action":"exec"' not in line:
                continue
            ev = json.loads(line)
            if ev.get("event", {}).get("kind") != "event":
                continue   # an alert
            execs += 1
            if ev["process"].get("hash", {}).get("sha256"):
                hashed += 1
            else:
                skipped[ev["vigil"]["process"].get("hash_skipped", "none")] += 1
    return execs, hashed, skipped


def wait_ready(agent: subprocess.Popen[bytes], out: Path, err: Path, watched: Path) -> None:
    deadline = time.monotonic() + 60
    k = 0
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited early with status {agent.returncode}: "
                               + err.read_text(errors="replace")[-2000:])
        sentinel = watched / f".bench-ready-{os.getpid()}-{k}"
        k += 1
        sentinel.touch()
        sentinel.unlink()
        t_end = time.monotonic() + 0.5
        while time.monotonic() < t_end:
            if str(sentinel).encode() in out.read_bytes():
                return
            time.sleep(0.05)
    raise RuntimeError("agent not ready after 60s")


def drain(out: Path, n: int) -> None:
    """Until n /bin/true execs are out, or the count stops growing for 10 s (reading only what
    was appended: the bench must not compete with the agent for the CPU)."""
    needle = f'"executable":"{TRUE}"'.encode()
    have, offset, partial = 0, 0, b""
    last_growth = time.monotonic()
    while time.monotonic() - last_growth < 10:
        with open(out, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        offset += len(chunk)
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        new = sum(1 for line in lines if needle in line and b'"action":"exec"' in line)
        if new:
            have, last_growth = have + new, time.monotonic()
        if have >= n:
            return
        time.sleep(0.2)


def agents_run(modes: list[str], base: Path, n: int) -> list[Run]:
    """One workload under the agents of ``modes``, all running at once."""
    agents = []
    try:
        for mode in modes:
            out, err = base / f"out-{mode}.jsonl", base / f"err-{mode}.txt"
            cmd = [str(VIGIL), "run", "--config", str(config(base, mode)), "-o", "json",
                   "--db", str(base / f"baseline-{mode}.db")]
            with open(out, "wb") as o, open(err, "wb") as e:
                agents.append((mode, out, subprocess.Popen(cmd, stdout=o, stderr=e,
                                                           stdin=subprocess.DEVNULL)))
            wait_ready(agents[-1][2], out, err, base / f"w-{mode}")
        cpu0 = [cpu_seconds(a.pid) for _, _, a in agents]
        seconds = workload(n)
        for _, out, _ in agents:
            drain(out, n)
        cpu = [cpu_seconds(a.pid) - c for (_, _, a), c in zip(agents, cpu0, strict=True)]
        for _, _, a in agents:
            a.send_signal(signal.SIGTERM)
            a.wait(timeout=120)
    finally:
        for _, _, a in agents:
            if a.poll() is None:
                a.kill()
                a.wait()
    runs = []
    for (mode, out, _), c in zip(agents, cpu, strict=True):
        execs, hashed, skipped = count(out)
        out.unlink()
        runs.append(Run(mode, seconds, c, execs, hashed, skipped))
    return runs


def table(results: dict[str, list[Run]], n: int) -> None:
    wall0 = [r.seconds for r in results["none"]]
    print(f"{'mode':<14} {'wall min':>9} {'wall med':>9} {'x min':>6} {'x med':>6} "
          f"{'cpu min':>8} {'cpu med':>8} {'x min':>6} {'x med':>6}  execs (worst)  hashed")
    for mode, runs in results.items():
        wall = [r.seconds for r in runs]
        line = (f"{mode:<14} {min(wall):>9.3f} {statistics.median(wall):>9.3f} "
                f"{min(wall) / min(wall0):>6.2f} "
                f"{statistics.median(wall) / statistics.median(wall0):>6.2f}")
        if mode != "none":
            cpu = [r.cpu for r in runs]
            cpu0 = [r.cpu for r in results[mode.replace("hash-on", "hash-off")]]
            skipped: Counter[str] = Counter()
            for r in runs:
                skipped.update(r.skipped)
            line += (f" {min(cpu):>8.2f} {statistics.median(cpu):>8.2f} "
                     f"{min(cpu) / min(cpu0):>6.2f} "
                     f"{statistics.median(cpu) / statistics.median(cpu0):>6.2f}  "
                     f"{min(r.execs for r in runs)}/{n}  "
                     f"{sum(r.hashed for r in runs)}/{sum(r.execs for r in runs)}"
                     + (f" (skipped: {dict(skipped)})" if mode.endswith("on") and skipped
                        else ""))
        print(line)
    pairs = [on.cpu / off.cpu for off, on in zip(results["pair hash-off"],
                                                  results["pair hash-on"], strict=True)]
    if pairs:
        print(f"pair hash-on / pair hash-off agent cpu, round by round: "
              f"{', '.join(f'{x:.2f}' for x in pairs)} (median {statistics.median(pairs):.2f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2000 execs, 2 rounds")
    args = ap.parse_args()
    if args.quick:
        args.iterations, args.runs = 2000, 2
    if os.geteuid() != 0 or not VIGIL.exists():
        print(f"exec_hash.py: run as root, with {VIGIL} installed (./do setup)", file=sys.stderr)
        return 2
    print(machine())
    print(f"workload: sh loop of {args.iterations} x /bin/true, {args.runs} rounds over "
          f"{', '.join(MODES)} and {PAIR}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="vigil-bench-exec-"))
    results: dict[str, list[Run]] = {m: [] for m in (*MODES, *(f"pair {m}" for m in PAIR))}
    try:
        for rnd in range(args.runs):
            steps = (*MODES, "pair")
            for step in steps[rnd % len(steps):] + steps[:rnd % len(steps)]:
                if step == "none":
                    runs = [Run("none", workload(args.iterations))]
                elif step == "pair":
                    runs = [Run(f"pair {r.mode}", r.seconds, r.cpu, r.execs, r.hashed,
                                r.skipped) for r in agents_run(list(PAIR), base,
                                                               args.iterations)]
                else:
                    runs = agents_run([step], base, args.iterations)
                for r in runs:
                    results[r.mode].append(r)
                    print(f"  round {rnd + 1} {r.mode:<14} wall {r.seconds:7.3f}s"
                          + (f"  agent cpu {r.cpu:6.2f}s  execs {r.execs} hashed {r.hashed} "
                             f"{dict(r.skipped) or ''}" if r.mode != "none" else ""),
                          flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    print(machine())
    table(results, args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
