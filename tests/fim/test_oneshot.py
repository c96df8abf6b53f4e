"""`vigil scan --init/--check` as a subprocess: exit codes, reports, non-root use, kill -9."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fimutil import ROOT, oneshot

from vigil.fim.store import Store

b = os.fsencode


def test_exit_codes_and_check_leaves_baseline(tmp_path: Path, tree: Path) -> None:
    db = str(tmp_path / "b.db")
    r = oneshot("--check", "--watch", str(tree), "--db", db)
    assert r.returncode == 2 and "no baseline" in r.stderr
    r = oneshot("--init", "--watch", str(tree), "--db", db)
    assert r.returncode == 0, r.stderr
    assert "baseline: 4 entries" in r.stdout
    r = oneshot("--check", "--watch", str(tree), "--db", db)
    assert (r.returncode, r.stderr) == (0, "")
    (tree / "a.txt").write_text("changed\n")
    for _ in range(2):  # --check reports, never updates: the change stays reported
        r = oneshot("--check", "--watch", str(tree), "--db", db)
        assert r.returncode == 1
        line = next(ln for ln in r.stdout.splitlines() if "a.txt" in ln)
        assert "modified" in line and "[size, mtime, sha256]" in line and "by unknown" in line
    assert oneshot("--init", "--watch", str(tree), "--db", db).returncode == 0
    assert oneshot("--check", "--watch", str(tree), "--db", db).returncode == 0


def test_config_errors_exit_2(tmp_path: Path, tree: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"directories:\n  - path: {tree}\n    depht: 3\n")
    r = oneshot("--init", "--config", str(cfg), "--db", str(tmp_path / "b.db"))
    assert r.returncode == 2
    assert f"{cfg}:3: unknown key 'depht'" in r.stderr and "did you mean 'depth'" in r.stderr
    r = oneshot("--init", "--watch", str(tree / "missing"), "--db", str(tmp_path / "b.db"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_json_round_trips_odd_names(tmp_path: Path, tree: Path) -> None:
    db = str(tmp_path / "b.db")
    odd = b(tree) + b"/evil\nname\xff.sh"
    assert oneshot("--init", "--watch", str(tree), "--db", db).returncode == 0
    with open(odd, "wb") as fh:
        fh.write(b"#!/bin/sh\n")
    r = oneshot("--check", "--watch", str(tree), "--db", db, "--format", "json")
    assert r.returncode == 1
    docs = [json.loads(ln) for ln in r.stdout.splitlines()]
    (doc,) = [d for d in docs if d["vigil"]["fim"]["after"].get("type") == "file"]
    assert base64.b64decode(doc["file"]["path_bytes_b64"]) == odd
    assert doc["file"]["path"] == odd.decode("utf-8", "replace")
    assert doc["event"] == {"kind": "event", "category": ["file"], "type": ["creation"],
                            "action": "added", "dataset": "vigil.fim", "module": "vigil"}
    assert doc["file"]["hash"]["sha256"] and doc["vigil"]["fim"]["who_data"] == "unknown"
    ok = next(d for d in docs if d["file"]["path"] == str(tree))  # the directory: valid UTF-8
    assert "path_bytes_b64" not in ok["file"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to user nobody")
def test_non_root_unreadable_and_db_errors(public_tmp: Path) -> None:
    tree = public_tmp / "tree"
    tree.mkdir()
    (tree / "ok").write_text("ok")
    (tree / "secret").write_text("s")
    (tree / "secret").chmod(0)
    (tree / "locked").mkdir()
    (tree / "locked" / "x").write_text("x")
    dbdir = public_tmp / "db"
    dbdir.mkdir()
    os.chown(dbdir, 65534, 65534)
    db = str(dbdir / "b.db")
    # the default database (/var/lib/vigil) is not writable: a clear error, exit 2
    r = oneshot("--init", "--watch", str(tree), user="nobody")
    assert r.returncode == 2 and "use --db PATH" in r.stderr, r.stderr
    r = oneshot("--init", "--watch", str(tree), "--db", db, user="nobody")
    assert r.returncode == 0, r.stderr
    with Store(Path(db)) as s:
        rec = s.get(b(tree / "secret"))
        assert rec is not None and rec.hashes == {} and rec.error.startswith("EACCES")
        assert s.get(b(tree / "ok")).hashes  # type: ignore[union-attr]
        assert s.get(b(tree / "locked" / "x")) is not None
    (tree / "locked").chmod(0o700)  # now nobody cannot list it: its rows are unknown, not gone
    (tree / "secret").chmod(0o400)
    r = oneshot("--check", "--watch", str(tree), "--db", db, user="nobody")
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if "  " in ln]
    assert any("secret" in ln and "[mode]" in ln for ln in lines), r.stdout
    assert not any("deleted" in ln for ln in lines), r.stdout
    assert "locked: Permission denied" in r.stderr


def _tree(root: Path, n: int) -> dict[bytes, tuple[bytes, bytes]]:
    """n files holding their old content; returns path -> (old content, new content)."""
    out = {}
    for i in range(n):
        p = root / f"d{i % 17}" / f"f{i}"
        p.parent.mkdir(exist_ok=True)
        out[b(p)] = (f"old {i}\n".encode(), f"new content {i}\n".encode())
        p.write_bytes(out[b(p)][0])
    return out


def _wait_for_progress(db: Path, new_hashes: set[str], proc: subprocess.Popen[bytes],
                       at_least: int, timeout: float = 120.0) -> None:
    """Until ``at_least`` rows of ``db`` hold a new hash, or the scan has ended."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            done = sum(sha in new_hashes for (sha,) in
                       con.execute("SELECT sha256 FROM files WHERE kind = 'file'"))
        except sqlite3.OperationalError:  # the writer holds a lock this instant
            done = 0
        finally:
            con.close()
        if done >= at_least:
            return
        time.sleep(0.005)


