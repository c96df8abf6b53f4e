"""Benchmark: the floor under any syscall-tracepoint monitor, measured on this machine.

Attaches EMPTY BPF programs (they return at once) to the syscall tracepoints Vigil hooks on the
overhead workload's path (openat, close, rename, unlink: enter and exit), and, separately, to the
raw sys_enter/sys_exit tracepoints, then times the same workload as bench/overhead.py with none,
with the per-syscall set and with the raw pair, interleaved. No program does any work: what is
left is the kernel's cost of running a tracepoint program at all. Compare bench/overhead.py's
"elsewhere" ratio with this one to see what Vigil's own programs add.

Run as root: .venv/bin/python bench/tracepoint_floor.py [--iterations N] [--runs R]
Prints min and median seconds and ratios to "none"; never asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vigil.kernel.loader import BpfObjectSpec, LoadedObject
from vigil.kernel.mounts import ensure_mounted

SOURCE = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
#define EMPTY(tp) SEC("tracepoint/syscalls/" #tp) int tp(void *ctx) { return 0; }
EMPTY(sys_enter_openat) EMPTY(sys_exit_openat) EMPTY(sys_enter_close) EMPTY(sys_exit_close)
EMPTY(sys_enter_rename) EMPTY(sys_exit_rename) EMPTY(sys_enter_unlink) EMPTY(sys_exit_unlink)
SEC("raw_tracepoint/sys_enter") int raw_enter(void *ctx) { return 0; }
SEC("raw_tracepoint/sys_exit") int raw_exit(void *ctx) { return 0; }
"""
PER_SYSCALL = ["sys_enter_openat", "sys_exit_openat", "sys_enter_close", "sys_exit_close",
               "sys_enter_rename", "sys_exit_rename", "sys_enter_unlink", "sys_exit_unlink"]
RAW = ["raw_enter", "raw_exit"]


def build(tmp: Path) -> Path:
    src, obj = tmp / "floor.bpf.c", tmp / "floor.bpf.o"
    src.write_text(SOURCE)
    triplet = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", f"-I/usr/include/{triplet.strip()}",
                    "-c", str(src), "-o", str(obj)], check=True)
    return obj


def workload(directory: Path, n: int) -> float:
    """The overhead benchmark's loop: create + write + close + rename + unlink."""
    t0 = time.perf_counter()
    for i in range(n):
        p = f"{directory}/f{i}"
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(fd, b"x" * 64)
        os.close(fd)
        os.rename(p, p + ".r")
        os.unlink(p + ".r")
    return time.perf_counter() - t0


def timed_with(obj: LoadedObject | None, progs: list[str], directory: Path, n: int) -> float:
    links = [obj.attach(p) for p in progs] if obj is not None else []
    try:
        return workload(directory, n)
    finally:
        for link in links:
            link.destroy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("tracepoint_floor.py: must run as root (it loads eBPF programs)", file=sys.stderr)
        return 2
    ensure_mounted(securityfs=False)
    modes: dict[str, list[float]] = {"none": [], "per-syscall tracepoints (8, empty)": [],
             "raw sys_enter/sys_exit (2, empty)": []}
    with tempfile.TemporaryDirectory(prefix="vigil-floor-") as tmp:
        work = Path(tmp) / "w"
        work.mkdir()
        obj = BpfObjectSpec.open(build(Path(tmp))).load()
        try:
            for r in range(args.runs):
                order = list(modes)[r % 3:] + list(modes)[:r % 3]  # rotate against drift
                for mode in order:
                    progs = (PER_SYSCALL if mode.startswith("per") else
                             RAW if mode.startswith("raw") else [])
                    modes[mode].append(timed_with(obj if progs else None, progs, work,
                                                  args.iterations))
        finally:
            obj.close()
    base_min = min(modes["none"])
    base_med = statistics.median(modes["none"])
    print(f"workload: {args.iterations} x (create+write+close+rename+unlink), {args.runs} rounds,"
          f" nproc {os.cpu_count()}, kernel {os.uname().release}")
    print(f"{'mode':<36} {'min s':>7} {'med s':>7} {'min x':>6} {'med x':>6}")
    for mode, times in modes.items():
        mn, md = min(times), statistics.median(times)
        print(f"{mode:<36} {mn:7.3f} {md:7.3f} {mn / base_min:6.3f} {md / base_med:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
