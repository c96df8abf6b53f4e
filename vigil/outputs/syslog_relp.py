"""relp://: spooled syslog messages over RELP, rsyslog's Reliable Event Logging Protocol.

Owns the RELP client: its frames (``TXNR SP COMMAND SP DATALEN [SP DATA] LF``, parsed by
``RelpParser``), the session (``open`` with our offers, ``close``, the server's
``serverclose``) and a window of up to ``WINDOW`` messages sent and not yet acknowledged.
Every ``syslog`` frame is answered by the receiver's ``rsp`` once its program took the
message; the spool's cursor advances (``Spool.advance``) only over acknowledged messages, in
order. So when the connection breaks, or the receiver is restarted, exactly what it never
acknowledged goes again on the next session: nothing lost, and no duplicate except a message
the receiver took in the instant before it broke and could not answer any more.

A response other than ``200`` refuses that message: the session is ended (an ``OSError``
the sender thread records as its ``last_error``) and the message goes again on the next one,
a little later each time it is refused again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import select
import socket
import time
from collections.abc import Callable
from typing import Final

from vigil.config.model import SyslogOutput
from vigil.outputs.spool import Chunk, Spool

log = logging.getLogger(__name__)

WINDOW: Final = 128                # messages sent and not yet acknowledged, at most
TXNR_MAX: Final = 999_999_999      # transaction numbers run 1..TXNR_MAX, then 1 again
CONNECT_TIMEOUT: Final = 5.0       # to connect and to have the answer to ``open``
POLL: Final = 1.0                  # a wait on the socket, between checks of `stop`
ACK_TIMEOUT: Final = 30.0          # no answer that long with messages in flight: broken
OFFERS: Final = b"relp_version=0\nrelp_software=vigil\ncommands=syslog"
_REFUSED_WAIT_MAX: Final = 2.0
_HEAD: Final = re.compile(rb"(\d{1,9}) ([A-Za-z]{1,32}) (\d{1,9})")
_HEAD_MAX: Final = 9 + 1 + 32 + 1 + 9 + 1


class RelpProtocolError(ConnectionError):
    """The receiver sent what is not RELP, or answered what we never asked."""


class RelpRefused(ConnectionError):
    """The receiver answered a message (or ``open``) with a status other than 200."""


def relp_frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    """One frame; a frame with no data has no space after its length."""
    if data:
        return b"%d %s %d %s\n" % (txnr, command, len(data), data)
    return b"%d %s 0\n" % (txnr, command)


def next_txnr(txnr: int) -> int:
    return 1 if txnr >= TXNR_MAX else txnr + 1


def rsp_status(data: bytes) -> tuple[int, str]:
    """(status, its text) of an ``rsp`` frame's data: ``200 OK[\\nDATA]``."""
    head = data.split(b"\n", 1)[0]
    code, _, text = head.partition(b" ")
    if len(code) != 3 or not code.isdigit():
        raise RelpProtocolError(f"RELP: a response without a status: {head[:80]!r}")
    return int(code), text.decode(errors="replace")


