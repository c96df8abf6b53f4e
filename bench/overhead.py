"""Benchmark: what the running agent costs a file-heavy or network-heavy workload, and whether
it delivers every event or counts each one it lost.

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

With --backend B1,B2,... every agent mode runs once per backend per round (`watched/lsm`, ...;
the agent is started with --backend B, which it must use or fail, and the backend it names on
stderr is checked), and `none` runs once per backend per round, all in one rotation.

With --baseline-objects DIR (a bpf_objects-like directory, bench/objects.py) every agent mode
also runs with those BPF objects instead of the checkout's (`elsewhere@base`, ...), in the
same rotation: a change to bpf/ measured before and after in one run.

With --workload net the child instead runs N TCP connects over loopback to a listener of its
own on port NET_PORT (connect + accept + close of both ends; SO_LINGER 0, so no TIME_WAIT), and
the agent's events are its connects and accepts (2 per iteration; `elsewhere` is not used:
`no-net` is the agent with network events off, the hooks that stay paid by every process).

Before each agent run the bench waits until the agent reports a sentinel file in the directory
it watches. After the workload, it lets the agent drain (until every workload event is in the
output or counted lost, or the count stops growing for ten seconds, bounded), then stops it
with SIGTERM and reads the counters of its summary line on stderr (overhead_account.py).

How to read it. `min s` / `med s`: the workload's wall time; `min x` / `med x`: ratio to the
`none` mode of this same invocation (min/min, median/median; min is the least noisy). `agent
cpu`: the agent's user+sys CPU seconds from the workload's start until the agent was stopped,
drain included (median). `cpu%`: the agent's CPU while the workload child ran, as a share of
one core (median; 100% = one core busy; the agent can use more than one thread); near or above
100% means the agent is the bottleneck. `delivered`: the workload's kernel events in the output
(event.kind `event` of dataset vigil.file, or vigil.network, whose path is in the workload
directory or whose destination port is NET_PORT; FIM events and alerts are not counted there),
summed over runs, of the 4 per iteration expected (created, modified, renamed, deleted; 2 for
net: connect, accept; `elsewhere` expects 0). `account`: the verdict of the `all` row below.
Then, per mode and kind, summed over runs: expected, delivered, dropped as the agent counted it,
and the verdict (overhead_account.py: `exact` when delivered + dropped == expected, else
`UNACCOUNTED n` and the like, with the run it happened in), the counters behind it, and the FIM
events, alerts and other lines about the workload, reported apart. Nothing is asserted; the
script exits 0 after printing. --json FILE also writes every run's numbers (bench/vm_overhead.py
reads them).

    .venv/bin/python bench/overhead.py [--iterations 100000] [--runs 5] [--quick]
    .venv/bin/python bench/overhead.py --workload net --modes no-net,watched [--backend B]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from objects import agent_launch, package_with
from overhead_account import (
    FILE_KINDS,
    NET_KINDS,
    NET_PORT,
    SENTINEL_PREFIX,
    Kinds,
    RunResult,
    Tally,
    cheap_markers,
    classify,
    detail,
    parse_stderr,
    print_table,
    tally_file,
    verdicts,
)

ROOT = Path(__file__).resolve().parents[1]
VIGIL = ROOT / ".venv" / "bin" / "vigil"
SCALE = 1.0  # --time-scale: the bench's waits for the agent grow by this factor (emulation)
MODES = ("none", "elsewhere", "watched", "no-rules", "no-exec", "no-net", "syslog")
BACKENDS = ("lsm", "fentry", "kprobe", "tracepoint")

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
    """What the child runs, and which kinds of events it makes (one of each per iteration)."""

    name: str
    kinds: Kinds

    def argv(self, workdir: Path, iterations: int) -> list[str]:
        if self.name == "net":
            return [sys.executable, "-c", NET_WORKLOAD, str(NET_PORT), str(iterations)]
        return [sys.executable, "-c", WORKLOAD, str(workdir), str(iterations)]


WORKLOADS = {"file": Workload("file", FILE_KINDS), "net": Workload("net", NET_KINDS)}
WL = WORKLOADS["file"]  # the one main() chose
BASE = "@base"  # a mode's suffix: the agent runs with --baseline-objects


def tally_json(t: Tally) -> dict[str, object]:
    """asdict() would rebuild each Counter from its items (counting the pairs): plain dicts."""
    return {"kernel": dict(t.kernel), "fim": dict(t.fim), "alerts": t.alerts,
            "lost": dict(t.lost), "other": dict(t.other)}


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
    """Reads an agent's growing JSON-lines output file: workload kernel-event lines (a cheap
    byte test; the exact count is made once the agent has exited) and the events the
    events-lost records say were lost, of the kinds that can be workload events."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.markers = cheap_markers(WL.kinds, workdir)
        self.count = 0
        self.lost = 0

    def poll(self, needle: bytes | None = None) -> bool:
        """Read what was appended; return True if `needle` appeared in it."""
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        lossy = {k.removeprefix("drop_").removesuffix("_full")
                 for ks in (WL.kinds.shared, *WL.kinds.own.values()) for k in ks}
        for line in lines:
            if all(m in line for m in self.markers):
                self.count += 1
            elif b'"events-lost"' in line:
                drops = json.loads(line)["vigil"]["drops"]
                if drops["kind"] in lossy or str(drops["kind"]).startswith("output:"):
                    self.lost += int(drops["count"])
        return needle is not None and any(needle in line for line in lines)


