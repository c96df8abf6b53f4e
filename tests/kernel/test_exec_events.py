"""Exec and exit events of the real agent, with exact who-data."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest
from agent_proc import AgentProc, Event, Pred, UserIds, get, run_child

pytestmark = [pytest.mark.root, pytest.mark.matrix]


def _is(pid: int, action: str) -> Pred:
    def pred(ev: Event) -> bool:
        return (get(ev, "event.category") == ["process"] and get(ev, "process.pid") == pid
                and get(ev, "event.action") == action)

    return pred


def test_exec_with_arguments(agent: AgentProc, test_user: UserIds) -> None:
    tag = f"vigil-{uuid.uuid4().hex[:12]}"
    argv = ["/usr/bin/true", tag, "--flag=two words", "x"]
    child = run_child(argv, user=test_user.ids)
    [ev] = agent.wait_for(_is(child.pid, "exec"))
    assert get(ev, "process.executable") == "/usr/bin/true"
    assert get(ev, "process.name") == "true"
    assert get(ev, "process.args") == argv
    assert get(ev, "process.args_count") == 4
    assert get(ev, "process.command_line") == " ".join(argv)
    assert get(ev, "process.parent.pid") == child.ppid
    assert get(ev, "user.id") == str(test_user.uid)
    assert get(ev, "user.name") == test_user.name
    assert get(ev, "process.real_user.id") == str(test_user.uid)
    assert get(ev, "process.user.id") == str(test_user.uid)
    assert get(ev, "event.outcome") == "success"
    [ex] = agent.wait_for(_is(child.pid, "exit"))
    assert get(ex, "process.exit_code") == 0
    assert get(ex, "process.executable") == "/usr/bin/true"


def test_exit_code(agent: AgentProc, test_user: UserIds) -> None:
    child = run_child(["/bin/sh", "-c", "exit 3"], user=test_user.ids, expect_rc=3)
    [ev] = agent.wait_for(_is(child.pid, "exec"))
    assert get(ev, "process.args") == ["/bin/sh", "-c", "exit 3"]
    assert get(ev, "process.executable") == child.exe  # /usr/bin/dash: /bin/sh is a symlink
    assert get(ev, "process.name") == "sh"
    [ex] = agent.wait_for(_is(child.pid, "exit"))
    assert get(ex, "process.exit_code") == 3
    assert get(ex, "process.parent.pid") == child.ppid
    assert get(ex, "user.id") == str(test_user.uid)


def test_setuid_style_euid_differs(agent: AgentProc, test_user: UserIds) -> None:
    """Real and effective uids are reported apart: a root child that sets only its euid."""
    code = (f"import os; os.seteuid({test_user.uid}); "
            "os.execv('/usr/bin/true', ['/usr/bin/true', 'euid-test'])")
    child = run_child(["/usr/bin/python3", "-c", code])
    evs = agent.wait_for(_is(child.pid, "exec"), count=2)
    last = evs[-1]
    assert get(last, "process.executable") == "/usr/bin/true"
    assert get(last, "process.real_user.id") == "0"
    assert get(last, "process.user.id") == str(test_user.uid)
    assert get(last, "user.id") == "0"


# ---- the working directory (process.working_directory, Sigma's CurrentDirectory) ----------

# The kernel keeps a path (and so a working directory) up to 4095 bytes; the one it cannot walk
# whole is reported by its last components and flagged (bpf/path.bpf.h, vigil_walk_path).
PATH_KEPT = 4095


def _exec_after(agent: AgentProc, code: str, user: tuple[int, int] | None = None) -> Event:
    """A Python child that runs ``code`` and then execs /usr/bin/true: the exec event of that
    second program (same pid)."""
    tag = f"vigil-{uuid.uuid4().hex[:12]}"
    code = f"import os\n{code}\nos.execv('/usr/bin/true', ['/usr/bin/true', {tag!r}])\n"
    child = run_child(["/usr/bin/python3", "-c", code], user=user)
    last = agent.wait_for(_is(child.pid, "exec"), count=2)[-1]
    assert get(last, "process.args") == ["/usr/bin/true", tag]
    return last


def _exec_from(agent: AgentProc, cwd: bytes) -> Event:
    """The exec event of /usr/bin/true started in ``cwd``, entered one component at a time
    (relative chdirs: a path of 4,096 bytes is too long for one chdir)."""
    return _exec_after(agent, f"os.chdir(b'/')\nfor p in {cwd.split(b'/')[1:]!r}:\n"
                              "    os.chdir(p)")


def test_working_directory_is_exact(agent: AgentProc, test_user: UserIds,
                                    dirs: tuple[Path, Path]) -> None:
    """The directory the program starts in, as a plain user runs it there."""
    _, out = dirs
    where = out / "work dir"
    where.mkdir()
    os.chown(where, test_user.uid, test_user.gid)
    child = run_child(["/usr/bin/true", "cwd-test"], user=test_user.ids, cwd=where)
    [ev] = agent.wait_for(_is(child.pid, "exec"))
    assert get(ev, "process.working_directory") == str(where)
    assert get(ev, "process.working_directory_bytes_b64") is None
    assert get(ev, "vigil.process.working_directory_truncated") is None
    child = run_child(["/usr/bin/true", "cwd-root"], user=test_user.ids, cwd="/")
    [ev] = agent.wait_for(_is(child.pid, "exec"))
    assert get(ev, "process.working_directory") == "/"


def test_working_directory_with_odd_bytes(agent: AgentProc, test_user: UserIds,
                                          dirs: tuple[Path, Path]) -> None:
    """Spaces, a newline, a tab and bytes that are not UTF-8: the exact bytes, in base64."""
    _, out = dirs
    where = bytes(out) + b"/ odd \xff\xfe name\n\twith  spaces "
    os.mkdir(where)
    os.chown(where, test_user.uid, test_user.gid)
    child = run_child(["/usr/bin/true", "odd"], user=test_user.ids, cwd=where)
    [ev] = agent.wait_for(_is(child.pid, "exec"))
    assert get(ev, "process.working_directory") == where.decode("utf-8", "replace")
    assert base64.b64decode(get(ev, "process.working_directory_bytes_b64")) == where


def test_working_directory_removed_before_the_exec(agent: AgentProc, test_user: UserIds,
                                                   dirs: tuple[Path, Path]) -> None:
    """A process whose working directory was removed: the path it had (the kernel's d_path
    would add " (deleted)"; getcwd() fails)."""
    _, out = dirs
    gone = bytes(out) + b"/gone"
    last = _exec_after(agent, f"os.mkdir({gone!r})\nos.chdir({gone!r})\nos.rmdir({gone!r})\n"
                              f"assert not os.path.exists({gone!r})", user=test_user.ids)
    assert get(last, "process.working_directory") == gone.decode()
    assert get(last, "vigil.process.working_directory_truncated") is None


def _long_dir(base: Path, length: int) -> bytes:
    """Directories below ``base`` whose path is ``length`` bytes long (names of up to 200
    bytes), created one level at a time through directory fds."""
    path = bytes(base)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        i = 0
        while len(path) < length:
            room = length - len(path) - 1          # after the slash
            name = (b"%03d" % i + b"d" * 200)[:min(200, room)] if room > 0 else b""
            if room - len(name) == 1:              # no room left for "/x" after it
                name = name[:-2]
            assert name, (len(path), length)
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            path += b"/" + name
            i += 1
    finally:
        os.close(fd)
    assert len(path) == length
    return path


def test_working_directory_of_the_longest_path_kept(agent: AgentProc,
                                                    dirs: tuple[Path, Path]) -> None:
    """4,095 bytes: the whole path, not flagged."""
    _, out = dirs
    where = _long_dir(out, PATH_KEPT)
    ev = _exec_from(agent, where)
    assert get(ev, "process.working_directory") == where.decode()
    assert get(ev, "vigil.process.working_directory_truncated") is None


def test_working_directory_too_long_is_flagged(agent: AgentProc,
                                               dirs: tuple[Path, Path]) -> None:
    """4,096 bytes (one more than kept): the last components that fit, flagged; never a path
    silently cut inside a name."""
    _, out = dirs
    where = _long_dir(out, PATH_KEPT + 1)
    ev = _exec_from(agent, where)
    got = get(ev, "process.working_directory").encode()
    assert get(ev, "vigil.process.working_directory_truncated") is True
    # cut between components (it starts with a slash), only the first ones gone
    assert got.startswith(b"/") and where.endswith(got)
    assert len(where) - 10 < len(got) <= PATH_KEPT


def test_working_directory_too_deep_is_flagged(agent: AgentProc,
                                               dirs: tuple[Path, Path]) -> None:
    """Deeper than the 64 components the kernel walks: the last ones, flagged."""
    _, out = dirs
    where = bytes(out)
    os.makedirs(where + b"/d" * 70)
    where += b"/d" * 70
    ev = _exec_from(agent, where)
    got = get(ev, "process.working_directory").encode()
    assert get(ev, "vigil.process.working_directory_truncated") is True
    assert got.startswith(b"/d/d/") and where.endswith(got) and got.count(b"/") <= 64
