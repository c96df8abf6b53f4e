"""Runs every fuzz target for a bounded time: `python -m tests.fuzz.run [--seconds S] [NAME...]`.

Each target (tests/fuzz/targets.py) runs in its own atheris process (tests/fuzz/engine.py), one
after the other, under `nice`, on one core: the seed corpus (tests/fuzz/corpus/NAME) and the
regressions (tests/fuzz/regressions/NAME) are its starting inputs; what it learns goes to a
working corpus under build/fuzz/NAME (kept between runs, never committed). An input that
crashes a target, hangs it (-timeout) or exhausts its memory (-rss_limit_mb) is copied into
tests/fuzz/regressions/NAME/, where tests/fuzz/test_fuzz.py replays it on every test run, and
the target is started again for the rest of its time. Exit status 1 when anything was found.

    .venv/bin/python -m tests.fuzz.run --seconds 600          # the long run (README)
    .venv/bin/python -m tests.fuzz.run --seconds 30 image tar  # some targets
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.targets import CORPUS, REGRESSIONS, ROOT, TARGETS

ARTIFACT = re.compile(r"^(crash|timeout|oom|leak)-[0-9a-f]+$")
_RUNS = re.compile(r"stat::number_of_executed_units:\s+(\d+)")  # -print_final_stats
_COV = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+)", re.M)
RSS_LIMIT_MB = 2048  # an input that needs more is a finding (the bounds must stop it first)
TIMEOUT_S = 30  # per input: a hang is a finding


@dataclass
class Result:
    target: str
    seconds: float = 0.0
    runs: int = 0
    coverage: int = 0
    found: list[Path] = field(default_factory=list)  # the inputs saved as regressions
    summaries: list[str] = field(default_factory=list)  # what each one did

    def line(self) -> str:
        found = f", {len(self.found)} FOUND" if self.found else ", nothing found"
        return (f"{self.target}: {self.seconds:.0f} s, {self.runs} runs, cov {self.coverage}"
                f"{found}")


def _summary(log: str) -> str:
    """The Python exception (or libFuzzer's verdict) an engine log ends with."""
    lines = [ln for ln in log.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("=== Uncaught Python exception"):
            tail = [x for x in lines[i + 1:] if not x.startswith(("  ", "Traceback", "=="))]
            return tail[0] if tail else ln
        if "ERROR: libFuzzer:" in ln:
            return ln.split("ERROR: libFuzzer:", 1)[1].strip()
    return "unknown failure (see the log)"


def run_target(name: str, seconds: float, work: Path, regressions: Path = REGRESSIONS,
               nice: bool = True) -> Result:
    """Fuzz one target for ``seconds`` (restarting it after each finding); ``nice`` lowers
    its priority (a long run in the background)."""
    t = TARGETS[name]
    res = Result(name)
    corpus, artifacts = work / name / "corpus", work / name / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    saved = regressions / name
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    left = max(seconds, 1.0)  # at least one run of a second
    while left >= 1:
        dirs = [corpus, CORPUS / name, *{d for d in (REGRESSIONS / name, saved) if d.is_dir()}]
        argv = [*(["nice", "-n", "10"] if nice else []), sys.executable, "-m",
                "tests.fuzz.engine", name,
                *map(str, dirs), f"-max_total_time={int(left)}", f"-max_len={t.max_len}",
                f"-timeout={TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
                f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
        start = time.monotonic()
        p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, errors="replace",
                           env={**os.environ, "PYTHONHASHSEED": "0"}, check=False)
        res.seconds += time.monotonic() - start
        log = p.stdout + p.stderr
        (work / name / "last.log").write_text(log)
        m = _RUNS.search(log)
        if m:
            res.runs += int(m.group(1))
        covs = _COV.findall(log)
        if covs:
            res.coverage = max(res.coverage, int(covs[-1][1]))
        new = [a for a in sorted(artifacts.iterdir()) if ARTIFACT.match(a.name)]
        if p.returncode == 0 and not new:
            break
        if not new:
            raise RuntimeError(f"fuzz target {name} failed without a finding (exit "
                               f"{p.returncode}):\n{log[-3000:]}")
        for a in new:
            data = a.read_bytes()
            digest = hashlib.sha1(data).hexdigest()
            dest = saved / f"{a.name.split('-', 1)[0]}-{digest}"
            saved.mkdir(parents=True, exist_ok=True)
            shutil.move(str(a), dest)
            res.found.append(dest)
            res.summaries.append(f"{dest}: {_summary(log)}")
            if digest in seen:  # the same input again: the target cannot get past it
                return res
            seen.add(digest)
        left = deadline - time.monotonic()
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run every fuzz target for a bounded time.")
    p.add_argument("targets", nargs="*", metavar="NAME",
                   help=f"targets to run (default: all: {', '.join(TARGETS)})")
    p.add_argument("--seconds", type=float, default=60, help="per target (default: 60)")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "fuzz",
                   help="working corpora and logs (default: build/fuzz)")
    p.add_argument("--regressions", type=Path, default=REGRESSIONS,
                   help="where findings are saved (default: tests/fuzz/regressions)")
    p.add_argument("--no-nice", dest="nice", action="store_false",
                   help="run at normal priority (the test suite's short run)")
    args = p.parse_args(argv)
    unknown = [n for n in args.targets if n not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; there are {', '.join(TARGETS)}")
    found = 0
    for name in args.targets or list(TARGETS):
        res = run_target(name, args.seconds, args.work, args.regressions, args.nice)
        print(res.line(), flush=True)
        for s in res.summaries:
            print(f"  {s}", flush=True)
        found += len(res.found)
    if found:
        print(f"{found} inputs saved in {args.regressions}/: fix the parser, then `pytest "
              f"tests/fuzz` replays them (from tests/fuzz/regressions/)", flush=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
