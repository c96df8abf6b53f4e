"""Nothing is lost without being counted and said, on the real kernel side.

- The LRU map of write-opens (``wfiles``), made small for the test (``VIGIL_TEST_MAP_ENTRIES``),
  holds fewer files than a child keeps open: each file either gets its "modified" at its close,
  or was evicted, or could not be tracked at all (an LRU insert can fail when no node is free
  on any CPU's list: ``wfiles``), and those two are counted exactly (``events-lost`` of kinds
  ``wfiles_evicted`` and ``wfiles``, and the summary line).
- The same for io_uring requests the tracepoint backend follows from submission to completion
  (``uring_reqs``): write-opens of FIFOs held in flight by a child (tests/kernel/uring_hold.c).
- A kernel-side handler emptied from the tail-call table (from outside, as root can): the
  events it would have built are lost, and that is counted and said (``tail_call_failed``).
- A file 70 levels below a watched directory: the kernel cannot walk its path to the end
  (64 components), so the event carries the part it knows and ``PATH_TRUNC``; it is reported,
  marked ``vigil.file.path_truncated``, and the rescan it starts puts the real path in the
  baseline.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import CHILD_PY, VIGIL, AgentProc, Event, get, under, write_config
from test_fim_agent import VerboseAgent, fim_at, keep_useful, scratch_dir

from vigil.kernel.mounts import ensure_mounted

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs the real eBPF agent"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="children use x86_64 syscalls"),
    pytest.mark.skipif(not VIGIL.exists(), reason=f"{VIGIL} missing: run ./do setup"),
]

WAIT = 60  # software-emulated VMs (./do test-kernels) are slow
# an agent's start (loading, the first scan): the kernel matrix raises it, as for conftest's agent
START = float(os.environ.get("VIGIL_TEST_START_TIMEOUT", "60"))


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = scratch_dir("vigil-losses-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def lost_of(agent: AgentProc, kind: str) -> int:
    return sum(get(e, "vigil.drops.count") for e in agent.matching(
        lambda e: get(e, "event.action") == "events-lost" and get(e, "vigil.drops.kind") == kind))


# ---------------------------------------------------------------------------------------------
# LRU evictions of wfiles

FILES = 1000
MAP_ENTRIES = 512  # so that a child holding FILES open for writing overflows it
HOLD = """
import os, resource, sys
W, N = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, N + 64), max(hard, N + 64)))
fds = [os.open(W + '/f%d' % i, os.O_CREAT | os.O_WRONLY, 0o644) for i in range(N)]
for fd in fds:
    os.close(fd)
