"""process.hash.sha256 of executed images (vigil.enrich.exehash): the cache by (device, inode,
change time, size), the byte budget and the size limit with their skip reasons, images read
through /proc/PID/exe of live processes this test starts (a deleted file, a memfd), the
identity checks (start time, the kernel's inode), the config section, the ECS field and Sigma's
``Hashes``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil.config import ConfigError, RulesConfig, load_config
from vigil.enrich.exehash import BUDGET, GONE, REPLACED, TOO_LARGE, ExeHasher
from vigil.enrich.process import ProcessTable
from vigil.enrich.users import NameCache
from vigil.events.layout import Flag
from vigil.events.model import ExecEvent, Process
from vigil.events.pipeline import Pipeline
from vigil.events.truncated import kernel_dev
from vigil.outputs.ecs import exec_to_ecs
from vigil.rules.detector import Detector
from vigil.rules.fieldmap import ecs_to_records
from vigil.rules.ruleset import build_ruleset

SLEEP = "/usr/bin/sleep"
OWN_NS = os.stat("/proc/self/ns/mnt").st_ino
NO_PID = 2 ** 22 + 7   # above pid_max: no such process


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def start_time(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rindex(b")") + 2:].split()[19])


def proc(exe: bytes, pid: int = 1, start: int | None = None) -> Process:
    return Process(pid=pid, tid=pid, ppid=0, start_time=start_time(pid) if start is None
                   else start, parent_start_time=0, uid=0, gid=0, euid=0, egid=0,
                   auid=0xFFFFFFFF, session_id=0, comm=b"x", cgroup_id=0, mnt_ns=OWN_NS,
                   executable=exe)


def exec_of(exe: str | Path, pid: int = 1) -> ExecEvent:
    return ExecEvent(1, proc(os.fsencode(exe), pid))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prog(tmp_path: Path) -> Path:
    p = tmp_path / "prog"
    p.write_bytes(b"\x7fELF" + os.urandom(5000))
    return p


def test_hash_is_the_files_and_a_second_exec_reads_nothing(prog: Path) -> None:
    h = ExeHasher(1 << 30, 1 << 30)
    first, second = exec_of(prog), exec_of(prog)
    h.apply(first)
    h.apply(second)
    assert first.sha256 == second.sha256 == sha(prog)
    assert first.hash_skipped is None
    assert (h.hashed, h.cache_hits, h.bytes_hashed) == (1, 1, 5004)


def test_a_changed_file_is_hashed_again(prog: Path) -> None:
    h = ExeHasher(1 << 30, 1 << 30)
    h.apply(exec_of(prog))
    with open(prog, "r+b") as f:   # same size, same inode: only the change time tells
        f.write(b"\x7fELG")
    ev = exec_of(prog)
    h.apply(ev)
    assert ev.sha256 == sha(prog) and h.hashed == 2
    ctime = prog.stat().st_ctime_ns
    while prog.stat().st_ctime_ns == ctime:   # a chmod: new ctime, same content
        os.chmod(prog, 0o700 if prog.stat().st_mode & 0o777 != 0o700 else 0o755)
    h.apply(exec_of(prog))
    assert h.hashed == 3 and h.cache_hits == 0


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    h = ExeHasher(1 << 30, 1 << 30, cache_entries=2)
    files = []
    for i in range(3):
        files.append(tmp_path / f"p{i}")
        files[-1].write_bytes(bytes([i]) * 10)
        h.apply(exec_of(files[-1]))
    h.apply(exec_of(files[0]))   # the oldest was dropped: read again
    assert (h.hashed, h.cache_hits) == (4, 0)
    h.apply(exec_of(files[2]))
    assert h.cache_hits == 1


def test_over_the_budget_a_miss_is_skipped_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    h = ExeHasher(1000, 1 << 20, clock=clock)
    big, small = tmp_path / "big", tmp_path / "small"
    big.write_bytes(b"b" * 1500)
    small.write_bytes(b"s" * 10)
    first = exec_of(big)
    h.apply(first)   # the bucket held 1000: read whole, the bucket goes below zero
    assert first.sha256 == sha(big)
    ev = exec_of(small)
    h.apply(ev)
    assert ev.sha256 is None and ev.hash_skipped == BUDGET
    hit = exec_of(big)
    h.apply(hit)     # a hit costs nothing from the budget
    assert hit.sha256 == sha(big)
    clock.now += 0.4   # 400 bytes back: still below zero
    h.apply(ev := exec_of(small))
    assert ev.hash_skipped == BUDGET
    clock.now += 0.2
    h.apply(ev := exec_of(small))
    assert ev.sha256 == sha(small)
    assert h.counts() == {"exe_hash_skipped": 2} and h.skipped[BUDGET] == 2


def test_a_file_over_the_size_limit_is_not_read(prog: Path) -> None:
    h = ExeHasher(1 << 30, 5000)
    ev = exec_of(prog)
    h.apply(ev)
    assert ev.sha256 is None and ev.hash_skipped == TOO_LARGE and h.hashed == 0


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A copy of sleep running from ``tmp_path``, stopped at the end."""
    copy = tmp_path / "sleeper"
    shutil.copy(SLEEP, copy)
    p = subprocess.Popen([str(copy), "30"])
    try:
        deadline = time.monotonic() + 10   # until the exec is done
        while os.readlink(f"/proc/{p.pid}/exe") != str(copy) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield p, copy
    finally:
        p.kill()
        p.wait()


