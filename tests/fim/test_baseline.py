"""A directory's first baseline is silent (issue 11, item 4), on a real tree and the real SQLite
file, through the scanner and through the FIM service ``vigil run`` uses; and a database from
before schema 3 (no table of established directories) keeps reporting what changed."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from fimutil import scan, stored

from vigil.config import Config, load_config
from vigil.fim.service import COUNTERS, FimService
from vigil.fim.store import SCHEMA_VERSION, Store
from vigil.outputs.ecs_fim import fim_to_ecs
from vigil.outputs.pretty import fim_to_line

b = os.fsencode


def config(tmp: Path, *dirs: Path, **top: object) -> Config:
    p = tmp / "vigil.yaml"
    p.write_text(yaml.safe_dump({"directories": [{"path": str(d)} for d in dirs],
                                 "database": str(tmp / "db" / "b.db"),
                                 "scan": {"interval": 0}, **top}))
    return load_config(p)


def make_tree(root: Path, n: int) -> Path:
    for i in range(n):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"f{i}").write_text(f"file {i}\n")
    return root


def test_directory_new_to_an_existing_baseline_is_established_silently(tmp_path: Path) -> None:
    old, new = make_tree(tmp_path / "old", 5), make_tree(tmp_path / "new", 30)
    scan(config(tmp_path, old))
    # while stopped: a change to a baselined file, an addition; and a directory joins the config
    (old / "d0" / "f0").write_text("changed\n")
    (old / "planted").write_text("x")
    cfg = config(tmp_path, old, new)
    evs = scan(cfg)
    got = sorted((e.action, e.path) for e in evs if e.path != b(old / "d0") and e.path != b(old))
    assert got == [("added", b(old / "planted")), ("baseline-established", b(new)),
                   ("modified", b(old / "d0" / "f0"))]
    (est,) = [e for e in evs if e.action == "baseline-established"]
    assert est.scan is not None and est.scan["files"] == 1 + 3 + 30  # the root, 3 dirs, 30 files
    assert len([p for p in stored(cfg) if p.startswith(b(new))]) == 34
    assert scan(cfg) == []
    (new / "later").write_text("y")  # now it has a baseline: additions are changes
    assert [(e.action, e.path) for e in scan(cfg) if e.path != b(new)] == [
        ("added", b(new / "later"))]
    # both outputs say what it is
    line = fim_to_line(est)
    assert "baseline-established" in line and str(new) in line and "34 files" in line
    doc = fim_to_ecs(est, {"hostname": "h"})
    assert doc["event"]["action"] == "baseline-established"
    assert doc["event"]["dataset"] == "vigil.fim" and doc["file"]["path"] == str(new)
    assert doc["vigil"]["fim"]["scan"]["files"] == 34
    json.dumps(doc)


def test_cut_short_first_baseline_stays_unestablished(tmp_path: Path) -> None:
    """A first baseline stopped at scan.max_files is not established: the next scan goes on
    recording silently instead of reporting the rest as added."""
    root = make_tree(tmp_path / "t", 12)
    cfg = config(tmp_path, root, scan={"interval": 0, "max_files": 5})
    assert scan(cfg) == []
    with Store(cfg.database) as s:
        assert s.established() == set()
    cfg = config(tmp_path, root)
    (est,) = scan(cfg)
    assert est.action == "baseline-established"


def test_known_rows_under_a_new_directory_are_still_compared(tmp_path: Path) -> None:
    """/etc/ssh added beside an established /etc: its files already have rows (from /etc's
    walk), and a change to them while stopped is still reported."""
    root = make_tree(tmp_path / "t", 6)
    scan(config(tmp_path, root))
    (root / "d1" / "f1").write_text("tampered\n")
    (root / "d1" / "brand-new").write_text("n")
    cfg = config(tmp_path, root, root / "d1")
    evs = {(e.path, e.action) for e in scan(cfg)}
    assert (b(root / "d1" / "f1"), "modified") in evs
    assert (b(root / "d1"), "baseline-established") in evs
    # new to a first baseline: recorded silently
    assert not any(p == b(root / "d1" / "brand-new") for p, _ in evs)
    assert b(root / "d1" / "brand-new") in stored(cfg)


def _downgrade_to_schema_2(db: Path) -> None:
    """What a Vigil from before schema 3 left: no roots/meta/content_evicted, no ctime/xattrs."""
    con = sqlite3.connect(db)
    for table in ("roots", "content_evicted", "meta"):
        con.execute(f"DROP TABLE {table}")
    for col in ("ctime_ns", "xattrs"):
        con.execute(f"ALTER TABLE files DROP COLUMN {col}")
    con.execute("UPDATE schema_version SET version = 2")
    con.commit()
    con.close()


def test_database_from_schema_2_keeps_reporting(tmp_path: Path) -> None:
    old, new = make_tree(tmp_path / "old", 4), make_tree(tmp_path / "new", 4)
    cfg1 = config(tmp_path, old)
    scan(cfg1)
    _downgrade_to_schema_2(cfg1.database)
    (old / "d2" / "f2").write_text("changed while stopped\n")
    (old / "planted").write_text("x")
    cfg = config(tmp_path, old, new)
    evs = scan(cfg)
    got = sorted((e.action, e.path) for e in evs if e.path not in (b(old), b(old / "d2")))
    assert got == [("added", b(old / "planted")), ("baseline-established", b(new)),
                   ("modified", b(old / "d2" / "f2"))]
    with Store(cfg.database) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.established() == {b(old), b(new)} and not s.legacy_roots_pending()
        rows = [s.get(b(old / "d0" / "f0")), s.get(b(old))]
        assert all(r is not None and r.ctime_ns and r.xattrs is not None for r in rows)
    assert scan(cfg) == [], "upgrading must not make every file look changed"


def _drain(svc: FimService, timeout: float = 30) -> list[object]:
    out: list[object] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out += svc.tick(time.time_ns())
        if svc.idle():
            return out + svc.tick(time.time_ns())
        time.sleep(0.02)
    raise AssertionError("the FIM service's scan did not finish")


def test_service_first_baseline_one_line_and_one_event_per_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, c = make_tree(tmp_path / "a", 40), make_tree(tmp_path / "c", 3)
    cfg = config(tmp_path, a)
    svc = FimService(cfg)
    svc.start()
    try:
        (est,) = _drain(svc)
    finally:
        svc.close()
    assert est.action == "baseline-established" and est.source == "initial-scan"  # type: ignore
    (a / "d0" / "f0").write_text("changed\n")
    svc = FimService(config(tmp_path, a, c))  # a directory joins an existing baseline
    svc.start()
    try:
        evs = _drain(svc)
        counters = svc.counters()
    finally:
        svc.close()
    got = sorted((e.action, e.path) for e in evs if e.path != b(a / "d0"))  # type: ignore
    assert got == [("baseline-established", b(c)), ("modified", b(a / "d0" / "f0"))]
    err = [ln for ln in capsys.readouterr().err.splitlines() if "baseline established" in ln]
    assert len(err) == 2 and str(c) in err[1] and "1 directories" in err[1]
    assert set(counters) == set(COUNTERS)
    assert counters["baselines_established"] == 1 and counters["scans_completed"] == 1


def test_service_reports_incomplete_and_failed_scans(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", 20)
    cfg = config(tmp_path, a, scan={"interval": 0, "max_files": 10})
    svc = FimService(cfg)
    svc.start()
    try:
        evs = _drain(svc)
        (inc,) = [e for e in evs if e.action == "scan-incomplete"]  # type: ignore
        assert inc.scan["max_files_reached"] is True and inc.scan["files"] == 10  # type: ignore
        assert "scan.max_files=10" in inc.scan["reason"]  # type: ignore
        doc = fim_to_ecs(inc, {})  # type: ignore[arg-type]
        assert doc["event"]["action"] == "scan-incomplete" and "file" not in doc
        assert doc["vigil"]["fim"]["scan"]["roots"] == [str(a)]
        assert "scan-incomplete" in fim_to_line(inc)  # type: ignore[arg-type]
        # A real failure: another process holds the database's write lock for longer than the
        # busy timeout, so the rescan after drops cannot even start.
        con = sqlite3.connect(cfg.database, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        try:
            svc.rescan_after_drops()
            evs = _drain(svc, timeout=60)
        finally:
            con.execute("ROLLBACK")
            con.close()
        (failed,) = [e for e in evs if e.action == "scan-failed"]  # type: ignore
        assert failed.source == "rescan" and "locked" in failed.scan["reason"]  # type: ignore
        doc = fim_to_ecs(failed, {})  # type: ignore[arg-type]
        assert doc["event"]["outcome"] == "failure"
        counters = svc.counters()
    finally:
        svc.close()
    assert counters["scans_incomplete"] == 1 and counters["scan_max_files_stops"] == 1
    assert counters["scans_failed"] == 1
