"""Benchmark: what the running agent costs a file-heavy or network-heavy workload, and whether
it keeps up.

What it measures. A child process (the venv's Python, not pinned to a CPU) runs N iterations of
create + write 64 bytes + close + rename + unlink on absolute paths in one directory and prints
its own wall time (time.perf_counter around the loop only, so the agent's start-up never counts).
It runs in these modes, interleaved round-robin for R rounds (the first mode rotates each round)
so that drift on a shared, noisy machine hits every mode alike:

  none       no agent
  elsewhere  agent running (exec events on) but watching another directory: the workload's
             directory is unwatched, so this is the cost every process pays for the hooks
  watched    agent watching the workload directory, exec events on (the default), the
             built-in rules on (the default), ECS JSON written to a file on disk
  no-rules   the same with --no-rules: watched vs no-rules is what detection costs
  no-exec    the same with --no-exec
  no-net     the same with --no-network
  syslog     `watched` plus a syslog output (TCP, octet-counted, through the spool) to a
             private rsyslogd on loopback (Debian's rsyslog), the metrics endpoint on as in
             every agent mode: syslog vs watched is what the syslog output costs. Its events
             are counted twice: in the JSON file and in what rsyslog wrote (`syslog N`)

With --workload net the child instead runs N TCP connects over loopback to a listener of its
own on port NET_PORT (connect + accept + close of both ends; SO_LINGER 0, so no TIME_WAIT), and
the agent's events are its connects and accepts (2 per iteration; `elsewhere` is not used:
`no-net` is the agent with network events off, the hooks that stay paid by every process).

Before each agent run the bench waits until the agent reports a sentinel file in the directory
it watches. After the workload, it lets the agent drain (until every workload event is in the
output, or the count stops growing for ten seconds, bounded), then stops it with SIGTERM and
parses the drop counters from its summary line on stderr.

How to read it. `min s` / `med s`: the workload's wall time; `min x` / `med x`: ratio to the
`none` mode of this same invocation (min/min, median/median; min is the least noisy). `events`:
workload events found in the output (lines whose file.path is in the workload directory), worst
run, against the 4 per iteration expected (created, modified, renamed, deleted); `elsewhere`
expects 0. `drops`: the agent's own kernel-side drop counters summed over runs (failed ring
reserves per kind, in-flight table full). `agent cpu`: the agent's user+sys CPU seconds from the
workload's start until the agent was stopped, drain included (median). `cpu%`: the agent's CPU
while the workload child ran, as a share of one core (median; 100% = one core busy; the agent can
use more than one thread); near or above 100% means the agent is the bottleneck. Nothing is
asserted; the script exits 0 after printing.

    .venv/bin/python bench/overhead.py [--iterations 100000] [--runs 5] [--quick]
    .venv/bin/python bench/overhead.py --workload net --modes no-net,watched [--backend B]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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

ROOT = Path(__file__).resolve().parents[1]
VIGIL = ROOT / ".venv" / "bin" / "vigil"
SENTINEL_PREFIX = ".bench-ready-"
ACTIONS = ("created", "modified", "renamed", "deleted")
MODES = ("none", "elsewhere", "watched", "no-rules", "no-exec", "no-net", "syslog")
NET_PORT = 29999  # below the ephemeral range: no client port takes it

# The workload, run as `python -c WORKLOAD DIR N`; it prints its loop's wall time in seconds.
WORKLOAD = """\
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
data = b"x" * 64
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
paths = [(f"{d}/f{i}", f"{d}/f{i}.moved") for i in range(n)]
t0 = time.perf_counter()
for a, b in paths:
    fd = os.open(a, flags, 0o644)
    os.write(fd, data)
    os.close(fd)
    os.rename(a, b)
    os.unlink(b)
print(time.perf_counter() - t0)
"""

# The network workload, run as `python -c NET_WORKLOAD PORT N`.
NET_WORKLOAD = """\
import socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(4096)
linger = struct.pack("ii", 1, 0)
t0 = time.perf_counter()
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.connect(("127.0.0.1", port))
    c, _ = srv.accept()
    s.close()
    c.close()