def deleted_exec(p: subprocess.Popen[bytes], copy: Path, start: int | None = None) -> ExecEvent:
    return ExecEvent(1, proc(os.fsencode(copy) + b" (deleted)", p.pid, start),
                     int(Flag.EXE_DELETED))


def test_a_deleted_program_is_read_through_its_live_process(
        sleeper: tuple[subprocess.Popen[bytes], Path]) -> None:
    p, copy = sleeper
    want = sha(copy)
    copy.unlink()
    ev = deleted_exec(p, copy)
    h = ExeHasher(1 << 30, 1 << 30)
    h.apply(ev)
    assert ev.sha256 == want and ev.hash_skipped is None


def test_another_process_under_the_same_pid_is_not_read(
        sleeper: tuple[subprocess.Popen[bytes], Path]) -> None:
    p, copy = sleeper
    copy.unlink()
    ev = deleted_exec(p, copy, start=start_time(p.pid) + 1)
    ExeHasher(1 << 30, 1 << 30).apply(ev)
    assert ev.sha256 is None and ev.hash_skipped == GONE


def test_a_deleted_program_whose_process_exited_is_gone(
        sleeper: tuple[subprocess.Popen[bytes], Path]) -> None:
    p, copy = sleeper
    ev = deleted_exec(p, copy)
    copy.unlink()
    p.kill()
    p.wait()
    ExeHasher(1 << 30, 1 << 30).apply(ev)
    assert ev.hash_skipped == GONE


def test_a_memfd_program_is_read_through_its_live_process() -> None:
    code = ("import os\nfd = os.memfd_create('vigil-hash')\n"
            f"os.write(fd, open({SLEEP!r}, 'rb').read())\n"
            "os.execve(fd, ['sleep', '30'], {})\n")
    p = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while not os.readlink(f"/proc/{p.pid}/exe").startswith("/memfd:") \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        ev = ExecEvent(1, proc(b"/memfd:vigil-hash (deleted)", p.pid), int(Flag.EXE_DELETED))
        ExeHasher(1 << 30, 1 << 30).apply(ev)
    finally:
        p.kill()
        p.wait()
    assert ev.sha256 == sha(SLEEP)


def test_a_file_replaced_after_the_exec_is_read_through_the_process(
        sleeper: tuple[subprocess.Popen[bytes], Path], tmp_path: Path) -> None:
    p, copy = sleeper
    st = copy.stat()
    want = sha(copy)
    impostor = tmp_path / "impostor"
    impostor.write_bytes(b"not what ran")
    os.rename(impostor, copy)
    dev = kernel_dev(os.major(st.st_dev), os.minor(st.st_dev))
    start = start_time(p.pid)

    def ev() -> ExecEvent:
        return ExecEvent(1, proc(os.fsencode(copy), p.pid, start), exe_ino=st.st_ino,
                          exe_dev=dev, exe_ctime_ns=st.st_ctime_ns)

    h = ExeHasher(1 << 30, 1 << 30)
    h.apply(live := ev())
    assert live.sha256 == want
    p.kill()
    p.wait()
    h.apply(later := ev())   # that inode was hashed: the cache knows it
    assert later.sha256 == want
    fresh = ExeHasher(1 << 30, 1 << 30)
    fresh.apply(gone := ev())
    assert gone.sha256 is None and gone.hash_skipped == REPLACED
    same = ExecEvent(1, proc(os.fsencode(copy), p.pid, start=0), exe_ino=copy.stat().st_ino)
    fresh.apply(same)   # the kernel's inode is the file's: read by its path
    assert same.sha256 == sha(copy)


