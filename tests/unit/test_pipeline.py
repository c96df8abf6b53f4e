"""The pipeline's pure logic: canonical paths, write pairing, exit finalisation, filtering."""

from __future__ import annotations

import os
from pathlib import Path

from vigil.enrich.process import ProcessTable
from vigil.enrich.users import NameCache
from vigil.events.layout import Flag, RawFile
from vigil.events.model import ExitEvent, FileEvent, FileOp, Process
from vigil.events.pipeline import Pipeline, normalize


def proc(pid: int = 100) -> Process:
    return Process(pid=pid, tid=pid, ppid=1, start_time=5, parent_start_time=1, uid=0, gid=0,
                   euid=0, egid=0, auid=0xFFFFFFFF, session_id=0xFFFFFFFF, comm=b"t",
                   cgroup_id=1, mnt_ns=1, executable=b"/bin/t", args=[b"t"])


def make(watched: bytes, tmp: Path) -> tuple[Pipeline, list[int]]:
    forgotten: list[int] = []
    pl = Pipeline(lambda p: p == watched or p.startswith(watched + b"/"),
                  ProcessTable(proc_root=tmp), NameCache(), forgotten.append)
    return pl, forgotten


def test_normalize() -> None:
    assert normalize(b"//etc/./ssh/../passwd") == b"/etc/passwd"
    assert normalize(b"/tmp/../etc/shadow") == b"/etc/shadow"
    assert normalize(b"/../..") == b"/"
    assert normalize(b"/a/b/") == b"/a/b"


def test_dotdot_escape_is_caught(tmp_path: Path) -> None:
    w = tmp_path / "w"
    w.mkdir()
    (tmp_path / "other").mkdir()
    pl, _ = make(os.fsencode(w), tmp_path)
    sneaky = os.fsencode(tmp_path / "other" / ".." / "w" / "f")
    ev = FileEvent(1, FileOp.DELETE, sneaky, proc(), flags=Flag.FROM_ARG | Flag.UNNORMALIZED)
    out = pl.process([ev])
    assert [e.path for e in out if isinstance(e, FileEvent)] == [os.fsencode(w / "f")]


def test_symlinked_directory_resolves(tmp_path: Path) -> None:
    w = tmp_path / "w"
    w.mkdir()
    (tmp_path / "link").symlink_to(w)
    pl, _ = make(os.fsencode(w), tmp_path)
    ev = FileEvent(1, FileOp.DELETE, os.fsencode(tmp_path / "link" / "f"), proc(),
                   flags=Flag.FROM_ARG)
    (out,) = pl.process([ev])
    assert isinstance(out, FileEvent) and out.path == os.fsencode(w / "f")


def test_final_symlink_is_not_followed(tmp_path: Path) -> None:
    w = tmp_path / "w"
    w.mkdir()
    (w / "sl").symlink_to(tmp_path)
    pl, _ = make(os.fsencode(w), tmp_path)
    ev = FileEvent(1, FileOp.DELETE, os.fsencode(w / "sl"), proc(), flags=Flag.FROM_ARG)
    (out,) = pl.process([ev])
    assert isinstance(out, FileEvent) and out.path == os.fsencode(w / "sl")


def test_unwatched_is_filtered(tmp_path: Path) -> None:
    pl, _ = make(b"/nonexistent/w", tmp_path)
    ev = FileEvent(1, FileOp.DELETE, b"/nonexistent/wx", proc())
    assert pl.process([ev]) == []
    assert pl.filtered == 1


def test_rename_out_of_tree_is_kept(tmp_path: Path) -> None:
    pl, _ = make(b"/w", tmp_path)
    ev = FileEvent(1, FileOp.RENAME, b"/w/a", proc(), target_path=b"/elsewhere/a")
    assert pl.process([ev]) == [ev]


def test_create_then_close_pairs(tmp_path: Path) -> None:
    pl, forgotten = make(b"/w", tmp_path)
    opened = FileEvent(1, FileOp.CREATE, b"/w/n", proc())
    out = pl.process([RawFile(opened, 9, created=True),
                      FileEvent(2, FileOp.MODIFY, b"/w/n", proc(), file_id=9),
                      ExitEvent(3, proc(), 0)])
    assert [type(e).__name__ for e in out] == ["FileEvent", "FileEvent", "ExitEvent"]
    assert forgotten == []  # closed normally: nothing left to finish at exit


def test_exit_finishes_files_left_open(tmp_path: Path) -> None:
    pl, forgotten = make(b"/w", tmp_path)
    opened = FileEvent(1, FileOp.CREATE, b"/w/kept", proc(7))
    pl.process([RawFile(opened, 11, created=False)])
    out = pl.process([ExitEvent(5, proc(7), 0, flags=Flag.PENDING_WRITES)])
    mods = [e for e in out if isinstance(e, FileEvent)]
    assert [(m.op, m.path) for m in mods] == [(FileOp.MODIFY, b"/w/kept")]
    assert forgotten == [11]


def test_last_close_after_exit_is_the_one_modify(tmp_path: Path) -> None:
    # VFS backends: the exit record comes first, then __fput's "modified" for the file.
    forgotten: list[int] = []
    pl = Pipeline(lambda p: p.startswith(b"/w/"), ProcessTable(proc_root=tmp_path), NameCache(),
                  forgotten.append, closes_at_exit=False)
    pl.process([RawFile(FileEvent(1, FileOp.CREATE, b"/w/kept", proc(7)), 11, created=False)])
    out = pl.process([ExitEvent(5, proc(7), 0)])
    assert not [e for e in out if isinstance(e, FileEvent)]
    out = pl.process([FileEvent(6, FileOp.MODIFY, b"/w/kept", proc(7), file_id=11)])
    assert [(e.op, e.path) for e in out if isinstance(e, FileEvent)] == \
        [(FileOp.MODIFY, b"/w/kept")]
    assert forgotten == []


def test_iso_timestamps() -> None:
    from vigil.outputs.ecs import iso

    assert iso(0) == "1970-01-01T00:00:00.000000Z"
    assert iso(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"
    assert iso(1_700_000_001_000_000_000) == "2023-11-14T22:13:21.000000Z"


def test_renamed_directory_is_resolved_afresh(tmp_path: Path) -> None:
    w = tmp_path / "w"
    (w / "d").mkdir(parents=True)
    (tmp_path / "link").symlink_to(w / "d")
    pl, _ = make(os.fsencode(w), tmp_path)
    link = os.fsencode(tmp_path / "link")
    assert pl.canonical(link + b"/a", Flag.FROM_ARG) == os.fsencode(w / "d" / "a")
    (w / "d").rename(w / "e")  # the cached resolution of link/ is now wrong...
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to(w / "e")
    # ...until the rename's event passes through the pipeline
    pl._invalidate_dirs(FileEvent(2, FileOp.RENAME, os.fsencode(w / "d"), proc(),
                                  target_path=os.fsencode(w / "e")))
    assert pl.canonical(link + b"/b", Flag.FROM_ARG) == os.fsencode(w / "e" / "b")
