"""User-space speed without the kernel: recorded ring records replayed through the agent's own
stages (decode -> pipeline -> ecs -> rules -> outputs -> fim), events/s per stage, one core.

Two steps:

  record (root, once; `--record` forces it again): the real agent (vigil.agent.Agent with the
      embedded default configuration watching one directory; no rules, no FIM, no outputs)
      loads its programs and runs while three workloads run one after another: the file
      workload of bench/overhead.py (create + write + close + rename + unlink: 4 events per
      iteration), execs of /bin/true from one shell (exec + exit each), and TCP connects over
      loopback (connect + accept each). Every record the agent read from the ring, in the
      batches it read them, is written to build/pipeline-records.bin (u32 length + bytes).
  replay (no root needed): for each mode, interleaved over --runs rounds, a fresh Agent with
      the same configuration feeds the records, cut into batches of --batch records, through
      ``Agent.step`` (the agent's own per-batch code path), its JSON lines going to /dev/null.
      The process is pinned to one CPU. Modes:
        bare   FIM and rules off: decode, pipeline, ECS render, ECS JSON written
        rules  the built-in rule pack on, FIM off
        full   the default: rules and FIM on (a fresh SQLite baseline in a temp dir)

Prints, per mode: events/s (events out of the pipeline / CPU seconds of the replay, min and
median over runs), and per stage (``Agent.stages``: decode, pipeline, ecs, rules, fim, each
output) the µs per item and the share of the time. Never asserts (issue 16's targets:
>= 250,000 events/s with FIM and rules off, >= 120,000 with them on).

    sudo .venv/bin/python bench/pipeline.py [--runs 5] [--batch 4096] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from overhead import NET_WORKLOAD, WORKLOAD  # noqa: E402  (the same workloads)

from vigil.agent import STEP_RECORDS, Agent  # noqa: E402
from vigil.config import Config, load_config  # noqa: E402
from vigil.events.layout import Clock, Decoder  # noqa: E402
from vigil.events.pipeline import Pipeline  # noqa: E402
from vigil.outputs.jsonl import JsonLinesSink  # noqa: E402

RECORDS = ROOT / "build" / "pipeline-records.bin"
MAGIC = b"VIGILREC1\n"
# The same path at record and replay time. Under /tmp on purpose: the built-in dropper
# correlation's base rule matches every file written there, the rules stage's costly case.
WATCHED = Path("/tmp/vigil-bench-pipeline")
NET_PORT = 29998
_LEN = struct.Struct("<I")


def config_for(watched: Path, *, rules: bool, fim: bool, state: Path | None = None) -> Config:
    cfg = load_config(None).with_watch_overrides([watched])
    cfg = replace(cfg, rules=replace(cfg.rules, enabled=rules),
                  metrics=replace(cfg.metrics, enabled=False),
                  health=replace(cfg.health, enabled=False))
    if state is not None:
        cfg = replace(cfg, database=state / "baseline.db")
    return cfg


# ---- record ---------------------------------------------------------------------------------

class RecordingAgent(Agent):
    """The agent, keeping a copy of every record it reads (in its batches)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config, [], fim=False)
        self.batches: list[list[bytes]] = []
        self.lock = threading.Lock()

    def step(self, records: Iterable[memoryview | bytes], decoder: Decoder,
             pipeline: Pipeline) -> None:
        copy = [bytes(r) for r in records]
        with self.lock:
            self.batches.append(copy)
        super().step(copy, decoder, pipeline)

    def count(self) -> int:
        with self.lock:
            return sum(len(b) for b in self.batches)


def record(path: Path, iterations: int, execs: int, connects: int) -> None:
    if os.geteuid() != 0:
        sys.exit(f"pipeline.py: {path} is missing; recording it needs root (loads eBPF)")
    shutil.rmtree(WATCHED, ignore_errors=True)
    WATCHED.mkdir(parents=True)
    agent = RecordingAgent(config_for(WATCHED, rules=False, fim=False))
    t = threading.Thread(target=agent.run, name="agent", daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        n = 0
        while agent.count() == 0 or not any(b"bench-ready" in r for b in agent.batches
                                            for r in b):
            if time.monotonic() > deadline or not t.is_alive():
                sys.exit("pipeline.py: the agent did not report the sentinel file in 60 s")
            # by a child: the agent never reports its own process's files
            subprocess.run(["touch", str(WATCHED / f"bench-ready-{n}")], check=True)
            n += 1
            time.sleep(0.2)
        subprocess.run(["find", str(WATCHED), "-mindepth", "1", "-delete"], check=True)
        time.sleep(0.5)
        with agent.lock:
            agent.batches.clear()
        py = sys.executable
        subprocess.run([py, "-c", WORKLOAD, str(WATCHED), str(iterations)], check=True,
                       capture_output=True)
        subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {execs} ]; do /bin/true; "
                        "i=$((i+1)); done"], check=True)
        subprocess.run([py, "-c", NET_WORKLOAD, str(NET_PORT), str(connects)], check=True,
                       capture_output=True)
        time.sleep(2.0)           # the agent drains the ring
    finally:
        agent.stop()
        t.join(60)
    header = {"kernel": platform.release(), "backend": agent.backend.name if agent.backend
              else "?", "file_iterations": iterations, "execs": execs, "connects": connects,
              "batches": len(agent.batches)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC + json.dumps(header).encode() + b"\n")
        for batch in agent.batches:
            for r in batch:
                f.write(_LEN.pack(len(r)) + r)
    tmp.replace(path)
    print(f"recorded {sum(len(b) for b in agent.batches)} records in {len(agent.batches)} "
          f"batches -> {path} ({path.stat().st_size >> 10} KiB) {header}")


