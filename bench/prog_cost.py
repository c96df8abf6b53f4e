"""Benchmark: what each of Vigil's BPF programs costs per run, against a baseline set of objects.

What it measures. The kernel's own accounting (sysctl kernel.bpf_stats_enabled=1: run_time_ns
and run_cnt per program, read from the fdinfo of the agent's program descriptors) while the
running agent watches a directory in which a child does N iterations of create + write +
close + rename + unlink. Two
object sets take turns, R rounds each, in the same invocation: this checkout's objects and a
baseline (`--baseline DIR`, laid out like vigil/bpf_objects). For every program that ran, it
prints ns per run (min and median over rounds) for both, and the ratio. The agent is run from a
copy of the package whose bpf_objects is the set under test, so nothing in the checkout
changes.

With --elsewhere the agent watches a sibling directory instead: the workload's paths are
unwatched, and the numbers are what every process pays for the hooks. The directories are
made under /var/cache, not /tmp: the built-in rules have the kernel watch /tmp.

A baseline from another revision, e.g. before a change to bpf/:

    git worktree add /tmp/base REV && make -C /tmp/base/bpf ARCHS=x86_64 OBJDIR=/tmp/base-objs
    .venv/bin/python bench/prog_cost.py --baseline /tmp/base-objs [--backend tracepoint]

Root only. Prints numbers; never asserts. Per-run times include the kernel's accounting
overhead itself (a few tens of ns), the same for both sets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from objects import PYTHON, ROOT, agent_launch, package_with

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
WORKLOAD = """\
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    p = os.path.join(d, f"f{i}")
    with open(p, "w") as f:
        f.write("x" * 64)
    os.rename(p, p + ".r")
    os.unlink(p + ".r")
"""


def prog_stats(pid: int) -> dict[str, tuple[int, int]]:
    """{program name: (run_time_ns, run_cnt)} of the programs process ``pid`` holds (its
    bpf-prog file descriptors' fdinfo; names from bpftool)."""
    stats: dict[str, tuple[int, int]] = {}
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            info = dict(line.split(":", 1) for line in
                        (fds.parent / "fdinfo" / fd.name).read_text().splitlines() if ":" in line)
        except OSError:
            continue
        prog_id = info["prog_id"].strip()
        show = subprocess.run(["bpftool", "prog", "show", "id", prog_id, "-j"],
                              capture_output=True, text=True, check=True).stdout
        name = json.loads(show).get("name", prog_id)
        ns, cnt = int(info.get("run_time_ns", "0")), int(info.get("run_cnt", "0"))
        old = stats.get(name, (0, 0))
        stats[name] = (old[0] + ns, old[1] + cnt)
    return stats


def one_run(pkg: Path, watched: Path, iterations: int, backend: str,
            elsewhere: bool = False) -> dict[str, float]:
    """ns per run of each program while the workload runs in ``watched`` (with ``elsewhere``:
    in ``watched`` while the agent watches a sibling directory, the unwatched path)."""
    argv, env, cwd = agent_launch(pkg)
    target = watched.parent / (watched.name + "-other") if elsewhere else watched
    target.mkdir(exist_ok=True)
    cmd = [*argv, "-v", "run", "--watch", str(target), "--no-fim", "-o", "json",
           "--backend", backend, "--db", str(watched.parent / "bench.db")]
    agent = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert agent.stderr is not None
        said = []
        for line in agent.stderr:  # -v: it says so once its programs are attached
            said.append(line)
            if "vigil: watching" in line:
                break
        else:
            sys.exit(f"prog_cost: the agent ended before it watched: rc {agent.wait()}\n"
                     + "".join(said[-10:]))
        threading.Thread(target=agent.stderr.read, daemon=True).start()  # a full pipe blocks
        time.sleep(0.5)
        before = prog_stats(agent.pid)
        subprocess.run([str(PYTHON), "-c", WORKLOAD, str(watched), str(iterations)],
                       check=True)
        after = prog_stats(agent.pid)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    per_run: dict[str, float] = {}
    for name, (ns, cnt) in after.items():
        b_ns, b_cnt = before.get(name, (0, 0))
        if cnt > b_cnt:
            per_run[name] = (ns - b_ns) / (cnt - b_cnt)
    return per_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True,
                    help="a bpf_objects-like directory to compare with")
    ap.add_argument("--backend", default="tracepoint", help="vigil run --backend (default "
                    "tracepoint: the most programs)")
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--elsewhere", action="store_true",
                    help="the agent watches another directory: the unwatched path's cost")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("prog_cost: needs root")
    machine = platform.machine()
    if not (args.baseline / machine / "vigil.bpf.o").is_file():
        ap.error(f"--baseline {args.baseline}: no {machine}/vigil.bpf.o in it (build one: "
                 f"make -C <checkout>/bpf ARCHS={machine} OBJDIR={args.baseline})")
    was = STATS.read_text().strip()
    STATS.write_text("1")
    results: dict[str, dict[str, list[float]]] = {"this": {}, "baseline": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-prog-cost-", dir="/var/cache") as tmp:
            pkgs = {"this": package_with(ROOT / "vigil" / "bpf_objects", Path(tmp) / "this"),
                    "baseline": package_with(args.baseline, Path(tmp) / "baseline")}
            for r in range(args.runs):
                for which in (("this", "baseline") if r % 2 == 0 else ("baseline", "this")):
                    watched = Path(tmp) / f"w-{which}-{r}"
                    watched.mkdir()
                    got = one_run(pkgs[which], watched, args.iterations, args.backend,
                                  args.elsewhere)
                    for name, ns in got.items():
                        results[which].setdefault(name, []).append(ns)
    finally:
        STATS.write_text(was)
    names = sorted(set(results["this"]) & set(results["baseline"]),
                   key=lambda n: -statistics.median(results["this"][n]))
    where = "unwatched directory" if args.elsewhere else "watched directory"
    print(f"backend {args.backend}, {where}, {args.iterations} iterations x {args.runs} rounds; "
          f"ns per program run (min / median), this checkout vs baseline")
    print(f"{'program':24} {'this min':>9} {'this med':>9} {'base min':>9} {'base med':>9} "
          f"{'min x':>6} {'med x':>6}")
    for n in names:
        t, b = results["this"][n], results["baseline"][n]
        print(f"{n:24} {min(t):9.0f} {statistics.median(t):9.0f} {min(b):9.0f} "
              f"{statistics.median(b):9.0f} {min(t) / min(b):6.2f} "
              f"{statistics.median(t) / statistics.median(b):6.2f}")
    only = sorted(set(results["this"]) ^ set(results["baseline"]))
    if only:
        print(f"ran in one set only: {', '.join(only)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