print(time.perf_counter() - t0)
"""


@dataclass(frozen=True)
class Workload:
    """What the child runs, and how its events are recognised in the agent's output."""

    name: str
    per_iteration: int
    actions: tuple[str, ...]

    def argv(self, workdir: Path, iterations: int) -> list[str]:
        if self.name == "net":
            return [sys.executable, "-c", NET_WORKLOAD, str(NET_PORT), str(iterations)]
        return [sys.executable, "-c", WORKLOAD, str(workdir), str(iterations)]

    def marker(self, workdir: Path) -> bytes:
        """A cheap test of an output line for "a workload event" while the agent runs."""
        if self.name == "net":
            return f'"port":{NET_PORT}}}'.encode()
        return f'path":"{workdir}/f'.encode()

    def action_of(self, ev: dict[str, object], workdir: Path) -> str | None:
        """The event.action of a workload event, None for any other line."""
        action = ev.get("event", {}).get("action", "?")  # type: ignore[union-attr]
        if self.name == "net":
            dest = ev.get("destination") or {}
            return action if dest.get("port") == NET_PORT else None  # type: ignore[union-attr]
        fpath = ev.get("file", {}).get("path", "")  # type: ignore[union-attr]
        prefix = f"{workdir}/"
        if fpath.startswith(prefix) and not Path(fpath).name.startswith(SENTINEL_PREFIX):
            return action  # type: ignore[return-value]
        return None


WORKLOADS = {"file": Workload("file", 4, ACTIONS), "net": Workload("net", 2, ("connect", "accept"))}
WL = WORKLOADS["file"]  # the one main() chose

SUMMARY_RE = re.compile(r"vigil: (\d+) events delivered .*; (\d+) dropped by the kernel side "
                        r"\(([^)]*)\)")


@dataclass
class RunResult:
    mode: str
    seconds: float
    events: Counter[str] = field(default_factory=Counter)
    drops: dict[str, int] = field(default_factory=dict)
    agent_cpu: float | None = None  # user+sys seconds from workload start to stop
    agent_cpu_workload: float | None = None  # the same, while the workload child ran
    window: float | None = None  # wall seconds the workload child ran (start-up included)
    lag: float | None = None  # seconds from workload end to the last new workload event (bound)
    summary: str = ""
    syslog: int | None = None  # syslog mode: workload events rsyslog wrote

    @property
    def workload_share(self) -> float:
        """The agent's CPU while the workload ran, as a percentage of one core."""
        if not self.window or self.agent_cpu_workload is None:
            return 0.0
        return 100 * self.agent_cpu_workload / self.window

    @property
    def delivered(self) -> int:
        return sum(self.events[a] for a in WL.actions)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_workload(workdir: Path, iterations: int) -> float:
    out = subprocess.run(WL.argv(workdir, iterations), check=True, capture_output=True,
                         text=True)
    return float(out.stdout.strip())


