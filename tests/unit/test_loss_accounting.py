"""Every loss or skipped piece of work is counted and said: the agent's drop accounting, the
pipeline's counters (cut paths, open files beyond its limit), failed /proc reads and the marker
of a cut path. The real kernel side: tests/kernel/test_counted_losses.py."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from vigil import losses
from vigil.agent import Agent
from vigil.config import load_config
from vigil.enrich.process import ProcessTable
from vigil.enrich.users import NameCache
from vigil.events import pipeline as pipeline_mod
from vigil.events.layout import Clock, Decoder, Flag, RawFile
from vigil.events.model import ExitEvent, FileEvent, FileOp, LostEvents, Process
from vigil.events.pipeline import Pipeline
from vigil.events.truncated import TruncatedPaths, kernel_dev, parse_mountinfo, watched_devices
from vigil.losses import DROP_KINDS, RunSummary
from vigil.outputs.ecs import file_to_ecs
from vigil.outputs.pretty import PrettySink


def proc(pid: int = 100) -> Process:
    return Process(pid=pid, tid=pid, ppid=1, start_time=5, parent_start_time=1, uid=0, gid=0,
                   euid=0, egid=0, auid=0xFFFFFFFF, session_id=0xFFFFFFFF, comm=b"t",
                   cgroup_id=1, mnt_ns=1, executable=b"/bin/t", args=[b"t"])


# ---- the agent: which counters are losses, events-lost, rescans ------------------------------


class FakeBackend:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def counters(self) -> dict[str, int]:
        return dict(self.values)


class FakeFim:
    def __init__(self) -> None:
        self.rescans = 0

    def rescan_after_drops(self) -> None:
        self.rescans += 1

    def counters(self) -> dict[str, int]:
        return {"scans_failed": 1, "diffs_unavailable_quota": 2}


class Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, events: Sequence[Any]) -> None:
        self.events.extend(events)

    def close(self) -> None:
        pass


@pytest.fixture
def agent(tmp_path: Path) -> tuple[Agent, FakeBackend, FakeFim, Collect]:
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(f"database: {tmp_path}/b.db\nstate_dir: {tmp_path}/s\n"
                   f"directories:\n  - path: {tmp_path}\n")
    sink = Collect()
    a = Agent(load_config(cfg), [sink])
    fim = FakeFim()
    a._fim = cast(Any, fim)
    return a, FakeBackend(), fim, sink


@pytest.mark.parametrize("kind,local", [
    ("wfiles_full", False), ("wfiles_evicted", False), ("uring_reqs_evicted", False),
    ("malformed", True), ("open_files_evicted", True),
])
def test_each_loss_is_an_events_lost_and_a_rescan(kind: str, local: bool,
                                                   agent: tuple[Agent, FakeBackend, FakeFim,
                                                                Collect]) -> None:
    a, backend, fim, sink = agent
    assert kind in DROP_KINDS
    a._check_drops(cast(Any, backend), {})
    (backend.values if not local else {})[kind] = 3
    a._check_drops(cast(Any, backend), {kind: 3} if local else {})
    (lost,) = [e for e in sink.events if isinstance(e, LostEvents)]
    assert (lost.kind, lost.count) == (kind.removesuffix("_full"), 3)
    assert fim.rescans == 1
    a._check_drops(cast(Any, backend), {kind: 3} if local else {})  # nothing new: nothing said
    assert len(sink.events) == 1 and fim.rescans == 1
    assert f"{kind.removesuffix('_full')} 3" in a.summary.line()


def test_cut_paths_rescan_without_events_lost(agent: tuple[Agent, FakeBackend, FakeFim,
                                                           Collect]) -> None:
    a, backend, fim, sink = agent
    a._check_drops(cast(Any, backend), {"path_truncated": 2, "proc_read_failed": 5})
    assert sink.events == [] and fim.rescans == 1
    a._check_drops(cast(Any, backend), {"path_truncated": 2, "proc_read_failed": 9})
    assert fim.rescans == 1  # failed /proc reads: said in the summary, no rescan
    assert a.summary.line().endswith("; incomplete (path_truncated 2, proc_read_failed 9, "
                                     "exe_hash_skipped 0); "
                                     "baseline (scans_failed 1, diffs_unavailable_quota 2)")


def test_summary_names_every_counter() -> None:
    line = RunSummary(drops={"wfiles_full": 1, "malformed": 2}).line()
    for kind in DROP_KINDS + losses.PARTIAL_KINDS:
        if kind not in ("drop_unknown", "tail_call_failed"):   # said only when not 0
            assert f"{losses.kind_of(kind)} " in line, kind
    assert "1 dropped by the kernel side" in line and "2 lost in user space" in line


def test_decoder_malformed_counter_is_read() -> None:
    d = Decoder(Clock(0, 100))
    assert d.decode(b"\x01\x00") is None and d.decode(bytes(16)) is None
    assert losses.decoder_counts(d) == {"malformed": 2}


# ---- the pipeline ------------------------------------------------------------------------------


def make(tmp: Path, truncated: TruncatedPaths | None = None,
         watched: bytes = b"/w") -> tuple[Pipeline, list[int]]:
    forgotten: list[int] = []
    pl = Pipeline(lambda p: p == watched or p.startswith(watched + b"/"),
                  ProcessTable(proc_root=tmp), NameCache(), forgotten.append, truncated=truncated)
    return pl, forgotten


MOUNTINFO = (b"22 27 0:21 / /proc rw - proc proc rw\n"
             b"27 1 254:0 / / rw - ext4 /dev/vda rw\n"
             b"30 27 254:16 / /srv/data rw - ext4 /dev/vdb rw\n"
             b"31 27 254:32 / /w/mnt\\040point rw - ext4 /dev/vdc rw\n")


def test_mountinfo_and_watched_devices(tmp_path: Path) -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert (b"/w/mnt point", kernel_dev(254, 32)) in mounts
    # /w is on the root filesystem, with a mount below it; /srv/data is elsewhere
    assert watched_devices([b"/w"], mounts) == {kernel_dev(254, 0), kernel_dev(254, 32)}
    assert watched_devices([b"/srv/data/x"], mounts) == {kernel_dev(254, 16)}


def judge(tmp_path: Path, roots: Sequence[bytes]) -> TruncatedPaths:
    info = tmp_path / "mountinfo"
    info.write_bytes(MOUNTINFO)
    return TruncatedPaths(roots, mountinfo=info)


CUT = b"/d/d/d/secret"  # what the kernel knows of /w/<70 x d>/secret


def test_cut_path_that_may_be_watched_is_reported_marked(tmp_path: Path) -> None:
    tp = judge(tmp_path, [b"/w"])
    pl, _ = make(tmp_path, tp)
    on_root = FileEvent(1, FileOp.DELETE, CUT, proc(), flags=Flag.PATH_TRUNC,
                        device=kernel_dev(254, 0))
    no_device = FileEvent(2, FileOp.DELETE, CUT, proc(), flags=Flag.PATH_TRUNC | Flag.FROM_ARG)
    unknown = FileEvent(3, FileOp.DELETE, CUT, proc(), flags=Flag.PATH_TRUNC,
                        device=kernel_dev(8, 1))
    out = pl.process([on_root, no_device, unknown])
    assert out == [on_root, no_device, unknown]
    assert [e.path for e in out if isinstance(e, FileEvent)] == [CUT] * 3  # left as sent
    assert pl.counts()["path_truncated"] == 3
    assert pl.baseline_events(list(out)) == []  # the baseline learns them from the rescan
    doc = file_to_ecs(on_root, {})
    assert doc["vigil"]["file"]["path_truncated"] is True
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        assert "[path truncated by the kernel]" in PrettySink(fd, colour=False).line(on_root)
    finally:
        os.close(fd)


def test_cut_path_on_a_device_without_watched_trees_is_filtered(tmp_path: Path) -> None:
    tp = judge(tmp_path, [b"/w"])
    pl, _ = make(tmp_path, tp)
    elsewhere = FileEvent(1, FileOp.DELETE, CUT, proc(), flags=Flag.PATH_TRUNC,
                          device=kernel_dev(254, 16))
    assert pl.process([elsewhere]) == []
    assert pl.filtered == 1 and tp.outside == 1 and pl.counts()["path_truncated"] == 0


def test_rename_with_a_whole_watched_side_is_kept(tmp_path: Path) -> None:
    tp = judge(tmp_path, [b"/w"])
    pl, _ = make(tmp_path, tp)
    ev = FileEvent(1, FileOp.RENAME, CUT, proc(), target_path=b"/w/x",
                   flags=Flag.PATH_TRUNC, device=kernel_dev(254, 16))
    assert pl.process([ev]) == [ev]


def test_cut_write_open_keeps_its_mark_until_the_exit(tmp_path: Path) -> None:
    pl, forgotten = make(tmp_path)
    opened = FileEvent(1, FileOp.CREATE, CUT, proc(7), flags=Flag.PATH_TRUNC)
    assert pl.process([RawFile(opened, 11, created=True)]) == [opened]
    out = pl.process([ExitEvent(5, proc(7), 0)])
    (mod,) = [e for e in out if isinstance(e, FileEvent)]
    assert mod.op == FileOp.MODIFY and mod.flags & Flag.PATH_TRUNC and forgotten == [11]
    assert pl.baseline_events(out) == [e for e in out if not isinstance(e, FileEvent)]


def test_open_files_beyond_the_limit_are_counted(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_mod, "MAX_OPEN_FILES", 4)
    pl, _ = make(tmp_path)
    pl.process([RawFile(FileEvent(i, FileOp.CREATE, b"/w/f%d" % i, proc()), i + 1,
                        created=False) for i in range(6)])
    assert pl.counts()["open_files_evicted"] == 2


def test_failed_proc_reads_are_counted(tmp_path: Path) -> None:
    table = ProcessTable(proc_root=tmp_path)  # an empty /proc: every read fails
    pl = Pipeline(lambda p: True, table, NameCache(), lambda fid: None)
    gone = proc(4242)
    gone.executable = gone.args = None
    pl.process([FileEvent(1, FileOp.DELETE, b"/w/x", gone)])
    assert pl.counts()["proc_read_failed"] == 2  # the process and its parent


class Spooled(Collect):
    """A sink that drops (a syslog spool past its bound) and says so in its stats."""

    name = "siem"

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def stats(self) -> dict[str, int]:
        return {"dropped": self.dropped, "spool_bytes": 0}


def test_an_outputs_drops_are_an_events_lost_in_every_output(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(f"database: {tmp_path}/b.db\nstate_dir: {tmp_path}/s\n"
                   f"directories:\n  - path: {tmp_path}\n")
    spooled, other = Spooled(), Collect()
    a = Agent(load_config(cfg), [spooled, other])
    fim = FakeFim()
    a._fim = cast(Any, fim)
    backend = FakeBackend()
    a._check_drops(cast(Any, backend), {})
    assert other.events == []
    spooled.dropped = 7
    a._check_drops(cast(Any, backend), {})
    a._check_drops(cast(Any, backend), {})           # nothing new: nothing said
    for sink in (spooled, other):
        (lost,) = sink.events
        assert isinstance(lost, LostEvents) and (lost.kind, lost.count) == ("output:siem", 7)
    assert fim.rescans == 0                            # the watched files lost nothing