def test_the_kernels_inode_finds_a_cached_hash_without_touching_the_file(prog: Path) -> None:
    st = prog.stat()
    dev = kernel_dev(os.major(st.st_dev), os.minor(st.st_dev))

    def ev(ctime: int) -> ExecEvent:
        e = ExecEvent(1, proc(os.fsencode(prog)), exe_ino=st.st_ino, exe_dev=dev,
                       exe_ctime_ns=ctime)
        e.process.pid = NO_PID
        return e

    h = ExeHasher(1 << 30, 1 << 30)
    h.apply(first := ev(st.st_ctime_ns))
    want = sha(prog)
    prog.unlink()   # nothing left to read: a hash now comes from the cache alone
    h.apply(again := ev(st.st_ctime_ns))
    assert first.sha256 == again.sha256 == want and (h.hashed, h.cache_hits) == (1, 1)
    h.apply(changed := ev(st.st_ctime_ns + 1))   # another version of that inode: not cached
    assert changed.sha256 is None and changed.hash_skipped == GONE


def test_a_file_gone_before_its_short_lived_process_was_seen(tmp_path: Path) -> None:
    p = tmp_path / "gone"
    ev = exec_of(p, pid=1)
    ev.process.pid = NO_PID
    ExeHasher(1 << 30, 1 << 30).apply(ev)
    assert ev.hash_skipped == GONE


# ---- where it runs and how it shows -------------------------------------------------------


def test_the_pipeline_hashes_reported_execs_and_counts_skips(prog: Path, tmp_path: Path) -> None:
    h = ExeHasher(1 << 30, 4)
    pl = Pipeline(lambda _p: False, ProcessTable(proc_root=tmp_path), NameCache(),
                  lambda _fid: None, exe_hasher=h)
    [ev] = pl.process([exec_of(prog)])
    assert isinstance(ev, ExecEvent) and ev.hash_skipped == TOO_LARGE
    assert pl.counts()["exe_hash_skipped"] == 1
    quiet = Pipeline(lambda _p: False, ProcessTable(proc_root=tmp_path), NameCache(),
                     lambda _fid: None, exe_hasher=h, report_processes=False)
    assert quiet.process([exec_of(prog)]) == [] and h.counts()["exe_hash_skipped"] == 1


RULE = """
title: Known bad binary
id: 11111111-2222-4333-8444-555555555555
status: test
logsource: {product: linux, category: process_creation}
detection:
    selection:
        Hashes|contains: 'SHA256=%s'
    condition: selection
level: high
"""


def test_ecs_field_and_sigma_hashes(prog: Path, tmp_path: Path) -> None:
    ev = exec_of(prog)
    ExeHasher(1 << 30, 1 << 30).apply(ev)
    who = exec_to_ecs(exec_of(prog), {})["process"]
    doc = exec_to_ecs(ev, {})
    assert doc["process"]["hash"] == {"sha256": sha(prog)}
    assert "hash" not in who and "hash_skipped" not in doc["vigil"]["process"]
    [(_, rec)] = [cr for cr in ecs_to_records(doc) if cr[0] == "process_creation"]
    assert rec["Hashes"] == "SHA256=" + sha(prog).upper()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yml").write_text(RULE % sha(prog))   # lower case: Sigma is case-insensitive
    det = Detector(build_ruleset(RulesConfig(builtin=False, paths=(rules,))), 60, host={})
    assert len(det.process([ev])) == 1
    other = exec_of(SLEEP)
    ExeHasher(1 << 30, 1 << 30).apply(other)
    assert det.process([other]) == []
    skipped = exec_of(prog)
    skipped.hash_skipped = BUDGET
    sdoc = exec_to_ecs(skipped, {})
    assert sdoc["vigil"]["process"]["hash_skipped"] == "budget"
    assert "hash" not in sdoc["process"]


def test_config_section_and_its_errors(tmp_path: Path) -> None:
    assert load_config(None).exec_hash.enabled
    f = tmp_path / "v.yaml"
    f.write_text("exec_hash:\n  enabled: false\n  max_file_size: 1048576\n")
    cfg = load_config(f).exec_hash
    assert (cfg.enabled, cfg.max_file_size, cfg.max_bytes_per_second) == (
        False, 1 << 20, 64 << 20)
    for text, line, needle in (
            ("exec_hash:\n  max_bytes_per_second: 0\n", 2, "'max_bytes_per_second' must be >= 1"),
            ("\nexec_hash:\n  max_file_size: -1\n", 3, "'max_file_size' must be >= 1"),
            ("exec_hash:\n  enabled: 1\n", 2, "'enabled' must be true or false"),
            ("exec_hash:\n  max_size: 3\n", 2, "did you mean 'max_file_size'"),
            ("exec_hash: true\n", 1, "exec_hash must be a mapping")):
        f.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(f)
        assert str(e.value).startswith(f"{f}:{line}: ") and needle in str(e.value), e.value
