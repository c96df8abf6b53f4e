"""File changes made only through io_uring (tests/kernel/uring_ops.c), seen by the real agent.

The VFS backends (lsm, fentry, kprobe) hook the kernel below io_uring and must report every
step with the acting process. No syscall carries these operations; the tracepoint backend sees
them through io_uring's own tracepoints (submission and completion) and must report the same
steps, with the submitting process, where the kernel's io_uring_complete names the request;
where it does not (5.10), it must report nothing rather than something wrong (`vigil doctor`
lists what it cannot see).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from agent_proc import AgentProc, Area, Child, UserIds, get, run_child, under

pytestmark = [pytest.mark.root, pytest.mark.matrix]

SOURCE = Path(__file__).with_name("uring_ops.c")


@pytest.fixture(scope="session")
def uring_ops(area: Area) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc missing: ./do setup installs it")
    exe = area.root / "uring_ops"
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(SOURCE), "-luring"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"building {SOURCE.name} (liburing-dev, ./do setup):\n{r.stderr}"
    exe.chmod(0o755)
    return exe


def _acted_for(ev: dict, child: Child) -> bool:
    """The event's process is the child, or an io_uring worker acting for it: a thread of the
    child (iou-wrk-*, since 5.12) or a kernel worker with the child's credentials (before)."""
    if get(ev, "process.pid") == child.pid:
        return True
    return str(get(ev, "process.name", "")).startswith("io_wq")


def _complete_names_the_request() -> bool:
    """The tracepoint backend serves io_uring where the completion record has the request."""
    fmt = Path("/sys/kernel/tracing/events/io_uring/io_uring_complete/format")
    if not fmt.exists():
        fmt = Path("/sys/kernel/debug/tracing/events/io_uring/io_uring_complete/format")
    try:
        return "* req;" in fmt.read_text()
    except OSError:
        return False


def test_io_uring_changes(agent: AgentProc, uring_ops: Path, dirs: tuple[Path, Path],
                          test_user: UserIds) -> None:
    w, _ = dirs
    child = run_child([str(uring_ops), str(w)], user=test_user.ids)
    steps = dict(line.split(" ", 1) for line in child.stdout.splitlines())
    assert steps.get("openat") == "ok" and steps.get("close") == "ok", child.stdout
    final = w / ("u2" if steps.get("renameat") == "ok" else "u1")
    if steps.get("unlinkat") == "ok":
        assert not final.exists()
    names = {f"{w}/u1", f"{w}/u2"}
    evs = [e for e in agent.settle(w, under(w))
           if get(e, "event.outcome") == "success" and get(e, "file.path") in names]
    got = [(get(e, "event.action"), get(e, "file.path")) for e in evs]

    if agent.running_backend() == "tracepoint" and not _complete_names_the_request():
        assert got == [], "io_uring is not served on this kernel; it must not invent events"
        return

    want = [("created", f"{w}/u1"), ("modified", f"{w}/u1")]
    if steps.get("renameat") == "ok":
        want.append(("renamed", f"{w}/u2"))
    if steps.get("unlinkat") == "ok":
        want.append(("deleted", str(final)))
    assert got == want, child.stdout
    for ev in evs:
        assert _acted_for(ev, child), ev
        assert get(ev, "user.id") == str(test_user.uid)
        assert get(ev, "process.user.id") == str(test_user.uid)
    renamed = [e for e in evs if get(e, "event.action") == "renamed"]
    for ev in renamed:
        assert get(ev, "vigil.file.original_path") == f"{w}/u1"
    assert os.path.isdir(w)