def load(path: Path) -> tuple[dict[str, object], list[bytes]]:
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        sys.exit(f"pipeline.py: {path} is not a record file (run with --record)")
    nl = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC):nl])
    out: list[bytes] = []
    pos = nl + 1
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return header, out


# ---- replay ---------------------------------------------------------------------------------

MODES = {"bare": (False, False), "rules": (True, False), "full": (True, True)}


def batches(records: list[bytes], size: int) -> Iterator[list[bytes]]:
    for i in range(0, len(records), size):
        yield records[i:i + size]


def replay(records: list[bytes], mode: str, size: int) -> tuple[float, int, Agent]:
    """CPU seconds of one replay, events out of the pipeline, and the agent (its stages)."""
    rules, fim = MODES[mode]
    state = Path(tempfile.mkdtemp(prefix="vigil-bench-state-"))
    WATCHED.mkdir(parents=True, exist_ok=True)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        cfg = config_for(WATCHED, rules=rules, fim=fim, state=state)
        detector = None
        if rules:
            from vigil.rules.detector import Detector
            from vigil.rules.ruleset import build_ruleset
            detector = Detector(build_ruleset(cfg.rules), cfg.rules.suppress_window)
        agent = Agent(cfg, [JsonLinesSink(null)], fim=fim, detector=detector)
        if fim:
            from vigil.fim.service import FimService
            agent._fim = FimService(cfg)   # the agent's own; no start(): no scan thread
        pipeline = agent.make_pipeline("tracepoint", lambda _fid: None)
        decoder = Decoder(Clock.now())
        t0 = time.process_time()
        for b in batches(records, size):
            agent.step(b, decoder, pipeline)
        cpu = time.process_time() - t0
        if agent._fim is not None:
            agent._fim.close()
        return cpu, agent.stages.items.get("pipeline", 0), agent
    finally:
        os.close(null)
        shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", action="store_true", help="record the ring records again")
    ap.add_argument("--records", type=Path, default=RECORDS)
    ap.add_argument("--iterations", type=int, default=25000, help="file workload iterations")
    ap.add_argument("--execs", type=int, default=3000)
    ap.add_argument("--connects", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=STEP_RECORDS,
                    help="records per step (default: the agent's)")
    ap.add_argument("--modes", default="bare,rules,full")
    args = ap.parse_args()
    if args.record or not args.records.exists():
        record(args.records, args.iterations, args.execs, args.connects)
    header, records = load(args.records)
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r} (one of {', '.join(MODES)})")
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    print(f"{len(records)} records ({header}); batches of {args.batch}; pinned to CPU "
          f"{cpus[-1]}; {args.runs} rounds, modes interleaved")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    stages: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
    items: dict[str, dict[str, int]] = {m: {} for m in modes}
    for r in range(args.runs):
        for m in modes[r % len(modes):] + modes[:r % len(modes)]:
            cpu, events, agent = replay(records, m, args.batch)
            rates[m].append(events / cpu)
            for st, sec in agent.stages.seconds.items():
                stages[m].setdefault(st, []).append(sec)
            items[m] = dict(agent.stages.items)
    print(f"\n{'mode':6} {'events':>8} {'min ev/s':>10} {'med ev/s':>10}")
    for m in modes:
        print(f"{m:6} {items[m].get('pipeline', 0):>8} {min(rates[m]):>10,.0f} "
              f"{statistics.median(rates[m]):>10,.0f}")
    for m in modes:
        total = sum(statistics.median(v) for v in stages[m].values())
        print(f"\n{m}: per stage (median over runs; µs per item; share of the stages' time)")
        for st, v in sorted(stages[m].items(), key=lambda kv: -statistics.median(kv[1])):
            med = statistics.median(v)
            n = items[m].get(st, 0) or 1
            print(f"  {st:28} {items[m].get(st, 0):>8} items {1e6 * med / n:8.2f} µs "
                  f"{100 * med / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
