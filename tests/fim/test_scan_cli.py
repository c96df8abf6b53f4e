"""``vigil scan`` (the installed command) as a user would run it: an incomplete check has its own
exit status, 3 (issue 11, item 6); any user can run it on a readable tree (item 3); a change with
no diff because of the diff quota says so (item 6)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from fimutil import ROOT, make_config, oneshot, scan

from vigil.fim.store import Store

b = os.fsencode
VIGIL = ROOT / ".venv" / "bin" / "vigil"


def test_max_files_stop_is_incomplete_not_clean(tmp_path: Path, tree: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"directories": [{"path": str(tree)}],
                                   "database": str(tmp_path / "b.db"),
                                   "scan": {"max_files": 2}}))
    assert oneshot("--init", "--config", str(cfg)).returncode == 0
    r = oneshot("--check", "--config", str(cfg))
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "check incomplete: stopped at scan.max_files=2" in r.stderr
    assert "INCOMPLETE" in r.stdout
    (tree / "a.txt").write_text("changed\n")  # the root and a.txt come first: checked, 1 wins
    r = oneshot("--check", "--config", str(cfg))
    assert r.returncode == 1 and "check incomplete" in r.stderr


def test_directory_without_a_baseline_makes_the_check_incomplete(tmp_path: Path,
                                                                 tree: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("x")
    db = str(tmp_path / "b.db")
    assert oneshot("--init", "--watch", str(tree), "--db", db).returncode == 0
    r = oneshot("--check", "--watch", str(tree), "--watch", str(other), "--db", db)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert f"no baseline yet for {other}" in r.stderr
    assert "added" not in r.stdout  # its files are not changes: it has no baseline to differ from
    assert oneshot("--init", "--watch", str(tree), "--watch", str(other), "--db", db
                   ).returncode == 0
    r = oneshot("--check", "--watch", str(tree), "--watch", str(other), "--db", db)
    assert (r.returncode, r.stderr) == (0, "")


def _traversable_by(user: pwd.struct_passwd, path: Path) -> list[str]:
    """The ancestors of ``path`` that ``user`` cannot search (o+x, or owner/group bits)."""
    bad = []
    for p in [path, *path.parents]:
        st = p.stat()
        bits = stat.S_IXUSR if st.st_uid == user.pw_uid else \
            stat.S_IXGRP if st.st_gid == user.pw_gid else stat.S_IXOTH
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & bits:
            bad.append(f"{p} ({stat.filemode(st.st_mode)})")
    return bad


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to user nobody")
def test_installed_vigil_scan_runs_as_an_unprivileged_user(public_tmp: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    python = (VIGIL.parent / "python3").resolve()
    blocked = _traversable_by(nobody, VIGIL.parent) + _traversable_by(nobody, python.parent)
    blocked += _traversable_by(nobody, ROOT / "vigil")
    # Not worked around: a user who cannot reach the interpreter or the code cannot run Vigil.
    assert not blocked, f"user nobody cannot reach {VIGIL}'s interpreter or code: {blocked}"
    tree = public_tmp / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "app.conf").write_text("setting = 1\n")
    (tree / "bin").mkdir()
    (tree / "bin" / "tool").write_text("#!/bin/sh\n")
    dbdir = public_tmp / "state"
    dbdir.mkdir(mode=0o700)
    os.chown(dbdir, nobody.pw_uid, nobody.pw_gid)
    db = dbdir / "b.db"

    def vigil(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "nobody", "--", str(VIGIL), "scan", *args,
                               "--watch", str(tree), "--db", str(db)],
                              capture_output=True, text=True, timeout=120, cwd="/")

    r = vigil("--init")
    assert r.returncode == 0, r.stderr
    assert db.stat().st_uid == nobody.pw_uid
    r = vigil("--check")
    assert (r.returncode, r.stderr) == (0, ""), r.stdout
    (tree / "etc" / "app.conf").write_text("setting = 2\n")
    r = vigil("--check")
    assert r.returncode == 1, r.stderr
    assert any("app.conf" in ln and "modified" in ln for ln in r.stdout.splitlines()), r.stdout


def test_change_without_diff_because_of_the_quota_says_so(
        tmp_path: Path, tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(tmp_path, tree, report_changes=True,
                      diff={"quota_mb": 1, "max_file_size": 600_000})
    scan(cfg)
    big = [tree / f"big{i}.txt" for i in range(4)]
    for p in big:  # ~580 KB of hex text each, ~300 KB compressed: the oldest are dropped
        p.write_text(os.urandom(300_000).hex()[:580_000])
    with caplog.at_level("WARNING"):
        scan(cfg)
    assert "diff quota full" in caplog.text and "diff_unavailable" in caplog.text
    with Store(cfg.database) as s:
        gone = [p for p in big if s.get_content(b(p)) is None]
        kept = [p for p in big if s.get_content(b(p)) is not None]
    assert gone and kept
    for p in gone + kept:
        p.write_text(p.read_text()[:-1] + "!")
    evs = {e.path: e for e in scan(cfg) if e.path != b(tree)}
    for p in gone:
        assert evs[b(p)].diff is None and evs[b(p)].diff_unavailable == "quota"
    for p in kept:
        assert evs[b(p)].diff and evs[b(p)].diff_unavailable is None
    # report_changes off: no diff and no reason (nothing was ever wanted)
    (tmp_path / "plain").mkdir()
    plain = make_config(tmp_path / "plain", tree)
    scan(plain)
    big[0].write_text("short now\n")
    (ev,) = [e for e in scan(plain) if e.path == b(big[0])]
    assert ev.diff is None and ev.diff_unavailable is None
    from vigil.outputs.ecs_fim import fim_to_ecs
    from vigil.outputs.pretty import fim_to_line

    ev = evs[b(gone[0])]
    assert fim_to_ecs(ev, {})["vigil"]["fim"]["diff_unavailable"] == "quota"
    assert "(no diff: quota)" in fim_to_line(ev)


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to user nobody")
def test_unreadable_files_and_directories_make_the_check_incomplete(public_tmp: Path) -> None:
    tree = public_tmp / "tree"
    (tree / "locked").mkdir(parents=True)
    (tree / "locked" / "x").write_text("x")
    (tree / "locked").chmod(0o700)  # root's: nobody cannot list it
    (tree / "secret").write_text("s")
    (tree / "secret").chmod(0o600)  # nor read this
    (tree / "ok").write_text("ok")
    dbdir = public_tmp / "db"
    dbdir.mkdir()
    os.chown(dbdir, 65534, 65534)
    db = str(dbdir / "b.db")
    r = oneshot("--init", "--watch", str(tree), "--db", db, user="nobody")
    assert r.returncode == 0 and "baseline incomplete" in r.stderr, r.stderr
    r = oneshot("--check", "--watch", str(tree), "--db", db, user="nobody")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "1 directories could not be read; 1 files could not be read" in r.stderr
    assert "0 changes" in r.stdout
