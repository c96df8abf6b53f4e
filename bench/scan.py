"""Benchmark: `vigil scan --init/--check` against `aide --init/--check` on the same generated tree.

Owns generating the tree (about 20,000 small files plus a few large ones), running both tools
several times in the same run with equivalent sha256-only rules, and printing min/median seconds,
files/s, MB/s, the vigil/aide ratios (of the mins and of the medians), and vigil's peak RSS at two
tree sizes (memory must stay flat). Prints numbers; never asserts timings. Installs Debian's aide
when it is missing (needs root).

Like with like: every timed init of either tool writes a fresh database (vigil's file is deleted
first, AIDE always writes database_out anew); every check of either tool reads and hashes every
file and compares it with the baseline the init before it wrote, and finds nothing changed (vigil
writes nothing during a check; AIDE --check writes no database). Runs of the two tools alternate,
so a noisy neighbour costs both. Times include process start-up for both: vigil's children get a
bytecode cache (PYTHONPYCACHEPREFIX in a temporary directory, filled by an untimed run), as an
installed Python package has; --no-bytecode-cache compiles every module on every run instead.
AIDE runs with its default num_workers (1) unless --aide-workers says otherwise.

    .venv/bin/python bench/scan.py [--small 20000] [--large 3] [--large-mb 64] [--runs 3]
        [--compare-tree DIR] [--aide-workers N] [--no-bytecode-cache]
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


CHILD_ENV = dict(os.environ)


def child_env(cache: Path | None) -> None:
    """vigil's children: with a bytecode cache in ``cache`` (None: as the caller's environment
    says, which may compile every module every time)."""
    if cache is not None:
        CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(cache)


def run(cmd: list[str], ok: tuple[int, ...] = (0,), src: Path = ROOT) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process (vigil's from checkout ``src``)."""
    env = CHILD_ENV if src == ROOT else {**CHILD_ENV, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=src,
                         env=env)
    _, status, usage = os.wait4(p.pid, 0)
    took = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        err = p.stderr.read().decode() if p.stderr else ""
        raise SystemExit(f"{cmd[0]} exited {code}: {err}")
    return took, usage.ru_maxrss


def vigil_cmd(mode: str, tree: Path, db: Path) -> list[str]:
    """``python -m vigil.fim.oneshot``: what `vigil scan` runs, without the CLI's imports."""
    return [sys.executable, "-m", "vigil.fim.oneshot", mode, "--watch", str(tree), "--db", str(db)]


def aide_conf(work: Path, tree: Path, workers: int | None) -> Path:
    conf = work / "aide.conf"
    threads = "" if workers is None else f"num_workers={workers}\n"
    conf.write_text(f"""database_in=file:{work}/aide.db
database_out=file:{work}/aide.db.new
gzip_dbout=no
report_url=stdout
{threads}# vigil's default checks: type, mode, inode, owner, group, size, mtime, sha256 (and
# ctime and security.* xattrs, which AIDE is not asked for: one syscall more per file for vigil)
VigilRule = ftype+p+i+u+g+s+m+sha256
{tree} VigilRule
""")
    return conf


def stats(label: str, times: list[float], files: int, nbytes: int) -> None:
    best, med = min(times), statistics.median(times)
    rate = f"  {nbytes / best / 1e6:8.1f} MB/s" if nbytes else ""
    print(f"  {label:<14} min {best:7.3f}s  median {med:7.3f}s  {files / best:10.0f} files/s"
          f"{rate}")


def ratio(what: str, vigil: list[float], aide: list[float]) -> None:
    """AIDE's time over vigil's: how many times faster vigil is (min of each, median of each)."""
    print(f"  speed of {what:<11} over aide's: min {min(aide) / min(vigil):.2f}x  "
          f"median {statistics.median(aide) / statistics.median(vigil):.2f}x")


