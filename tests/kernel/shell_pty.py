"""An interactive bash on a pseudo-terminal, typed into like a person would, for the tests of
shell-command events (tests/kernel/test_shell_commands.py) and the uprobe bench."""

from __future__ import annotations

import os
import pty
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass

PROMPT = b"vigil-prompt> "


@dataclass
class Session:
    pid: int            # the bash (pty.fork's child: it is its session's leader)
    tty: str            # /dev/pts/N
    rdev: int           # its device number (the pty is gone once bash has exited)
    output: bytes
    status: int


def _read_until(fd: int, marker: bytes, count: int, out: bytearray, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while out.count(marker) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"bash did not prompt again within {timeout}s: "
                                 f"{bytes(out[-300:])!r}")
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:   # EIO: the child side closed
                return
            if not chunk:
                return
            out += chunk


def interactive_bash(lines: Sequence[str | bytes], *, user: tuple[int, int] | None = None,
                     bash: str = "/usr/bin/bash", timeout: float = 20) -> Session:
    """Starts ``bash -i`` (no rc files, no history file) on a new pty, as ``user`` (uid, gid)
    when given, types each line and waits for the next prompt, then ``exit``."""
    pid, fd = pty.fork()
    if pid == 0:   # the child: a new session whose controlling terminal is the pty
        try:
            if user is not None:
                os.setgroups([])
                os.setgid(user[1])
                os.setuid(user[0])
            os.execve(bash, ["bash", "--norc", "--noprofile", "-i"],
                      {"PATH": "/usr/bin:/bin", "TERM": "dumb", "HOME": "/",
                       "PS1": PROMPT.decode(), "HISTFILE": "/dev/null"})
        finally:
            os._exit(127)
    out = bytearray()
    try:
        tty = os.readlink(f"/proc/{pid}/fd/0") if _wait_fd(pid) else ""
        rdev = os.stat(f"/proc/{pid}/fd/0").st_rdev
        _read_until(fd, PROMPT, 1, out, timeout)
        for i, line in enumerate(lines, start=2):
            os.write(fd, (line.encode() if isinstance(line, str) else line) + b"\n")
            _read_until(fd, PROMPT, i, out, timeout)
        os.write(fd, b"exit\n")
        _drain(fd, out, timeout)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return Session(pid, tty, rdev, bytes(out), status)


def _drain(fd: int, out: bytearray, timeout: float) -> None:
    """Reads until the other side closes (EOF or EIO), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            out += chunk


def _wait_fd(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/fd/0").startswith("/dev/pts/"):
                return True
        except OSError:
            pass
        time.sleep(0.01)
    return False