class RelpParser:
    """Frames out of the bytes read, however they were cut: ``feed`` returns the whole
    frames so far, as (txnr, command, data)."""

    def __init__(self, max_data: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._max = max_data

    def feed(self, data: bytes) -> list[tuple[int, str, bytes]]:
        self._buf += data
        out: list[tuple[int, str, bytes]] = []
        buf = self._buf
        pos = 0
        while True:
            got = self._one(buf, pos)
            if got is None:
                break
            frame, pos = got
            out.append(frame)
        del buf[:pos]
        return out

    def _one(self, buf: bytearray, pos: int) -> tuple[tuple[int, str, bytes], int] | None:
        m = _HEAD.match(buf, pos)
        if m is None or m.end() == len(buf):
            window = bytes(buf[pos:pos + _HEAD_MAX])
            if len(window) >= _HEAD_MAX or (m is None and not _could_start(window)):
                raise RelpProtocolError(f"RELP: not a frame: {window[:60]!r}")
            return None
        txnr, command, datalen = int(m[1]), m[2].decode(), int(m[3])
        if datalen > self._max:
            raise RelpProtocolError(f"RELP: a frame of {datalen} bytes is too big")
        at = m.end()
        if datalen == 0:
            data, stop = b"", at
        else:
            if buf[at:at + 1] != b" ":
                raise RelpProtocolError("RELP: no space between a frame's length and data")
            stop = at + 1 + datalen
            data = bytes(buf[at + 1:stop])
        if stop >= len(buf):
            return None
        if buf[stop:stop + 1] != b"\n":
            raise RelpProtocolError(f"RELP: a frame ({command} {txnr}) does not end in LF")
        return (txnr, command, data), stop + 1


def _could_start(head: bytes) -> bool:
    """Whether ``head`` (a frame's first bytes, cut short) may still become a frame."""
    return re.fullmatch(rb"\d{0,9}( ([A-Za-z]{0,32}( \d{0,9})?)?)?", head) is not None


class RelpTransport:
    """relp://HOST:PORT: one RELP session over plain TCP."""

    def __init__(self, out: SyslogOutput) -> None:
        self._out = out
        self._sock: socket.socket | None = None
        self._parser = RelpParser()
        self._txnr = 0                  # the last one used
        self._refused = 0               # refusals in a row: the next session waits
        self.truncated = 0

    # -- the session ------------------------------------------------------------------------

    def connect(self) -> None:
        if self._refused:
            time.sleep(min(0.1 * 2 ** self._refused, _REFUSED_WAIT_MAX))
        out = self._out
        s = socket.create_connection((out.host, out.port), timeout=CONNECT_TIMEOUT)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._parser = RelpParser()
            s.sendall(relp_frame(1, b"open", OFFERS))
            deadline = time.monotonic() + CONNECT_TIMEOUT
            frame = None
            while frame is None:
                s.settimeout(max(deadline - time.monotonic(), 0.01))
                data = s.recv(65536)
                if not data:
                    raise ConnectionResetError("the receiver closed the RELP session at open")
                for f in self._parser.feed(data):
                    frame = f
                    break
            txnr, command, body = frame
            if command == "serverclose":
                raise ConnectionResetError("the receiver refused the RELP session")
            if (txnr, command) != (1, "rsp"):
                raise RelpProtocolError(f"RELP: {command} {txnr} in answer to open")
            code, text = rsp_status(body)
            if code != 200:
                raise RelpRefused(f"the receiver refused the RELP session: {code} {text}")
            offers = body.split(b"\n")[1:]
            cmds = [o for o in offers if o.startswith(b"commands=")]
            if cmds and b"syslog" not in cmds[0][len(b"commands="):].split(b","):
                raise RelpRefused(f"the RELP receiver does not take syslog ({cmds[0]!r})")
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        self._sock = s
        self._txnr = 1

    def close(self) -> None:
        """Ends the session with ``close`` (briefly waiting for its answer) if it is up."""
        s = self._sock
        if s is None:
            return
        self._sock = None
        try:
            s.setblocking(True)
            s.settimeout(0.5)
            s.sendall(relp_frame(next_txnr(self._txnr), b"close"))
            s.recv(4096)
        except OSError:
            pass
        finally:
            s.close()

    # -- messages ---------------------------------------------------------------------------

    def send_chunk(self, chunk: Chunk, spool: Spool, stop: Callable[[], bool]) -> bool:
        """Sends the chunk's messages, up to WINDOW in flight; returns once each was
        acknowledged (the cursor following) or ``stop()`` said to give up. OSError: broken,
        or a message refused; what was not acknowledged stays unsent in the spool."""
        s = self._sock
        assert s is not None
        view, ends = chunk.view, chunk.ends
        pending: collections.deque[tuple[int, int]] = collections.deque()  # (txnr, end)
        early: set[int] = set()          # acknowledged before an older one
        out = bytearray()
        nxt, pos = 0, chunk.start        # the next message: its index and offset
        heard = time.monotonic()
        try:
            while nxt < len(ends) or pending:
                while nxt < len(ends) and len(pending) < WINDOW and len(out) < 1 << 20:
                    msg = view[view.find(b" ", pos, pos + 11) + 1:ends[nxt]]
                    self._txnr = next_txnr(self._txnr)
                    out += relp_frame(self._txnr, b"syslog", msg)
                    pending.append((self._txnr, ends[nxt]))
                    pos = ends[nxt]
                    nxt += 1
                r, w, _ = select.select([s], [s] if out else [], [], POLL)
                if w:
                    with contextlib.suppress(BlockingIOError):
                        del out[:s.send(out)]
                if r:
                    data = s.recv(65536)
                    if not data:
                        raise ConnectionResetError("the receiver closed the RELP session")
                    heard = time.monotonic()
                    for txnr, command, body in self._parser.feed(data):
                        self._answer(txnr, command, body, pending, early, chunk, spool)
                if not r and not w:
                    if stop():
                        return False
                    if pending and time.monotonic() - heard > ACK_TIMEOUT:
                        raise TimeoutError(f"no RELP answer in {ACK_TIMEOUT:.0f} s")
        except RelpRefused:
            self._refused += 1
            raise
        self._refused = 0
        return True

    def _answer(self, txnr: int, command: str, body: bytes,
                pending: collections.deque[tuple[int, int]], early: set[int],
                chunk: Chunk, spool: Spool) -> None:
        if command == "serverclose":
            raise ConnectionResetError("the receiver ended the RELP session (serverclose)")
        if command != "rsp":
            raise RelpProtocolError(f"RELP: the receiver sent {command!r}")
        code, text = rsp_status(body)
        if code != 200:
            log.warning("syslog output %s: the receiver refused a message: %d %s",
                        self._out.address, code, text)
            raise RelpRefused(f"the receiver refused a message: {code} {text}")
        if not pending or (pending[0][0] != txnr and all(t != txnr for t, _ in pending)):
            raise RelpProtocolError(f"RELP: an answer to {txnr}, never sent or answered")
        early.add(txnr)
        end = -1
        while pending and pending[0][0] in early:
            t, end = pending.popleft()
            early.discard(t)
        if end >= 0:
            spool.advance(chunk, end)