def fresh_init(db: Path) -> str:
    """Delete vigil's database (and its WAL): the next --init writes a new one."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return "--init"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--large", type=int, default=3)
    ap.add_argument("--large-mb", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rss-sizes", default="20000,100000",
                    help="small-file counts at which vigil's peak RSS is measured")
    ap.add_argument("--aide-workers", type=int, default=None,
                    help="AIDE's num_workers (default: AIDE's own default, 1)")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="run vigil as the environment says (PYTHONDONTWRITEBYTECODE=1 and no "
                    "__pycache__ compile every module on every run)")
    ap.add_argument("--compare-tree", type=Path, metavar="DIR",
                    help="also run the vigil of checkout DIR (e.g. `git worktree add DIR "
                    "HEAD~1`), alternating in the same runs, labelled 'other'")
    a = ap.parse_args()
    aide = ensure_aide()
    ver = subprocess.run([aide, "--version"], capture_output=True, text=True)
    ver_line = (ver.stdout + ver.stderr).strip().splitlines()[:1] or ["aide ?"]
    print(f"{ver_line[0]} (num_workers {a.aide_workers or 'default (1)'})  "
          f"python {sys.version.split()[0]}  cpus {os.cpu_count()}")
    vigils = {"vigil": ROOT}
    if a.compare_tree:
        vigils["other"] = a.compare_tree.resolve()
        print(f"'vigil' is {ROOT}, 'other' is {vigils['other']}")
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        work = Path(tmp)
        child_env(None if a.no_bytecode_cache else work / "pycache")
        print("vigil bytecode: " + ("as the environment says" if a.no_bytecode_cache else
                                    "cached (as installed), filled by the untimed first run"))
        tree = work / "tree"
        files, nbytes = make_tree(tree, a.small, a.large, a.large_mb)
        print(f"tree: {files} files, {nbytes / 1e6:.0f} MB ({a.small} small + "
              f"{a.large} x {a.large_mb} MiB), page cache warm after one untimed pass each")
        db = work / "vigil.db"
        conf = aide_conf(work, tree, a.aide_workers)
        for src in vigils.values():  # warm the page cache (and the bytecode cache)
            run(vigil_cmd(fresh_init(db), tree, db), src=src)
        run([aide, "--init", f"--config={conf}"])
        res: dict[str, list[float]] = {f"{v} {m}": [] for v in (*vigils, "aide")
                                       for m in ("init", "check")}
        for _ in range(a.runs):
            for name, src in vigils.items():
                res[f"{name} init"].append(run(vigil_cmd(fresh_init(db), tree, db), src=src)[0])
                res[f"{name} check"].append(run(vigil_cmd("--check", tree, db), src=src)[0])
            res["aide init"].append(run([aide, "--init", f"--config={conf}"])[0])
            shutil.copy(work / "aide.db.new", work / "aide.db")
            res["aide check"].append(run([aide, "--check", f"--config={conf}"])[0])
        print(f"runs: {a.runs}, alternating (times include process start-up for both tools; "
              "init: a fresh database each; check: every file read, hashed and compared with "
              "the baseline, nothing changed)")
        for k, v in res.items():
            stats(k, v, files, nbytes)
        for name in vigils:
            for m in ("init", "check"):
                ratio(f"{name} {m}", res[f"{name} {m}"], res[f"aide {m}"])
        # Small files only (same hashing path as the reference number: 20k cached files)
        only_small = work / "small"
        only_small.mkdir()
        for d in tree.iterdir():
            if d.is_dir():
                d.rename(only_small / d.name)
        sconf = aide_conf(work, only_small, a.aide_workers)
        sdb = work / "small.db"
        for src in vigils.values():  # untimed: both caches warm
            run(vigil_cmd(fresh_init(sdb), only_small, sdb), src=src)
        run([aide, "--init", f"--config={sconf}"])
        small: dict[str, list[float]] = {k: [] for k in (*vigils, "aide")}
        for _ in range(a.runs):
            for name, src in vigils.items():
                small[name].append(run(vigil_cmd(fresh_init(sdb), only_small, sdb), src=src)[0])
            (work / "aide.db.new").unlink(missing_ok=True)
            small["aide"].append(run([aide, "--init", f"--config={sconf}"])[0])
        print(f"small files only ({a.small}), init, a fresh database each run, alternating:")
        for k, v in small.items():
            stats(f"{k} init", v, a.small, 0)
        for name in vigils:
            ratio(f"{name} init", small[name], small["aide"])
        print("peak RSS of `vigil scan --init` (flat = nothing per file held in memory):")
        for n in (int(x) for x in a.rss_sizes.split(",")):
            with tempfile.TemporaryDirectory(prefix="vigil-rss-") as rtmp:
                rtree = Path(rtmp) / "tree"
                make_tree(rtree, n, 0, 0)
                took, rss = run(vigil_cmd("--init", rtree, Path(rtmp) / "v.db"))
                _, rss_check = run(vigil_cmd("--check", rtree, Path(rtmp) / "v.db"))
                print(f"  {n:>7} files: init {rss / 1024:6.1f} MiB ({took:.2f}s), "
                      f"check {rss_check / 1024:6.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