class OutputTail:
    """Reads an agent's growing JSON-lines output file and counts workload-event lines."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        # A cheap test for "a workload event" while the agent is running; the exact count is
        # made from parsed JSON once the agent has exited.
        self.marker = WL.marker(workdir)
        self.count = 0
        self.seen: list[bytes] = []

    def poll(self, needle: bytes | None = None) -> bool:
        """Read what was appended; return True if `needle` appeared in it."""
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        self.offset += len(chunk)
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()
        self.count += sum(1 for line in lines if self.marker in line)
        return needle is not None and any(needle in line for line in lines)


def count_events(path: Path, workdir: Path) -> Counter[str]:
    """Workload events in the output (Workload.action_of), by event.action."""
    marker = WL.marker(workdir)
    counts: Counter[str] = Counter()
    with open(path, "rb") as fh:
        for line in fh:
            if marker not in line:
                continue
            action = WL.action_of(json.loads(line), workdir)
            if action is not None:
                counts[action] += 1
    return counts


def parse_summary(stderr: str) -> tuple[str, dict[str, int]]:
    for line in reversed(stderr.splitlines()):
        m = SUMMARY_RE.search(line)
        if m:
            drops = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", m.group(3))}
            return line.strip(), drops
    return "", {}


def wait_ready(agent: subprocess.Popen[bytes], tail: OutputTail, watched: Path,
               timeout: float = 60.0) -> None:
    """Create and delete a sentinel in the watched directory until the agent reports it."""
    deadline = time.monotonic() + timeout
    k = 0
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited early with status {agent.returncode}")
        name = f"{SENTINEL_PREFIX}{os.getpid()}-{k}"
        sentinel = watched / name
        sentinel.touch()
        sentinel.unlink()
        k += 1
        t_end = time.monotonic() + 0.5
        while time.monotonic() < t_end:
            if tail.poll(name.encode()):
                return
            time.sleep(0.05)
    raise RuntimeError(f"agent not ready after {timeout:.0f}s")


def drain(tail: OutputTail, expected: int, quiet: float = 10.0, bound: float = 120.0) -> float:
    """Poll until the workload-event count reaches `expected` (or stops growing for `quiet`
    seconds: events were lost; or `bound` passes). Return the seconds from now (the workload's
    end) to the end of the last poll that saw growth: an upper bound on how far the agent's
    output lagged, which includes the bench's own first read of the output. `quiet` is long:
    an agent behind its ring writes nothing while it works through a large batch (seen: over
    a second with the rules on), and stopping early would leave its CPU uncounted."""
    start = time.monotonic()
    last_growth = start
    last = 0
    while True:
        tail.poll()
        now = time.monotonic()
        if tail.count != last:
            last_growth, last = now, tail.count
        if tail.count >= expected or now - last_growth >= quiet or now - start >= bound:
            return last_growth - start
        time.sleep(0.1)


def run_agent_mode(mode: str, base: Path, workdir: Path, elsewhere: Path, iterations: int,
                   extra_args: list[str]) -> RunResult:
    watched = elsewhere if mode == "elsewhere" else workdir
    syslog_events = 0
    out_path = base / f"out-{mode}.jsonl"
    err_path = base / f"err-{mode}.txt"
    cmd = [str(VIGIL), "run", "--watch", str(watched), "-o", "json",
           "--db", str(base / "baseline.db"), *extra_args]
    rsyslog = None
    if mode == "syslog":
        rsyslog = start_rsyslog(base)
        cfg = base / "syslog.yaml"
        cfg.write_text(json.dumps({
            "state_dir": str(base / "state"),
            "outputs": {"syslog": {"address": rsyslog.address("tcp"),
                                   "spool_dir": str(base / "spool")}}}))
        cmd += ["--config", str(cfg)]
    if mode == "no-exec":
        cmd.append("--no-exec")
    if mode == "no-rules":
        cmd.append("--no-rules")
    if mode == "no-net":
        cmd.append("--no-network")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        agent = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        tail = OutputTail(out_path, workdir)
        wait_ready(agent, tail, watched)
        cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
        seconds = run_workload(workdir, iterations)
        cpu1, window = cpu_seconds(agent.pid), time.monotonic() - t0
        expected = expected_events(mode, iterations)
        lag = drain(tail, expected) if expected else None
        cpu = cpu_seconds(agent.pid) - cpu0
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=120)
        if rsyslog is not None:
            syslog_events = count_syslog(rsyslog, workdir, expected)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        if rsyslog is not None:
            rsyslog.stop()
            shutil.rmtree(base / "spool", ignore_errors=True)
    summary, drops = parse_summary(err_path.read_text(errors="replace"))
    if not summary:
        print(f"  warning: no summary line from the agent ({mode}); stderr tail:\n"
              + err_path.read_text(errors="replace")[-2000:], file=sys.stderr)
    result = RunResult(mode, seconds, count_events(out_path, workdir), drops, cpu, cpu1 - cpu0,
                       window, lag, summary, syslog_events if rsyslog is not None else None)
    out_path.unlink()
    return result


def start_rsyslog(base: Path):  # type: ignore[no-untyped-def]
    """A private rsyslogd (tests/outputs/rsyslog_proc.py) for the syslog mode."""
    sys.path.insert(0, str(ROOT / "tests" / "outputs"))
    from rsyslog_proc import Rsyslog

    shutil.rmtree(base / "rsyslog", ignore_errors=True)
    r = Rsyslog(base / "rsyslog")
    r.start()
    return r


def count_syslog(rsyslog, workdir: Path, expected: int,  # type: ignore[no-untyped-def]
                 bound: float = 120.0) -> int:
    """Workload events rsyslog wrote (each line's message is the ECS JSON: counted as the JSON
    file's lines are), once they reach ``expected`` or stop growing for five seconds."""
    def count() -> int:
        n = 0
        data = rsyslog.out.read_bytes() if rsyslog.out.exists() else b""
        for line in data.splitlines():
            try:
                ev = json.loads(json.loads(line)["msg"])
            except (ValueError, KeyError, TypeError):
                continue
            n += WL.action_of(ev, workdir) is not None
        return n

    last, deadline, quiet = -1, time.monotonic() + bound, time.monotonic() + 5
    while time.monotonic() < min(deadline, quiet):
        n = count()
        if n >= expected:
            return n
        if n != last:
            last, quiet = n, time.monotonic() + 5
        time.sleep(0.5)
    return last


def expected_events(mode: str, iterations: int) -> int:
    if mode == "elsewhere" or (WL.name == "net" and mode == "no-net"):
        return 0
    return WL.per_iteration * iterations


def fmt_drops(results: list[RunResult]) -> str:
    total: Counter[str] = Counter()
    for r in results:
        total.update(r.drops)
    if not total:
        return "-"
    return " ".join(f"{k} {v}" for k, v in total.items())


def print_table(results: dict[str, list[RunResult]], iterations: int) -> None:
    base = results["none"]
    base_min = min(r.seconds for r in base)
    base_med = statistics.median(r.seconds for r in base)
    header = (f"{'mode':<10} {'min s':>7} {'med s':>7} {'min x':>6} {'med x':>6} "
              f"{'events (worst run)':>26} {'agent cpu':>10} {'cpu%':>5}  drops (sum)")
    print(header)
    print("-" * len(header))
    for mode, runs in results.items():
        secs = [r.seconds for r in runs]
        lo, med = min(secs), statistics.median(secs)
        if mode == "none":
            events = cpu = share = "-"
        else:
            expected = expected_events(mode, iterations)
            worst = min(r.delivered for r in runs) if expected else max(r.delivered for r in runs)
            pct = f" ({100 * worst / expected:.1f}%)" if expected else ""
            events = f"{worst}/{expected}{pct}"
            if any(r.syslog is not None for r in runs):
                events += f"; syslog {min(r.syslog or 0 for r in runs)}"
            cpu = f"{statistics.median(r.agent_cpu or 0.0 for r in runs):.2f}s"
            share = f"{statistics.median(r.workload_share for r in runs):.0f}%"
        print(f"{mode:<10} {lo:>7.3f} {med:>7.3f} {lo / base_min:>6.2f} {med / base_med:>6.2f} "
              f"{events:>26} {cpu:>10} {share:>5}  {fmt_drops(runs) if mode != 'none' else '-'}")


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"machine: nproc {os.cpu_count()} ({model}), kernel {platform.release()}, "
            f"python {platform.python_version()}, loadavg {os.getloadavg()[0]:.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100_000,
                   help="create+write+close+rename+unlink per run (default 100000)")
    p.add_argument("--runs", type=int, default=5, help="rounds over all modes (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5000 iterations, 2 rounds")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated subset of {','.join(MODES)} (none is always run)")
    p.add_argument("--dir", type=Path, default=None,
                   help="parent of the bench's scratch directory (default: the system temp dir)")
    p.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `vigil run` (repeatable), e.g. --agent-arg=--no-fim")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="file",
                   help="file operations (default) or TCP connects over loopback")
    args = p.parse_args()
    global WL
    WL = WORKLOADS[args.workload]
    if args.quick:
        args.iterations, args.runs = 5000, 2

    if os.geteuid() != 0:
        print("overhead.py: must run as root (the agent loads eBPF programs)", file=sys.stderr)
        return 2
    if not VIGIL.exists():
        print(f"overhead.py: {VIGIL} not found; run ./do setup first", file=sys.stderr)
        return 2
    modes = ["none", *[m for m in args.modes.split(",") if m and m != "none"]]
    unknown = set(modes) - set(MODES)
    if unknown:
        print(f"overhead.py: unknown mode(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    print(machine())
    what = ("TCP connect + accept + close over loopback" if WL.name == "net"
            else "create + write 64 B + close + rename + unlink")
    print(f"workload: {args.iterations} x ({what}), {args.runs} rounds over {', '.join(modes)}",
          flush=True)
    base = Path(tempfile.mkdtemp(prefix="vigil-bench-", dir=args.dir))
    workdir, elsewhere = base / "work", base / "elsewhere"
    workdir.mkdir()
    elsewhere.mkdir()
    results: dict[str, list[RunResult]] = {m: [] for m in modes}
    try:
        for rnd in range(args.runs):
            order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]
            for mode in order:
                if mode == "none":
                    r = RunResult(mode, run_workload(workdir, args.iterations))
                else:
                    r = run_agent_mode(mode, base, workdir, elsewhere, args.iterations,
                                       args.agent_arg)
                results[mode].append(r)
                detail = ""
                if mode != "none":
                    lag = f", output lag <= {r.lag:.1f}s" if r.lag is not None else ""
                    detail = (f"  events {r.delivered} {dict(r.events)}, agent cpu "
                              f"{r.agent_cpu:.2f}s (during workload {r.agent_cpu_workload:.2f}s "
                              f"in {r.window:.2f}s, {r.workload_share:.0f}%){lag}\n"
                              f"      {r.summary or 'no summary line'}")
                print(f"  round {rnd + 1} {mode:<10} {r.seconds:7.3f}s{detail}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print()
    print(machine())
    print_table(results, args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
