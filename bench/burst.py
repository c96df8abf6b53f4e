"""Benchmark: the largest `tar x` burst a running agent delivers whole, and that every loss of a
bigger one is counted and followed by the rescan.

What it does. A tree of small files (directories of 1,000 files of 2 bytes each) is built once
in a temporary directory, and a tarball of its first N files for each size asked. For each size,
a fresh `vigil run --config CFG -o json` (the embedded default configuration: 16 MiB ring,
rules, exec events, FIM... with a new temporary directory added to the watched ones, baseline
and state in a temporary directory; see bench/startup.py) is started, the bench waits until a
sentinel file in the watched directory is reported, then runs `tar xf` of the tarball into it
(as root: each file is created, chowned, chmoded and written: four kernel events, "created",
"owner-changed", "mode-changed", "modified"), waits until the output has not grown for 5 s,
and stops the agent.

Columns. `events`: the kernel file events the burst should give (4 per file). `delivered`:
those that arrived (per kind, worst kind first in `short`). `missing`: files whose "created"
never arrived. `dropped`: the agent's kernel-side drop counters (summary line on stderr,
vigil/losses.py: file drops and in-flight table overflows) and `lost events`: the count the
events-lost events carried. `rescan`: missing files that the rescan after the drops reported
(FIM events with source "rescan"). `silent`: missing files nobody reported (must be 0).
`whole`: every event arrived. The last line gives the largest burst delivered whole. Nothing
is asserted.

    .venv/bin/python bench/burst.py [--sizes 10000,25000,50000] [--vigil PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import VIGIL, Tail, stop, write_config

PER_DIR = 1000
KINDS = ("created", "owner-changed", "mode-changed", "modified")
SUMMARY_KERNEL = re.compile(r"dropped by the kernel side \(([^)]*)\)")


@dataclass
class Result:
    files: int
    seconds: float = 0.0
    delivered: Counter[str] = field(default_factory=Counter)
    missing: int = 0
    rescanned: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    lost_events: int = 0
    summary: str = ""

    @property
    def whole(self) -> bool:
        return all(self.delivered[k] >= self.files for k in KINDS)

    @property
    def silent(self) -> int:
        return self.missing - self.rescanned


def build_tree(src: Path, files: int) -> None:
    for d in range((files + PER_DIR - 1) // PER_DIR):
        sub = src / f"d{d:04d}"
        sub.mkdir(parents=True)
        for i in range(min(PER_DIR, files - d * PER_DIR)):
            (sub / f"f{i:04d}").write_bytes(b"x\n")


def tarball(src: Path, files: int, out: Path) -> Path:
    dirs = [f"d{d:04d}" for d in range(files // PER_DIR)]
    subprocess.run(["tar", "cf", str(out), "-C", str(src), *dirs], check=True)
    return out


def wait_ready(tail: Tail, watched: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        probe = watched / f".ready-{n}"
        probe.touch()
        probe.unlink()
        n += 1
        time.sleep(0.2)
        for line in tail.read():
            if b".ready-" in line:
                return
        if proc.poll() is not None:
            raise SystemExit(f"the agent exited ({proc.returncode}) before it was ready")
    raise SystemExit("the agent did not report the sentinel in time")


def one_size(vigil: Path, tar: Path, files: int, quiet_s: float) -> Result:
    scratch = Path(tempfile.mkdtemp(prefix="vigil-burst-", dir="/var/tmp")).resolve()
    watched = scratch / "w"
    watched.mkdir()
    cfg = write_config(scratch, watched)
    out_path, err_path = scratch / "out.json", scratch / "err.txt"
    res = Result(files)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([str(vigil), "run", "--config", str(cfg), "-o", "json"],
                                stdout=out, stderr=err, cwd="/")
        tail = Tail(out_path)
        try:
            wait_ready(tail, watched, proc, 120)
            t0 = time.monotonic()
            subprocess.run(["tar", "xf", str(tar), "-C", str(watched)], check=True)
            res.seconds = time.monotonic() - t0
            tail.settle(quiet_s, 0.5)
        finally:
            stop(proc, 300)
            tail.close()
    prefix = str(watched) + "/"
    created: set[str] = set()
    rescanned: set[str] = set()
    with open(out_path, "rb") as f:
        for line in f:
            if prefix.encode() not in line and b"events-lost" not in line:
                continue
            ev = json.loads(line)
            action = ev.get("event", {}).get("action")
            if action == "events-lost":
                res.lost_events += int(ev.get("vigil", {}).get("drops", {}).get("count", 0))
                continue
            path = ev.get("file", {}).get("path", "")
            if not isinstance(path, str) or not path.startswith(prefix) or "/.ready-" in path:
                continue
            dataset = ev.get("event", {}).get("dataset")
            if dataset == "vigil.file" and path.count("/") - prefix.count("/") == 1:
                res.delivered[action] += 1
                if action == "created":
                    created.add(path)
            elif dataset == "vigil.fim" and ev.get("vigil", {}).get("fim", {}).get(
                    "source") == "rescan":
                rescanned.add(path)
    expected = {f"{prefix}d{d:04d}/f{i:04d}" for d in range(files // PER_DIR)
                for i in range(PER_DIR)}
    missing = expected - created
    res.missing = len(missing)
    res.rescanned = len(missing & rescanned)
    lines = err_path.read_text(errors="replace").splitlines()
    res.summary = next((ln for ln in lines if " events delivered " in ln), "")
    if m := SUMMARY_KERNEL.search(res.summary):
        res.dropped = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", m[1])}
    shutil.rmtree(scratch, ignore_errors=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,25000,50000",
                    help="files per burst, comma-separated, multiples of 1000 (4 events each)")
    ap.add_argument("--vigil", type=Path, default=VIGIL, help="the vigil executable")
    ap.add_argument("--quiet", type=float, default=5.0,
                    help="seconds without new output that end a burst's drain")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/burst.py needs root (vigil run loads eBPF programs)", file=sys.stderr)
        return 2
    sizes = sorted({int(s) // PER_DIR * PER_DIR for s in args.sizes.split(",") if s.strip()})
    work = Path(tempfile.mkdtemp(prefix="vigil-burst-src-", dir="/var/tmp"))
    try:
        build_tree(work / "src", max(sizes))
        results = []
        print(f"{'files':>7} {'events':>7} {'tar s':>6} {'delivered':>10} {'short':>22} "
              f"{'missing':>7} {'dropped':>8} {'lost ev':>8} {'rescan':>7} {'silent':>6}  whole",
              flush=True)
        for n in sizes:
            tar = tarball(work / "src", n, work / f"{n}.tar")
            r = one_size(args.vigil, tar, n, args.quiet)
            results.append(r)
            worst = min(KINDS, key=lambda k: r.delivered[k])
            drops = r.dropped.get("file", 0) + r.dropped.get("inflight", 0)
            print(f"{n:>7} {4 * n:>7} {r.seconds:>6.1f} {sum(r.delivered[k] for k in KINDS):>10} "
                  f"{worst + ' ' + str(r.delivered[worst]):>22} {r.missing:>7} {drops:>8} "
                  f"{r.lost_events:>8} {r.rescanned:>7} {r.silent:>6}  "
                  f"{'yes' if r.whole else 'no'}", flush=True)
            if not r.summary:
                print("  (no summary line from the agent)")
        best = max((r.files for r in results if r.whole), default=0)
        print(f"\nlargest burst delivered whole: {best} files ({4 * best} file events)")
        print(f"last summary: {results[-1].summary}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
