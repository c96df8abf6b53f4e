"""The reconciler on real files with the real baseline, fed the FileEvents the kernel side would
emit for each operation (the end-to-end run with the agent lives with the agent's tests)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fimutil import by_path, make_config

from vigil.config import Config
from vigil.events.model import FileEvent, FileOp, Process
from vigil.fim import realtime as realtime_mod
from vigil.fim.realtime import Reconciler
from vigil.fim.scanner import Scanner
from vigil.fim.store import Store

b = os.fsencode
NS = 1_000_000_000


def proc(pid: int, comm: bytes) -> Process:
    return Process(pid=pid, tid=pid, ppid=1, start_time=100 + pid, parent_start_time=1, uid=0,
                   gid=0, euid=0, egid=0, auid=1000, session_id=1, comm=comm, cgroup_id=1,
                   mnt_ns=1)


SED, EDITOR, SHELL = proc(10, b"sed"), proc(11, b"vim"), proc(12, b"bash")


def ev(op: FileOp, path: Path | bytes, who: Process = SHELL, t: int = 0, **kw: object) -> FileEvent:
    p = path if isinstance(path, bytes) else b(path)
    if isinstance(kw.get("target_path"), Path):
        kw["target_path"] = b(kw["target_path"])  # type: ignore[arg-type]
    return FileEvent(timestamp_ns=t, op=op, path=p, process=who, **kw)  # type: ignore[arg-type]


@pytest.fixture
def rec(tmp_path: Path, tree: Path) -> tuple[Reconciler, Config]:
    cfg = make_config(tmp_path, tree, report_changes=True)
    store = Store(cfg.database)
    list(Scanner(cfg, store).scan("manual-scan"))
    return Reconciler(cfg, store), cfg


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_burst_of_writes_is_one_event_hashed_once(rec: tuple[Reconciler, Config], tree: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    r, _ = rec
    calls: list[bytes] = []
    real = realtime_mod.build_record
    monkeypatch.setattr(realtime_mod, "build_record",
                        lambda p, *a: calls.append(p) or real(p, *a))
    f = tree / "a.txt"
    events = []
    for i in range(5):
        with open(f, "a") as fh:
            fh.write(f"line {i}\n")
        events.append(ev(FileOp.MODIFY, f, SHELL, t=i))
    (out,) = r.handle(events, now_ns=10)
    assert (out.action, out.path, out.process, out.source) == ("modified", b(f), SHELL, "realtime")
    assert out.changed_attributes[0] == "size" and "sha256" in out.changed_attributes
    assert out.before["sha256"] == sha(b"alpha\n") and out.after["sha256"] == sha(f.read_bytes())
    assert out.diff is not None and out.diff.count("\n+line") == 5
    assert calls == [b(f)]
    assert r.store.get(b(f)).hashes["sha256"] == sha(f.read_bytes())  # type: ignore[union-attr]


def test_temp_then_rename_is_a_modification_by_the_writer(rec: tuple[Reconciler, Config],
                                                         tree: Path) -> None:
    r, _ = rec
    target, tmp = tree / "a.txt", tree / "sedAbC123"
    tmp.write_text("alpha\ngamma\n")  # what `sed -i` does: temp file, write, chmod, rename over
    out = r.handle([ev(FileOp.CREATE, tmp, SED, 1), ev(FileOp.MODIFY, tmp, SED, 2),
                    ev(FileOp.CHMOD, tmp, SED, 3)], now_ns=3)
    assert out == []  # a new file is held back: it may be a temp file
    os.replace(tmp, target)
    (out,) = r.handle([ev(FileOp.RENAME, tmp, SHELL, 4, target_path=target)], now_ns=4)
    assert (out.action, out.path, out.old_path, out.process) == ("modified", b(target), None, SED)
    assert "inode" in out.changed_attributes and "sha256" in out.changed_attributes
    assert out.before["sha256"] == sha(b"alpha\n") and out.after["sha256"] == sha(b"alpha\ngamma\n")
    assert out.diff and "+gamma" in out.diff
    assert r.store.get(b(tmp)) is None and r.flush(10 * NS) == []


def test_created_file_settles_after_quiet_period(rec: tuple[Reconciler, Config],
                                                 tree: Path) -> None:
    r, _ = rec
    f = tree / "new.txt"
    f.write_text("x")
    assert r.handle([ev(FileOp.CREATE, f, EDITOR, t=NS)], now_ns=NS) == []
    assert r.flush(NS + NS // 4) == []  # still in its quiet period
    (out,) = r.flush(2 * NS)
    assert (out.action, out.process, out.after["sha256"]) == ("added", EDITOR, sha(b"x"))
    # created then deleted before settling: a transient file, no FIM event
    g = tree / "transient"
    g.write_text("t")
    g.unlink()
    assert r.handle([ev(FileOp.CREATE, g, t=3 * NS), ev(FileOp.DELETE, g, t=3 * NS)], 3 * NS) == []
    assert r.flush(9 * NS) == []


def test_delete_rename_attributes(rec: tuple[Reconciler, Config], tree: Path) -> None:
    r, _ = rec
    a, moved, binf = tree / "a.txt", tree / "moved.txt", tree / "sub" / "b.bin"
    os.rename(a, moved)
    (out,) = r.handle([ev(FileOp.RENAME, a, SHELL, 1, target_path=moved)], 1)
    assert (out.action, out.path, out.old_path, out.changed_attributes) == (
        "renamed", b(moved), b(a), [])
    assert r.store.get(b(a)) is None and r.store.get(b(moved)) is not None
    binf.chmod(0o600)
    (out,) = r.handle([ev(FileOp.CHMOD, binf, SHELL, 2)], 2)
    assert (out.action, out.changed_attributes) == ("attributes-changed", ["mode"])
    os.chown(binf, 42, 43)
    (out,) = r.handle([ev(FileOp.CHOWN, binf, SHELL, 3, owner_uid=42, owner_gid=43)], 3)
    assert out.changed_attributes == ["uid", "gid"] and out.after["uid"] == 42
    # an xattr event is compared like any other: nothing on disk changed, nothing to report
    assert r.handle([ev(FileOp.SETXATTR, binf, SHELL, 4)], 4) == []
    binf.unlink()
    (out,) = r.handle([ev(FileOp.DELETE, binf, SHELL, 5)], 5)
    assert (out.action, out.process, out.before["type"]) == ("deleted", SHELL, "file")
    assert r.store.get(b(binf)) is None


def test_directory_rename_moves_rows(rec: tuple[Reconciler, Config], tree: Path) -> None:
    r, _ = rec
    os.rename(tree / "sub", tree / "sub2")
    (out,) = r.handle([ev(FileOp.RENAME, tree / "sub", target_path=tree / "sub2")], 1)
    assert (out.action, out.old_path) == ("renamed", b(tree / "sub"))
    assert r.store.get(b(tree / "sub2" / "b.bin")) is not None
    assert r.store.get(b(tree / "sub" / "b.bin")) is None
    assert list(r.startup_check()) == []  # the baseline matches the disk


def test_failed_attempts_change_nothing(rec: tuple[Reconciler, Config], tree: Path) -> None:
    r, _ = rec
    before = r.store.get(b(tree / "a.txt"))
    (tree / "a.txt").write_text("sneaky\n")
    assert r.handle([ev(FileOp.MODIFY, tree / "a.txt", errno=13),
                     ev(FileOp.DELETE, tree / "a.txt", errno=1)], 1) == []
    assert r.store.get(b(tree / "a.txt")) == before
    (out,) = list(r.startup_check())  # still found by a scan, without who-data
    assert (out.action, out.source, out.process) == ("modified", "startup-scan", None)


def test_changes_while_stopped_and_rescan(rec: tuple[Reconciler, Config], tree: Path) -> None:
    r, cfg = rec
    r.store.close()
    (tree / "a.txt").unlink()
    (tree / "c.txt").write_text("c")
    with Store(cfg.database) as store:
        r2 = Reconciler(cfg, store)
        evs = by_path(list(r2.startup_check()))
        assert {(p, e.action, e.source, e.process) for p, e in evs.items() if p != b(tree)} == {
            (b(tree / "a.txt"), "deleted", "startup-scan", None),
            (b(tree / "c.txt"), "added", "startup-scan", None)}
        (tree / "c.txt").write_text("cc")  # its events were dropped by the kernel side
        evs = by_path(list(r2.rescan([b(tree / "c.txt")])))
        assert evs[b(tree / "c.txt")].source == "rescan"
        assert evs[b(tree / "c.txt")].action == "modified"


def test_scheduled_only_directory_is_left_to_scans(tmp_path: Path, tree: Path) -> None:
    cfg = make_config(tmp_path, tree, realtime=False)
    with Store(cfg.database) as store:
        list(Scanner(cfg, store).scan("manual-scan"))
        r = Reconciler(cfg, store)
        (tree / "a.txt").write_text("z")
        assert r.handle([ev(FileOp.MODIFY, tree / "a.txt")], 1) == []
        (out,) = [e for e in Scanner(cfg, store).scan("scheduled-scan") if e.path != b(tree)]
        assert (out.action, out.source) == ("modified", "scheduled-scan")