print('closed', flush=True)
sys.stdin.read()  # alive until told: its exit would finish the files user space still holds
"""


def test_wfiles_evictions_are_counted_exactly(scratch: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    w = scratch / "w"
    w.mkdir()
    monkeypatch.setenv("VIGIL_TEST_MAP_ENTRIES", f"wfiles={MAP_ENTRIES}")
    mine = under(w)

    def keep(ev: Event) -> bool:
        return get(ev, "event.action") == "events-lost" or mine(ev)

    agent = AgentProc(["--no-exec", "--no-fim", "--watch", str(w)], db=scratch / "b.db",
                      keep=keep).start()
    child: subprocess.Popen[str] | None = None
    try:
        agent.probe(w, timeout=START)
        child = subprocess.Popen([CHILD_PY, "-c", HOLD, str(w), str(FILES)], text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline().strip() == "closed"
        agent.settle(w)  # every close the kernel reported has arrived

        def of_child(action: str) -> list[Event]:
            return [e for e in agent.matching(mine) if get(e, "process.pid") == child.pid
                    and get(e, "event.action") == action]

        created, modified = len(of_child("created")), len(of_child("modified"))
        assert created == FILES
        missing = FILES - modified
        assert missing >= FILES - MAP_ENTRIES, f"only {missing} of {FILES} without a modified"

        def said() -> tuple[int, int]:
            return lost_of(agent, "wfiles_evicted"), lost_of(agent, "wfiles")

        # reported live, within the agent's one-second look at its counters
        try:
            agent.wait_for(lambda e: sum(said()) >= missing, timeout=WAIT)
        except AssertionError as e:
            raise AssertionError(f"{e}: {missing} files without a modified, events-lost say "
                                 f"(evicted, untracked) {said()}; agent stderr:\n"
                                 + "\n".join(agent.stderr_lines[-15:])) from None
        assert sum(said()) == missing, said()
        evicted, untracked = said()
    finally:
        if child is not None:
            child.communicate("", timeout=60)
        rc, summary = agent.stop()
    assert rc == 0, "\n".join(agent.stderr_lines[-20:])
    assert summary is not None, "\n".join(agent.stderr_lines[-20:])
    print(f"\n{summary.line}")
    assert (summary.counts["wfiles_evicted"], summary.counts["wfiles"]) == (evicted, untracked)
    assert evicted > 0 and summary.dropped >= missing


# ---------------------------------------------------------------------------------------------
# LRU evictions of uring_reqs (the tracepoint backend's io_uring requests)

REQUESTS = 200
URING_ENTRIES = 64
HOLD_SOURCE = Path(__file__).with_name("uring_hold.c")


def _uring_complete_names_the_request() -> bool:
    fmt = Path("/sys/kernel/tracing/events/io_uring/io_uring_complete/format")
    try:
        return "* req;" in fmt.read_text()
    except OSError:
        return False


def test_uring_reqs_evictions_are_counted_exactly(scratch: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    backend = os.environ.get("VIGIL_TEST_BACKEND", "tracepoint")
    if backend != "tracepoint":
        pytest.skip(f"the {backend} backend sees io_uring's opens below io_uring (no uring_reqs)")
    ensure_mounted(securityfs=False)
    if not _uring_complete_names_the_request():
        pytest.skip("io_uring_complete does not name the request on this kernel (5.10): the "
                    "tracepoint backend follows no io_uring request there")
    exe = scratch / "uring_hold"
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(HOLD_SOURCE),
                        "-luring"], capture_output=True, text=True)
    assert r.returncode == 0, f"building {HOLD_SOURCE.name} (liburing-dev):\n{r.stderr}"
    w = scratch / "w"
    w.mkdir()
    monkeypatch.setenv("VIGIL_TEST_MAP_ENTRIES", f"uring_reqs={URING_ENTRIES}")
    mine = under(w)

    def keep(ev: Event) -> bool:
        return get(ev, "event.action") == "events-lost" or mine(ev)

    agent = AgentProc(["--no-exec", "--no-fim", "--watch", str(w), "--backend", "tracepoint"],
                      db=scratch / "b.db", keep=keep).start()
    try:
        agent.probe(w, timeout=START)
        child = subprocess.Popen([str(exe), str(w), str(REQUESTS)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip() == f"opened {REQUESTS}", out + err
        agent.settle(w)
        modified = [e for e in agent.matching(mine) if get(e, "event.action") == "modified"
                    and get(e, "process.pid") == child.pid]
        missing = REQUESTS - len(modified)
        assert missing >= REQUESTS - URING_ENTRIES, f"{len(modified)} modified"

        def said() -> tuple[int, int]:
            return lost_of(agent, "uring_reqs_evicted"), lost_of(agent, "inflight")

        try:
            agent.wait_for(lambda e: sum(said()) >= missing, timeout=WAIT)
        except AssertionError as e:
            raise AssertionError(f"{e}: {missing} opens without a modified, events-lost say "
                                 f"(evicted, not followed) {said()}") from None
        assert sum(said()) == missing, said()
        evicted = said()[0]
    finally:
        rc, summary = agent.stop()
    assert rc == 0 and summary is not None, "\n".join(agent.stderr_lines[-20:])
    print(f"\n{summary.line}")
    assert evicted > 0 and summary.counts["uring_reqs_evicted"] == evicted


# ---------------------------------------------------------------------------------------------
# Paths deeper than the kernel walks

DEPTH = 70


def test_file_deeper_than_the_kernel_walks_is_reported_and_rescanned(scratch: Path) -> None:
    w = scratch / "w"
    deep = w.joinpath(*["d"] * DEPTH)
    deep.mkdir(parents=True)
    secret = deep / "secret"
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(w)}])
    agent = VerboseAgent(["--no-exec", "--config", str(cfg)], db=scratch / "state" /
                         "baseline.db", keep=keep_useful).start()
    try:
        agent.wait_log("initial-scan:", timeout=START)
        agent.probe(w, timeout=START)
        child = subprocess.run([CHILD_PY, "-c", "import sys\nwith open(sys.argv[1], 'wb') as f:"
                                "\n    f.write(b'planted\\n')", str(secret)], check=True)
        assert child.returncode == 0

        def cut(ev: Event) -> bool:
            return (get(ev, "event.dataset") == "vigil.file"
                    and get(ev, "vigil.file.path_truncated") is True)

        events = agent.wait_for(cut, timeout=WAIT)
        # the part of the path the kernel knows: the last components, ending with the file
        known = str(get(events[0], "file.path"))
        assert str(secret).endswith(known) and known.endswith("/d/d/secret"), known
        assert {get(e, "event.action") for e in events} <= {"created", "modified"}
        # the rescan it started finds the file under its real path
        agent.wait_log("rescan:", timeout=START)
        (added,) = agent.wait_for(fim_at(secret, "added"), timeout=WAIT)
        assert get(added, "vigil.fim.source") == "rescan"
    finally:
        agent.stop_ok()
    _rc, summary = agent.stop()
    assert summary is not None
    assert summary.counts["path_truncated"] >= 1, summary.line


# ---------------------------------------------------------------------------------------------
# A handler the kernel side cannot reach


def map_ids_held_by(pid: int) -> set[int]:
    """The ids of the BPF maps process ``pid`` holds a descriptor of."""
    ids = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:bpf-map":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        ids.update(int(line.split()[1]) for line in info.splitlines()
                   if line.startswith("map_id:"))
    return ids


def test_a_handler_that_cannot_be_reached_is_a_counted_loss(scratch: Path) -> None:
    """The agent fills the tail-call table before it attaches a program that calls into it, so
    no tail call fails; one that does (here: the file syscalls' exit handler taken out of the
    agent's table with bpftool) loses the event it would have built, counted and said."""
    w = scratch / "w"
    w.mkdir()
    f = w / "f"
    f.write_bytes(b"x")
    mine = under(w)
    agent = AgentProc(["--no-exec", "--no-fim", "--watch", str(w)], db=scratch / "b.db",
                      keep=lambda e: get(e, "event.action") == "events-lost" or mine(e)).start()
    try:
        agent.probe(w, timeout=START)
        maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], check=True,
                                         capture_output=True, text=True).stdout)
        (table,) = [m["id"] for m in maps if m.get("name") == "handlers"
                    and m["id"] in map_ids_held_by(agent.pid)]
        # slot 0: H_SYS_EXIT (bpf/syscalls_file.bpf.h), reached by every backend's xattr exits
        subprocess.run(["bpftool", "map", "delete", "id", str(table), "key", "0", "0", "0", "0"],
                       check=True)
        os.setxattr(f, "user.vigil", b"1")
        agent.wait_for(lambda e: get(e, "vigil.drops.kind") == "tail_call_failed",
                       timeout=WAIT)
        assert not [e for e in agent.matching(mine) if get(e, "event.action") == "xattr-changed"]
    finally:
        rc, summary = agent.stop()
    assert rc == 0, "\n".join(agent.stderr_lines[-20:])
    # every exit of a file syscall, by any process, fails from then on: the count still grows
    # while the agent stops
    said = lost_of(agent, "tail_call_failed")
    assert summary is not None and summary.counts["tail_call_failed"] >= said >= 1, summary