def wait_ready(agent: subprocess.Popen[bytes], tail: OutputTail, watched: Path,
               err_path: Path) -> None:
    """Create and delete a sentinel in the watched directory until the agent reports it."""
    timeout = 60.0 * SCALE
    deadline = time.monotonic() + timeout
    k = 0
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited early with status {agent.returncode}: "
                               + err_path.read_text(errors="replace")[-1500:])
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
    """Poll until the workload events seen plus those reported lost reach `expected` (or the
    output stops growing for `quiet` seconds; or `bound` passes). Return the seconds from now
    (the workload's end) to the end of the last poll that saw growth: an upper bound on how far
    the agent's output lagged, which includes the bench's own first read of the output. `quiet`
    is long: an agent behind its ring writes nothing while it works through a large batch
    (seen: over a second with the rules on), and stopping early would leave its CPU uncounted."""
    start = time.monotonic()
    last_growth = start
    last = 0
    while True:
        tail.poll()
        now = time.monotonic()
        seen = tail.count + tail.lost
        if seen != last:
            last_growth, last = now, seen
        if seen >= expected or now - last_growth >= quiet or now - start >= bound:
            return last_growth - start
        time.sleep(0.1)


def agent_command(mode: str, backend: str, base: Path, watched: Path) -> list[str]:
    cmd = ["run", "--watch", str(watched), "-o", "json",
           "--db", str(base / "baseline.db")]
    if backend:
        cmd += ["--backend", backend]
    flag = {"no-exec": "--no-exec", "no-rules": "--no-rules", "no-net": "--no-network"}
    return cmd + ([flag[mode]] if mode in flag else [])


def run_agent_mode(label: str, backend: str, base: Path, workdir: Path, elsewhere: Path,
                   iterations: int, extra_args: list[str], base_pkg: Path | None) -> RunResult:
    mode = label.removesuffix(BASE)
    watched = elsewhere if mode == "elsewhere" else workdir
    out_path = base / f"out-{mode}.jsonl"
    err_path = base / f"err-{mode}.txt"
    launch: tuple[list[str], dict[str, str] | None, Path | None] = ([str(VIGIL)], None, None)
    if label.endswith(BASE):
        assert base_pkg is not None
        launch = agent_launch(base_pkg)
    cmd = [*launch[0], *agent_command(mode, backend, base, watched), *extra_args]
    rsyslog = None
    syslog_events: int | None = None
    if mode == "syslog":
        rsyslog = start_rsyslog(base)
        cfg = base / "syslog.yaml"
        cfg.write_text(json.dumps({
            "state_dir": str(base / "state"),
            "outputs": {"syslog": {"address": rsyslog.address("tcp"),
                                   "spool_dir": str(base / "spool")}}}))
        cmd += ["--config", str(cfg)]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        agent = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 env=launch[1], cwd=launch[2])
    try:
        tail = OutputTail(out_path, workdir)
        wait_ready(agent, tail, watched, err_path)
        cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
        seconds = run_workload(workdir, iterations)
        cpu1, window = cpu_seconds(agent.pid), time.monotonic() - t0
        per_kind = expected_per_kind(mode, iterations)
        expected = per_kind * len(WL.kinds.actions)
        lag = drain(tail, expected, 10.0 * SCALE, 120.0 * SCALE) if expected else None
        cpu = cpu_seconds(agent.pid) - cpu0
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=300 * SCALE)
        if rsyslog is not None:
            syslog_events = count_syslog(rsyslog, workdir, expected)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        if rsyslog is not None:
            rsyslog.stop()
            shutil.rmtree(base / "spool", ignore_errors=True)
    stderr = err_path.read_text(errors="replace")
    summary = parse_stderr(stderr)
    if not summary.line:
        print(f"  warning: no summary line from the agent ({mode}); stderr tail:\n"
              + stderr[-2000:], file=sys.stderr)
    if backend and summary.backend != backend:
        raise RuntimeError(f"asked for the {backend} backend, the agent says "
                           f"{summary.backend or 'nothing'}: {stderr[-1500:]}")
    result = RunResult(label, seconds, backend, tally_file(out_path, WL.kinds, workdir), summary,
                       cpu, cpu1 - cpu0, window, lag, syslog_events, per_kind, WL.kinds)
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
    """Workload kernel events rsyslog wrote (each line's message is the ECS JSON: sorted as
    the JSON file's lines are), once they reach ``expected`` or stop growing for five seconds."""
    def count() -> int:
        tally = Tally()
        data = rsyslog.out.read_bytes() if rsyslog.out.exists() else b""
        for line in data.splitlines():
            try:
                ev = json.loads(json.loads(line)["msg"])
            except (ValueError, KeyError, TypeError):
                continue
            classify(ev, WL.kinds, workdir, tally)
        return sum(tally.kernel.values())

    last, deadline, quiet = -1, time.monotonic() + bound, time.monotonic() + 5
    while time.monotonic() < min(deadline, quiet):
        n = count()
        if n >= expected:
            return n
        if n != last:
            last, quiet = n, time.monotonic() + 5
        time.sleep(0.5)
    return last


