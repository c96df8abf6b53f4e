"""Typed events of every kind, for the terminal views' tests (test_pretty, test_compact)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vigil.events.model import (
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileOp,
    LostEvents,
    NetEvent,
    NetOp,
    Process,
    ShellEvent,
)
from vigil.events.security import CredEvent, CredOp, Creds, SecEvent, SecOp, Target
from vigil.fim.model import FimEvent
from vigil.outputs.base import Output
from vigil.outputs.ecs import to_ecs
from vigil.rules.alert import Alert, RuleInfo

T = 1_700_000_000_123_456_789   # 2023-11-14 22:13:20.123 UTC
CLOCK = "22:13:20.123"


@pytest.fixture
def utc() -> Iterator[None]:
    """Local time is UTC for the test (the views show local time)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def proc(pid: int = 1250, comm: bytes = b"curl", uid: int = 1000, euid: int = 1000,
         ppid: int = 1200, **kw: object) -> Process:
    fields: dict[str, Any] = dict(
        tid=pid, start_time=500, parent_start_time=400, gid=uid, egid=euid,
        auid=uid, session_id=7, cgroup_id=1, mnt_ns=1, executable=b"/usr/bin/" + comm,
        args=[comm, b"-s", b"http://198.51.100.2/"], user_name="alice" if uid == 1000 else None,
        euser_name="root" if euid == 0 else None, parent_executable=b"/usr/bin/bash",
        enriched=True)
    fields.update(kw)
    return Process(pid=pid, ppid=ppid, uid=uid, euid=euid, comm=comm, **fields)


def creds(uid: int, caps: int = 0) -> Creds:
    return Creds(uid, uid, uid, uid, uid, uid, uid, uid, caps, caps, 0, 1)


def net(op: NetOp = NetOp.CONNECT, errno: int = 0) -> NetEvent:
    return NetEvent(T, op, proc(), socket.AF_INET, 6, bytes([10, 0, 0, 5]) + bytes(12), 41000,
                    bytes([198, 51, 100, 2]) + bytes(12), 443, errno=errno)


def every_kind() -> dict[str, Output]:
    """One event of each kind the terminal shows, by name."""
    p = proc()
    return {
        "file": FileEvent(T, FileOp.MODIFY, b"/etc/passwd", proc(comm=b"vim", pid=4242)),
        "rename": FileEvent(T, FileOp.RENAME, b"/tmp/a", p, target_path=b"/tmp/b"),
        "chmod": FileEvent(T, FileOp.CHMOD, b"/etc/shadow", p, mode=0o777),
        "failed": FileEvent(T, FileOp.OPEN, b"/etc/shadow", p, errno=13),
        "exec": ExecEvent(T, p),
        "exit": ExitEvent(T, p, 9),
        "net": net(),
        "accept": net(NetOp.ACCEPT),
        "listen": net(NetOp.LISTEN),
        "refused": net(errno=111),
        "shell": ShellEvent(T, proc(comm=b"bash", pid=1200, ppid=990), b"sudo -i",
                            tty_name="pts3"),
        "cred": CredEvent(T, CredOp.SETRESUID, proc(comm=b"sudo", pid=1260, euid=0),
                          creds(1000), creds(0)),
        "escalation": CredEvent(T, CredOp.ESCALATION, p, creds(1000), creds(0), inferred=True),
        "tamper": SecEvent(T, SecOp.PTRACE, p, target=Target(77, executable=b"/usr/sbin/sshd")),
        "module": SecEvent(T, SecOp.MODULE_LOAD, proc(uid=0, euid=0), name=b"rootkit"),
        "fim": FimEvent("modified", b"/etc/hosts", "realtime", T, changed_attributes=["size"],
                        process=proc(comm=b"vim", pid=4242)),
        "scan": FimEvent("baseline-established", b"/etc", "initial-scan", T,
                         scan={"files": 12, "duration_s": 0.5}),
        "lost": LostEvents(T, "file", 17),
        "alert": alert("high"),
    }


def alert(level: str, *, repeat: bool = False) -> Alert:
    doc = to_ecs(ExecEvent(T, proc()), {"name": "h"})
    rule = RuleInfo("11111111-2222-3333-4444-555555555555", "Curl to a pipe", level,
                    where="r.yml:1")
    return Alert(T, rule, "process_creation", doc, count=3 if repeat else 1,
                 first_ns=T - 60 * 10**9, repeat=repeat)


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()
