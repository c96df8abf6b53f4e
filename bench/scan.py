"""Benchmark: `vigil scan --init/--check` against `aide --init/--check` on the same generated tree.

Owns generating the tree (about 20,000 small files plus a few large ones), running both tools
several times in the same run with equivalent sha256-only rules, and printing min/median seconds,
files/s, MB/s, the vigil/aide ratio, and vigil's peak RSS at two tree sizes (memory must stay flat).
Prints numbers; never asserts timings. Installs Debian's aide when it is missing (needs root).

    .venv/bin/python bench/scan.py [--small 20000] [--large 3] [--large-mb 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_aide() -> str:
    found = shutil.which("aide")
    if found:
        return found
    print("installing aide (apt-get install -y aide) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "aide"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return shutil.which("aide") or "/usr/bin/aide"


def make_tree(root: Path, small: int, large: int, large_mb: int) -> tuple[int, int]:
    rng = random.Random(42)
    total = 0
    for i in range(small):
        d = root / f"d{i % 200:03d}"
        if i < 200:
            d.mkdir(parents=True)
        data = rng.randbytes(rng.randint(200, 4000))
        (d / f"file{i:06d}.dat").write_bytes(data)
        total += len(data)
    chunk = rng.randbytes(1 << 20)
    for j in range(large):
        with open(root / f"large{j}.bin", "wb") as fh:
            for k in range(large_mb):
                fh.write(chunk[k:] + chunk[:k])
        total += large_mb << 20
    return small + large, total


def run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(p.pid, 0)
    took = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        err = p.stderr.read().decode() if p.stderr else ""
        raise SystemExit(f"{cmd[0]} exited {code}: {err}")
    return took, usage.ru_maxrss


def vigil_cmd(mode: str, tree: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "vigil.fim.oneshot", mode, "--watch", str(tree), "--db", str(db)]


def aide_conf(work: Path, tree: Path) -> Path:
    conf = work / "aide.conf"
    conf.write_text(f"""database_in=file:{work}/aide.db
database_out=file:{work}/aide.db.new
gzip_dbout=no
report_url=stdout
# the same checks as vigil's default: type, mode, inode, owner, group, size, mtime, sha256
VigilRule = ftype+p+i+u+g+s+m+sha256
{tree} VigilRule
""")
    return conf


def stats(label: str, times: list[float], files: int, nbytes: int) -> float:
    best, med = min(times), statistics.median(times)
    print(f"  {label:<14} min {best:7.3f}s  median {med:7.3f}s  "
          f"{files / best:10.0f} files/s  {nbytes / best / 1e6:8.1f} MB/s")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--large", type=int, default=3)
    ap.add_argument("--large-mb", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rss-sizes", default="20000,100000",
                    help="small-file counts at which vigil's peak RSS is measured")
    a = ap.parse_args()
    aide = ensure_aide()
    ver = subprocess.run([aide, "--version"], capture_output=True, text=True)
    ver_line = (ver.stdout + ver.stderr).strip().splitlines()[:1] or ["aide ?"]
    print(f"{ver_line[0]}  python {sys.version.split()[0]}  cpus {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        files, nbytes = make_tree(tree, a.small, a.large, a.large_mb)
        print(f"tree: {files} files, {nbytes / 1e6:.0f} MB ({a.small} small + "
              f"{a.large} x {a.large_mb} MiB), page cache warm after one untimed pass each")
        db = work / "vigil.db"
        conf = aide_conf(work, tree)
        run(vigil_cmd("--init", tree, db))  # warm the cache for both
        run([aide, "--init", f"--config={conf}"])
        res: dict[str, list[float]] = {k: [] for k in ("vigil init", "vigil check", "aide init",
                                                       "aide check")}
        for _ in range(a.runs):
            db.unlink(missing_ok=True)
            res["vigil init"].append(run(vigil_cmd("--init", tree, db))[0])
            res["vigil check"].append(run(vigil_cmd("--check", tree, db))[0])
            res["aide init"].append(run([aide, "--init", f"--config={conf}"])[0])
            shutil.copy(work / "aide.db.new", work / "aide.db")
            res["aide check"].append(run([aide, "--check", f"--config={conf}"])[0])
        print(f"runs: {a.runs} (times include process start-up for both tools)")
        best = {k: stats(k, v, files, nbytes) for k, v in res.items()}
        print(f"  ratio init  vigil/aide speed: {best['aide init'] / best['vigil init']:.2f}x")
        print(f"  ratio check vigil/aide speed: {best['aide check'] / best['vigil check']:.2f}x")
        # Small files only (same hashing path as the reference number: 20k cached files)
        only_small = work / "small"
        only_small.mkdir()
        for d in tree.iterdir():
            if d.is_dir():
                d.rename(only_small / d.name)
        sconf = aide_conf(work, only_small)
        sdb = work / "small.db"
        t_v = [run(vigil_cmd("--init", only_small, sdb))[0] for _ in range(a.runs)]
        t_a = [run([aide, "--init", f"--config={sconf}"])[0] for _ in range(a.runs)]
        print(f"small files only ({a.small}):")
        sv = stats("vigil init", t_v, a.small, 0)
        sa = stats("aide init", t_a, a.small, 0)
        print(f"  ratio init  vigil/aide speed: {sa / sv:.2f}x")
    print("peak RSS of `vigil scan --init` (flat = nothing per file held in memory):")
    for n in (int(x) for x in a.rss_sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="vigil-rss-") as tmp:
            tree = Path(tmp) / "tree"
            make_tree(tree, n, 0, 0)
            took, rss = run(vigil_cmd("--init", tree, Path(tmp) / "v.db"))
            _, rss_check = run(vigil_cmd("--check", tree, Path(tmp) / "v.db"))
            print(f"  {n:>7} files: init {rss / 1024:6.1f} MiB ({took:.2f}s), "
                  f"check {rss_check / 1024:6.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
