"""vigil.sdnotify against real AF_UNIX datagram sockets the tests create, read the way systemd
reads them (with the sender's credentials, which NotifyAccess=main checks)."""

from __future__ import annotations

import logging
import os
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil.sdnotify import Notifier

_UCRED = struct.Struct("iII")  # pid, uid, gid


class Receiver:
    """A notify socket like systemd's: SOCK_DGRAM, SO_PASSCRED."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(2)

    def recv(self) -> tuple[dict[str, str], int]:
        """The next message as {KEY: VALUE} and the sender's pid."""
        data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        pid = -1
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[:_UCRED.size])[0]
        text = data.decode()
        assert text.endswith("\n"), text
        return dict(line.split("=", 1) for line in text.splitlines()), pid

    def pending(self) -> int:
        """How many messages are queued (drained)."""
        n = 0
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
                n += 1
        except BlockingIOError:
            return n
        finally:
            self.sock.settimeout(2)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with tempfile.TemporaryDirectory(prefix="vigil-notify-") as d:
        r = Receiver(str(Path(d) / "notify"))
        try:
            yield r
        finally:
            r.sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    r = Receiver(f"@vigil-test-notify-{os.getpid()}-{time.monotonic_ns()}")
    try:
        yield r
    finally:
        r.sock.close()


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    n = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.watchdog_interval is None
    assert not n.ready("x") and not n.watchdog() and not n.stopping() and not n.reloading()
    assert n.sent == 0


def test_ready_with_status_comes_from_this_process(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.address})
    assert n.ready("watching 3 directories\nlsm backend")
    msg, pid = receiver.recv()
    assert msg == {"READY": "1", "STATUS": "watching 3 directories lsm backend"}
    assert pid == os.getpid()  # what NotifyAccess=main accepts
    n.close()


def test_abstract_namespace_socket(abstract_receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": abstract_receiver.address})
    assert n.stopping()
    assert abstract_receiver.recv()[0] == {"STOPPING": "1"}
    n.close()


def test_reload_sequence_carries_monotonic_usec(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.ready_again("reloaded")
    first, _ = receiver.recv()
    second, _ = receiver.recv()
    assert first["RELOADING"] == "1"
    assert before <= int(first["MONOTONIC_USEC"]) <= after
    assert second == {"READY": "1", "STATUS": "reloaded"}
    n.close()


def test_status_and_extend_timeout(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.address})
    n.status("scanning")
    n.extend_timeout(30)
    assert receiver.recv()[0] == {"STATUS": "scanning"}
    assert receiver.recv()[0] == {"EXTEND_TIMEOUT_USEC": "30000000"}
    n.close()


def test_watchdog_pings_at_most_every_half_period(receiver: Receiver) -> None:
    now = [100.0]
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "2000000",
                           "WATCHDOG_PID": str(os.getpid())}, clock=lambda: now[0])
    assert n.watchdog_interval == 1.0
    assert n.watchdog()              # the first call pings at once
    for _ in range(1000):            # called on every loop: no flood
        assert not n.watchdog()
    now[0] += 0.99
    assert not n.watchdog()
    now[0] += 0.02
    assert n.watchdog()
    assert receiver.recv()[0] == {"WATCHDOG": "1"}
    assert receiver.recv()[0] == {"WATCHDOG": "1"}
    assert receiver.pending() == 0
    n.close()


def test_watchdog_of_another_pid_or_garbage_is_not_fed(receiver: Receiver) -> None:
    other = Notifier.from_env({"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "2000000",
                               "WATCHDOG_PID": "1"}, pid=4242)
    assert other.watchdog_interval is None and not other.watchdog()
    bad = Notifier.from_env({"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "soon"})
    assert bad.enabled and bad.watchdog_interval is None and not bad.watchdog()
    assert receiver.pending() == 0


def test_send_failure_is_logged_once_and_never_raised(caplog: pytest.LogCaptureFixture,
                                                     tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens"),
                           "WATCHDOG_USEC": "1"})
    with caplog.at_level(logging.WARNING, logger="vigil"):
        assert not n.ready()
        assert not n.watchdog()
        assert not n.stopping()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "cannot notify systemd" in warnings[0] and "nobody-listens" in warnings[0]


def test_failed_ping_is_retried_on_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "late"
    n = Notifier.from_env({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "60000000"})
    assert not n.watchdog()          # nobody listens yet
    r = Receiver(str(path))
    try:
        assert n.watchdog()          # not paced by the failed attempt
        assert r.recv()[0] == {"WATCHDOG": "1"}
    finally:
        r.sock.close()
        n.close()


def test_notify_socket_that_is_not_unix_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vigil"):
        n = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled and not n.ready()
    assert "not an AF_UNIX socket" in caplog.text
