"""Fixtures for tests that run the real agent on this machine's kernel.

One unprivileged test user and one scratch area (on the root filesystem, which keeps user.*
xattrs) per session; one agent watching ``<area>/w`` per session. Each test works in its own
subdirectory of ``w`` (and, for "outside the tree" cases, of the unwatched sibling ``o``) and
filters events by that path, so tests never see each other's events.
"""

from __future__ import annotations

import os
import platform
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import VIGIL, AgentProc, Area, UserIds

TEST_USER = "vigiltest"
AGENT_MODULES = ("test_file_events.py", "test_exec_events.py", "test_burst.py", "test_perfbuf.py")
# Seconds for the session agent to start and see its first probe; the kernel matrix raises it
# (software-emulated VMs start Python and load BPF programs 10-50x slower).
START_TIMEOUT = float(os.environ.get("VIGIL_TEST_START_TIMEOUT", "60"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test in these modules drives the real agent: root and x86_64 (raw syscall numbers).
    why = None
    if os.geteuid() != 0:
        why = "needs root: runs the real eBPF agent and creates a test user"
    elif platform.machine() != "x86_64":
        why = "the children call legacy syscalls by their x86_64 numbers"
    elif not VIGIL.exists():
        why = f"{VIGIL} missing: run ./do setup"
    if why is None:
        return
    for item in items:
        if Path(str(item.fspath)).name in AGENT_MODULES and item.get_closest_marker("root"):
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def test_user() -> Iterator[UserIds]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    created = False
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", TEST_USER], check=True)
        created = True
        pw = pwd.getpwnam(TEST_USER)
    assert pw.pw_uid != 0
    try:
        yield UserIds(TEST_USER, pw.pw_uid, pw.pw_gid)
    finally:
        if created:
            subprocess.run(["userdel", TEST_USER], check=False)


@pytest.fixture(scope="session")
def area(test_user: UserIds) -> Iterator[Area]:
    # /var/tmp is on the root filesystem here; if /tmp were tmpfs, user.* xattrs could fail.
    root = Path(tempfile.mkdtemp(prefix="vigil-ktest-", dir="/var/tmp")).resolve()
    root.chmod(0o755)
    a = Area(root, root / "w", root / "o")
    for d in (a.watched, a.outside):
        d.mkdir(mode=0o755)
    try:
        yield a
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def agent(area: Area) -> Iterator[AgentProc]:
    proc = AgentProc(["--watch", str(area.watched)], db=area.root / "baseline.db").start()
    try:
        try:
            proc.probe(area.watched, timeout=START_TIMEOUT, scale=False)
        except AssertionError as e:
            raise AssertionError(f"the agent did not report its readiness probe within "
                                 f"{START_TIMEOUT:.0f}s ({e}); its stderr:\n"
                                 + "\n".join(proc.stderr_lines[-30:])) from None
        yield proc
    finally:
        rc, summary = proc.stop()
    assert rc == 0, "\n".join(proc.stderr_lines[-20:])
    assert summary is not None, "no summary line on stderr:\n" + "\n".join(proc.stderr_lines)


@pytest.fixture
def dirs(request: pytest.FixtureRequest, area: Area, test_user: UserIds,
         agent: AgentProc) -> tuple[Path, Path]:
    """(watched, unwatched) subdirectories for this test, owned by the test user."""
    return area.new_dirs(request.node.name.replace("[", "-").rstrip("]"), test_user)
