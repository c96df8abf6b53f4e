"""How spooled syslog messages reach the receiver: unix, udp, tcp, tls and relp.

Owns the sockets: connecting (TLS with the server's certificate verified), sending a spool
chunk, and telling the spool what was sent (``Spool.advance`` after every send, at whole
messages) or must come again (``Spool.rewind``). The sender thread that drives them is
vigil.outputs.syslog.

- **tcp**: RFC 6587 octet counting; the spool's bytes are the wire bytes, so a chunk goes out
  with ``os.sendfile`` (no copy through Python, the GIL released). TCP cannot tell which bytes
  the receiving *program* read: send() only means our kernel took them. When the connection
  breaks, the sender goes back (``Spool.rewind``) to the first message the receiver may lack:
  what its kernel never acknowledged (``tcpi_bytes_acked`` of TCP_INFO), and, when it closed
  with a reset (ECONNRESET: it had unread data), as much again as the largest window it
  advertised (``tcpi_snd_wnd``, Linux 5.4+), which its program may never have read. Those
  messages may arrive twice, with the same sequence number: after a receiver's abrupt stop,
  duplicates rather than loss (plain TCP syslog has no application acknowledgement; RELP has).
  A graceful close (a FIN: everything was read) costs no duplicate.
- **tls**: RFC 5425 (the same framing inside TLS 1.2+), the certificate verified against
  ``ca_file`` or the system's store, the name checked (``server_name`` or the host). One TLS
  record per send; the TCP position where each ends is noted (bytes acknowledged + TIOCOUTQ),
  so the same rewind works in records, eight more (128 KiB) for what a receiver's TLS layer holds.
  A close is never taken as graceful here: the receiver's TLS library reads ahead of what its
  program has parsed, so a FIN does not say the messages were taken (rsyslog's gtls driver lost
  763 messages read before a restart when it was trusted).
- **unix** (``/dev/log``-style SOCK_DGRAM) and **udp**: one datagram per message, without the
  frame's length. A message longer than ``DGRAM_MAX`` is cut there (at a UTF-8 character
  boundary) and counted in ``truncated``: send big alerts over tcp or tls. A unix socket pushes
  back when the receiver's queue is full (nothing lost); UDP does not, and a datagram the
  receiver's buffer had no room for, or sent while it was down, is lost without a trace.
- **relp**: RELP (vigil.outputs.syslog_relp): the receiver acknowledges every message, the
  cursor advances only over acknowledged ones, so a receiver's restart costs no duplicate.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import mmap
import os
import select
import socket
import ssl
import struct
import termios
from collections.abc import Callable
from typing import Any, Final, Protocol

from vigil.config.model import SyslogOutput
from vigil.kernel.errors import VigilError
from vigil.outputs.spool import Chunk, Spool
from vigil.outputs.syslog_relp import RelpTransport

CONNECT_TIMEOUT: Final = 5.0
SEND_TIMEOUT: Final = 1.0          # a wait for room in the socket, between checks of `stop`
DGRAM_MAX: Final = 64000           # bytes of one datagram's message (UDP's limit is 65507)
# struct tcp_info: tcpi_bytes_acked (Linux 4.1+) and tcpi_snd_wnd (5.4+), the peer's window
_TCPI_BYTES_ACKED: Final = 120
_TCPI_SND_WND: Final = 228
_TCP_INFO_LEN: Final = 232
_HISTORY_BYTES: Final = 64 << 20   # chunks remembered for a rewind: more than socket buffers
_TLS_RECORD: Final = 16384         # plaintext per TLS send: one record
_TLS_HELD: Final = 8               # records a TLS receiver may hold read, unparsed


class SyslogError(VigilError):
    """A syslog output that cannot be set up (its TLS files)."""


class PeerClosed(ConnectionResetError):
    """The receiver closed its end: seen as end of file before a send."""


def _outq(fd: int) -> int:
    """Bytes in the socket's send queue, sent or not, that the peer has not acknowledged."""
    buf = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("<i", buf)[0])


