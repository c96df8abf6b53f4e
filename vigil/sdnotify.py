"""The systemd notification protocol (sd_notify), client side, without a dependency.

A service of ``Type=notify`` tells systemd how it is doing by sending datagrams of
``KEY=VALUE`` lines to the AF_UNIX socket named in ``$NOTIFY_SOCKET`` (a leading ``@`` means
the abstract namespace). Vigil says READY=1 once its programs are attached and the watch list
is set, RELOADING=1 and READY=1 again around a SIGHUP reload, STOPPING=1 when it stops, and
WATCHDOG=1 from its run loop at most every half ``$WATCHDOG_USEC`` (``WatchdogSec=``).

Owns the socket, the messages and the watchdog's pace. Does not own when to send them (the
agent calls) nor the unit file (vigil.service). Outside systemd (no ``$NOTIFY_SOCKET``) every
call does nothing; a failure to send is logged once and never raised: a service manager that
cannot be told must not stop the agent.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("vigil")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
# A blocked send (systemd's queue full) waits at most this long, then the message is dropped
# (a watchdog ping is retried on the next loop; the others are logged).
SEND_TIMEOUT = 2.0


def _monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: what systemd compares RELOADING=1's MONOTONIC_USEC
    with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _address(raw: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as a socket address: a path, or the abstract name as bytes."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def _one_line(text: str) -> str:
    """STATUS= takes one line: newlines would start new assignments."""
    return " ".join(text.split("\n"))


class Notifier:
    """Messages to systemd; every method is a cheap no-op when not run by systemd.

    ``address``: ``$NOTIFY_SOCKET`` (None: disabled). ``watchdog_usec``: ``$WATCHDOG_USEC``
    (0: no watchdog); ``watchdog()`` then pings at most every half of it.
    """

    def __init__(self, address: str | None, watchdog_usec: int = 0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if self.address else 0
        self._clock = clock
        self._sock: socket.socket | None = None
        self._last_ping: float | None = None
        self._failed = False  # logged once
        self.sent = 0         # messages delivered to the socket

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> Notifier:
        """The notifier systemd's environment asks for: ``$NOTIFY_SOCKET``, and the watchdog
        of ``$WATCHDOG_USEC`` when ``$WATCHDOG_PID`` is unset or names this process."""
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        address = env.get(NOTIFY_SOCKET_ENV) or None
        if address is not None and not (address.startswith(("/", "@"))):
            log.warning("%s=%r is not an AF_UNIX socket (a path or @name): systemd will not "
                        "be notified", NOTIFY_SOCKET_ENV, address)
            address = None
        usec = 0
        raw = env.get(WATCHDOG_USEC_ENV, "")
        if address is not None and raw:
            try:
                usec = int(raw)
                wd_pid = env.get(WATCHDOG_PID_ENV, "")
                if wd_pid and int(wd_pid) != pid:
                    usec = 0  # the watchdog is another process's to feed
            except ValueError:
                log.warning("%s=%r or %s=%r is not a number: no watchdog pings",
                            WATCHDOG_USEC_ENV, raw, WATCHDOG_PID_ENV,
                            env.get(WATCHDOG_PID_ENV))
                usec = 0
            if usec < 0:
                usec = 0
        return cls(address, usec, clock=clock)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two pings (half the watchdog timeout), or None without one."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec > 0 else None

    # -- the messages ---------------------------------------------------------------------

    def ready(self, status: str = "") -> bool:
        """Start-up done: the programs are attached and the watch list is set."""
        return self.send("READY=1", *self._status(status))

    def reloading(self, status: str = "") -> bool:
        """A reload begins (SIGHUP). MONOTONIC_USEC is what systemd 253+ requires of
        Type=notify-reload; older versions ignore it."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}",
                         *self._status(status))

    def ready_again(self, status: str = "") -> bool:
        """The reload is done."""
        return self.send("READY=1", *self._status(status))

    def stopping(self, status: str = "") -> bool:
        """The agent stops (it still writes every event already read)."""
        return self.send("STOPPING=1", *self._status(status))

    def status(self, text: str) -> bool:
        """Free text ``systemctl status`` shows."""
        return self.send(*self._status(text))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more for the current start, reload or stop."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1e6))}")

    def watchdog(self) -> bool:
        """WATCHDOG=1 if half the watchdog timeout has passed since the last one; cheap to
        call on every loop. True when a ping was sent."""
        if self.watchdog_usec <= 0:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_usec / 2e6:
            return False
        if self.send("WATCHDOG=1"):
            self._last_ping = now
            return True
        return False

    # -- the socket -----------------------------------------------------------------------

    @staticmethod
    def _status(text: str) -> tuple[str, ...]:
        return (f"STATUS={_one_line(text)}",) if text else ()

    def send(self, *assignments: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False when disabled or the send failed (logged
        the first time only)."""
        if self.address is None or not assignments:
            return False
        data = "\n".join(assignments).encode() + b"\n"
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.settimeout(SEND_TIMEOUT)
                self._sock = sock
            self._sock.sendto(data, _address(self.address))
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd through %s (%s): %s", self.address,
                            assignments[0], e.strerror or e)
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