def expected_per_kind(mode: str, iterations: int) -> int:
    if mode == "elsewhere" or (WL.name == "net" and mode == "no-net"):
        return 0
    return iterations


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"machine: nproc {os.cpu_count()} ({model}), kernel {platform.release()}, "
            f"python {platform.python_version()}, loadavg {os.getloadavg()[0]:.2f}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100_000,
                   help="create+write+close+rename+unlink per run (default 100000)")
    p.add_argument("--runs", type=int, default=5, help="rounds over all modes (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5000 iterations, 2 rounds")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated subset of {','.join(MODES)} (none is always run)")
    p.add_argument("--backend", default="",
                   help=f"comma-separated backends to force ({','.join(BACKENDS)}): each agent "
                        "mode once per backend per round (default: the agent's choice)")
    # Not /tmp: the built-in rules watch /tmp, /var/tmp and /dev/shm (files dropped there and
    # run), so a directory there is never "elsewhere": the kernel sends its every operation.
    p.add_argument("--dir", type=Path, default=Path("/var/cache"),
                   help="parent of the bench's scratch directory (default: /var/cache, which "
                        "no built-in rule watches)")
    p.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `vigil run` (repeatable), e.g. --agent-arg=--no-fim")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="file",
                   help="file operations (default) or TCP connects over loopback")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                   help="multiply the waits for the agent (start, drain, stop) by F: for slow "
                        "machines and emulated guests (bench/vm_overhead.py passes 5)")
    p.add_argument("--baseline-objects", type=Path, default=None, metavar="DIR",
                   help="also run every agent mode with the BPF objects in DIR (laid out like "
                        "vigil/bpf_objects), labelled MODE@base: before/after in one run")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write every run's numbers to FILE (JSON)")
    args = p.parse_args()
    if args.quick:
        args.iterations, args.runs = 5000, 2
    return args


def main() -> int:
    args = parse_args()
    global WL, SCALE
    WL, SCALE = WORKLOADS[args.workload], args.time_scale
    if os.geteuid() != 0:
        print("overhead.py: must run as root (the agent loads eBPF programs)", file=sys.stderr)
        return 2
    if not VIGIL.exists():
        print(f"overhead.py: {VIGIL} not found; run ./do setup first", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m and m != "none"]
    backends = [b for b in args.backend.split(",") if b]
    unknown = (set(modes) - set(MODES)) | (set(backends) - set(BACKENDS))
    if unknown:
        print(f"overhead.py: unknown mode(s) or backend(s): {', '.join(sorted(unknown))}",
              file=sys.stderr)
        return 2
    # one `none` per backend group, so the baseline is sampled as often as each agent cell
    if args.baseline_objects and not (args.baseline_objects / platform.machine()).is_dir():
        print(f"overhead.py: --baseline-objects {args.baseline_objects}: no "
              f"{platform.machine()}/ in it", file=sys.stderr)
        return 2
    if args.baseline_objects:
        modes = [m for mode in modes for m in (mode, mode + BASE)]
    cells = [(m, b) for b in (backends or [""]) for m in ["none", *modes]]

    print(machine())
    what = ("TCP connect + accept + close over loopback" if WL.name == "net"
            else "create + write 64 B + close + rename + unlink")
    print(f"workload: {args.iterations} x ({what}), {args.runs} rounds over {', '.join(modes)}"
          + (f" on backends {', '.join(backends)}" if backends else ""), flush=True)
    base = Path(tempfile.mkdtemp(prefix="vigil-bench-", dir=args.dir))
    workdir, elsewhere = base / "work", base / "elsewhere"
    workdir.mkdir()
    elsewhere.mkdir()
    base_pkg = package_with(args.baseline_objects, base / "baseline-pkg") \
        if args.baseline_objects else None
    results: dict[str, list[RunResult]] = {}
    try:
        for rnd in range(args.runs):
            shift = rnd * len(cells) // max(args.runs, 1) if backends else rnd % len(cells)
            for mode, backend in cells[shift:] + cells[:shift]:
                if mode == "none":
                    r = RunResult(mode, run_workload(workdir, args.iterations), kinds=WL.kinds)
                else:
                    r = run_agent_mode(mode, backend, base, workdir, elsewhere,
                                       args.iterations, args.agent_arg, base_pkg)
                results.setdefault(r.label, []).append(r)
                print(f"  round {rnd + 1} {r.label:<18} {r.seconds:7.3f}s{detail(r)}",
                      flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results = {"none": results.pop("none"), **results}
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "iterations": args.iterations, "workload": WL.name,
            "runs": [{**asdict(r), "tally": tally_json(r.tally), "label": r.label,
                      "verdicts": verdicts([r]), "workload_share": r.workload_share}
                     for rs in results.values() for r in rs]}, indent=1) + "\n")
    print()
    print(machine())
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