class Transport(Protocol):
    truncated: int

    def connect(self) -> None: ...

    def send_chunk(self, chunk: Chunk, spool: Spool, stop: Callable[[], bool]) -> bool:
        """Sends the chunk; False if ``stop()`` said to give up first. OSError: broken."""
        ...

    def close(self) -> None: ...


def _msg_start(view: mmap.mmap, pos: int) -> int:
    return view.find(b" ", pos, pos + 11) + 1


def _cut_utf8(msg: bytes, limit: int) -> bytes:
    if len(msg) <= limit:
        return msg
    cut = limit
    while cut > 0 and (msg[cut] & 0xC0) == 0x80:   # not in the middle of a character
        cut -= 1
    return msg[:cut]


class DatagramTransport:
    """unix:// or udp://: a connected datagram socket, one message per datagram."""

    def __init__(self, out: SyslogOutput) -> None:
        self._out = out
        self._sock: socket.socket | None = None
        self.truncated = 0

    def connect(self) -> None:
        out = self._out
        if out.scheme == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            target: Any = out.path
        else:
            info = socket.getaddrinfo(out.host, out.port, type=socket.SOCK_DGRAM)[0]
            s = socket.socket(info[0], socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            target = info[4]
        try:
            s.settimeout(SEND_TIMEOUT)
            s.connect(target)
        except OSError:
            s.close()
            raise
        self._sock = s

    def send_chunk(self, chunk: Chunk, spool: Spool, stop: Callable[[], bool]) -> bool:
        s = self._sock
        assert s is not None
        view, pos = chunk.view, chunk.start
        for end in chunk.ends:
            msg = view[_msg_start(view, pos):end]
            if len(msg) > DGRAM_MAX:
                msg = _cut_utf8(msg, DGRAM_MAX)
                self.truncated += 1
            while True:
                try:
                    s.send(msg)
                    break
                except TimeoutError:        # a unix receiver's queue is full: wait
                    if stop():
                        return False
            spool.advance(chunk, end)
            pos = end
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def tls_context(out: SyslogOutput) -> ssl.SSLContext:
    """Verification on, always: the CA file or the system's store, and the server's name."""
    t = out.tls
    ctx = ssl.create_default_context(cafile=str(t.ca_file) if t.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if t.cert_file is not None and t.key_file is not None:
        ctx.load_cert_chain(str(t.cert_file), str(t.key_file))
    return ctx


class StreamTransport:
    """tcp:// or tls://: one connection, octet-counted frames."""

    def __init__(self, out: SyslogOutput) -> None:
        self._out = out
        self._sock: socket.socket | None = None
        self._tls = out.scheme == "tls"
        try:
            self._ctx = tls_context(out) if self._tls else None
        except (ssl.SSLError, OSError) as e:
            raise SyslogError(f"syslog output {out.address}: its TLS files cannot be used "
                              f"({out.tls.ca_file}, {out.tls.cert_file}, {out.tls.key_file}): "
                              f"{getattr(e, 'reason', None) or e}") from None
        self._bytes = 0              # sent on this connection
        self._history: collections.deque[tuple[Chunk, int]] = collections.deque()
        self._marks: collections.deque[tuple[int, int]] = collections.deque()
        self._wnd_max = 0
        self.truncated = 0

    def connect(self) -> None:
        out = self._out
        s = socket.create_connection((out.host, out.port), timeout=CONNECT_TIMEOUT)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._ctx is not None:
                s = self._ctx.wrap_socket(s, server_hostname=out.tls.server_name or out.host)
                s.settimeout(SEND_TIMEOUT)
            else:
                s.setblocking(False)
        except (OSError, ssl.SSLError):
            s.close()
            raise
        self._sock = s
        self._bytes = 0
        self._wnd_max = 0
        self._history.clear()
        self._marks.clear()

    def _alive(self, s: socket.socket) -> None:
        """Raises if the receiver has closed: better now than after sending into the void.
        (rsyslog's omfwd does the same peek.)"""
        if self._tls:
            return
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                raise PeerClosed(errno.ECONNRESET, "the receiver closed the connection")
        except BlockingIOError:
            pass

    def send_chunk(self, chunk: Chunk, spool: Spool, stop: Callable[[], bool]) -> bool:
        s = self._sock
        assert s is not None
        self._remember(chunk)
        pos, end = chunk.start, chunk.end
        fd = s.fileno()
        try:
            self._alive(s)
            while pos < end:
                if self._tls:
                    try:
                        n = s.send(chunk.view[pos:min(end, pos + _TLS_RECORD)])
                    except TimeoutError:
                        if stop():
                            return False
                        continue
                else:
                    if not select.select([], [fd], [], SEND_TIMEOUT)[1]:
                        if stop():
                            return False
                        continue
                    try:
                        n = os.sendfile(fd, chunk.fd, pos, end - pos)
                    except BlockingIOError:
                        continue
                    if n == 0:
                        raise ConnectionResetError("sendfile sent nothing")
                pos += n
                self._bytes += n
                spool.advance(chunk, pos)
                if (got := self._tcp_info()) is not None:
                    self._wnd_max = max(self._wnd_max, got[1])
                    if self._tls:     # where this record ends in the TCP stream
                        self._marks.append((got[0] + _outq(fd), self._bytes))
        except OSError as e:
            self._rewind(spool, graceful=isinstance(e, PeerClosed) or e.errno == errno.EPIPE)
            raise
        return True

    def _remember(self, chunk: Chunk) -> None:
        h = self._history
        h.append((chunk, self._bytes))
        while len(h) > 1 and self._bytes - h[0][1] > _HISTORY_BYTES:
            h.popleft()
        m = self._marks
        while m and self._bytes - m[0][1] > _HISTORY_BYTES:
            m.popleft()

    def _tcp_info(self) -> tuple[int, int] | None:
        """(data bytes the receiver's kernel acknowledged, its last advertised window)."""
        s = self._sock
        if s is None:
            return None
        try:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        except OSError:
            return None
        if len(info) < _TCP_INFO_LEN:
            return None
        (acked,) = struct.unpack_from("<Q", info, _TCPI_BYTES_ACKED)
        (wnd,) = struct.unpack_from("<I", info, _TCPI_SND_WND)
        return max(acked - 1, 0), wnd       # the SYN counts one byte in tcpi_bytes_acked

    def _rewind(self, spool: Spool, graceful: bool) -> None:
        """After a break: what the receiver's kernel did not acknowledge goes again. So does
        what it acknowledged but its program may not have read, unless it closed gracefully:
        a FIN (our EOF; an RST after it is EPIPE, Linux's tcp_reset) is sent only when the
        program has read everything, an RST alone (ECONNRESET) when it had not; it may then
        have left its whole window unread."""
        got = self._tcp_info()
        if got is None or not self._history:
            return
        acked, wnd = got
        graceful = graceful and not self._tls
        unread = 0 if graceful else max(self._wnd_max, self._wnd_max - wnd)
        start = max(acked - unread, 0)          # in the TCP stream
        if self._tls:
            # -> the TLS records wholly in it, less the receiver's TLS buffers (rsyslog's
            # gtls driver reads ahead of what it has parsed): _TLS_HELD records more
            whole = [p for t, p in self._marks if t <= start]
            start = whole[-_TLS_HELD - 1] if len(whole) > _TLS_HELD else 0
        for chunk, base in self._history:
            if start < base + (chunk.end - chunk.start):
                spool.rewind(chunk, chunk.start + max(start - base, 0))
                return

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._history.clear()


def transport_for(out: SyslogOutput) -> Transport:
    if out.scheme in ("tcp", "tls"):
        return StreamTransport(out)
    if out.scheme == "relp":
        return RelpTransport(out)
    return DatagramTransport(out)