@pytest.mark.slow
def test_kill_9_during_scan_then_restart(tmp_path: Path) -> None:
    import hashlib
    root = tmp_path / "t"
    root.mkdir()
    n = 20000
    files = _tree(root, n)
    db = tmp_path / "b.db"
    assert oneshot("--init", "--watch", str(root), "--db", str(db)).returncode == 0
    for p, (_, new) in files.items():  # the disk moves on; the baseline holds the old state
        Path(os.fsdecode(p)).write_bytes(new)
    new_hashes = {hashlib.sha256(new).hexdigest() for _, new in files.values()}
    rng = random.Random(1234)
    partial = 0
    for attempt in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "vigil.fim.oneshot", "--init", "--watch", str(root),
             "--db", str(db)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill once the scan has committed part of its work (however slow the machine is),
        # a little later each attempt; a scan that finishes first just makes that attempt whole.
        _wait_for_progress(db, new_hashes, proc, at_least=1 + attempt * rng.randint(500, 2000))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        con = sqlite3.connect(db)  # WAL recovery happens here
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {p: (sha, size) for p, sha, size in
                con.execute("SELECT path, sha256, size FROM files WHERE kind = 'file'")}
        con.close()
        assert set(rows) == set(files), attempt
        moved = 0
        for p, (sha, size) in rows.items():  # each row is the old or the new state, whole
            states = {hashlib.sha256(c).hexdigest(): len(c) for c in files[p]}
            assert states.get(sha) == size, (p, sha, size)
            moved += sha == hashlib.sha256(files[p][1]).hexdigest()
        partial += 0 < moved < n
        # a restart sees exactly the files the killed scan did not get to
        r = oneshot("--check", "--watch", str(root), "--db", str(db))
        modified = [ln for ln in r.stdout.splitlines() if ln.split()[1:2] == ["modified"]]
        assert r.returncode == (1 if moved < n else 0)
        assert len([ln for ln in modified if "/f" in ln]) == n - moved, (attempt, moved)
    assert partial, "no kill landed in the middle of a scan: make the tree larger"
    assert oneshot("--init", "--watch", str(root), "--db", str(db)).returncode == 0
    assert oneshot("--check", "--watch", str(root), "--db", str(db)).returncode == 0
