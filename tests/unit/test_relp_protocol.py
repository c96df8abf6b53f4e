"""The RELP client's own logic: its frames, the parser on bytes cut anywhere, transaction
numbers wrapping, and the cursor against a tiny scripted server in the test (a unit test of the
protocol logic; the proof against rsyslog is tests/outputs/test_syslog_relp.py): it moves only
over acknowledged messages, in order; a refusal or the server's close leaves the rest unsent."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vigil.config.model import SyslogOutput
from vigil.outputs.spool import Spool, frame
from vigil.outputs.syslog_msg import seq_valid
from vigil.outputs.syslog_relp import (
    TXNR_MAX,
    RelpParser,
    RelpProtocolError,
    RelpRefused,
    RelpTransport,
    next_txnr,
    relp_frame,
    rsp_status,
)


def test_frames() -> None:
    assert relp_frame(1, b"syslog", b"<13>1 - x") == b"1 syslog 9 <13>1 - x\n"
    assert relp_frame(7, b"close") == b"7 close 0\n"
    assert next_txnr(1) == 2 and next_txnr(TXNR_MAX - 1) == TXNR_MAX
    assert next_txnr(TXNR_MAX) == 1
    assert rsp_status(b"200 OK\nrelp_version=0") == (200, "OK")
    assert rsp_status(b"500 no room") == (500, "no room")
    with pytest.raises(RelpProtocolError):
        rsp_status(b"OK")


def test_parser_on_bytes_cut_anywhere() -> None:
    offers = (b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,"
              b"http://librelp.adiscon.com\ncommands=syslog")
    wire = (b"1 rsp %d %s\n" % (len(offers), offers)
            + b"2 rsp 6 200 OK\n0 serverclose 0\n3 rsp 10 500 a\nb c\n\n")
    want = [(1, "rsp", offers), (2, "rsp", b"200 OK"), (0, "serverclose", b""),
            (3, "rsp", b"500 a\nb c\n")]
    assert RelpParser().feed(wire) == want
    for cut in range(1, len(wire)):
        p = RelpParser()
        assert p.feed(wire[:cut]) + p.feed(wire[cut:]) == want, cut
    p = RelpParser()
    assert [f for i in range(len(wire)) for f in p.feed(wire[i:i + 1])] == want


@pytest.mark.parametrize("bad", [b"x rsp 6 200 OK\n", b"1 rsp 6 200 OKX", b"1 rsp 6X200 OK\n",
                                 b"1234567890 rsp 0\n", b"1 r-sp 0\n", b"1 rsp 0 \n"])
def test_parser_refuses_what_is_not_relp(bad: bytes) -> None:
    with pytest.raises(RelpProtocolError):
        RelpParser().feed(bad)


def test_parser_refuses_a_huge_frame() -> None:
    with pytest.raises(RelpProtocolError, match="too big"):
        RelpParser(max_data=100).feed(b"1 syslog 101 ")


Policy = Callable[[int, bytes, socket.socket], bool]


class Server:
    """Answers ``open`` with 200 and each ``syslog`` as ``policy(txnr, msg, conn)`` does
    (which returns False to stop reading); records the frames it got."""

    def __init__(self, policy: Policy, open_answer: bytes = b"200 OK\ncommands=syslog") -> None:
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.policy = policy
        self.open_answer = open_answer
        self.frames: list[tuple[int, str, bytes]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.lsock.accept()
        with conn:
            parser = RelpParser()
            while data := conn.recv(65536):
                for txnr, cmd, body in parser.feed(data):
                    self.frames.append((txnr, cmd, body))
                    if cmd == "open":
                        conn.sendall(relp_frame(txnr, b"rsp", self.open_answer))
                    elif cmd == "close":
                        conn.sendall(relp_frame(txnr, b"rsp"))
                        return
                    elif not self.policy(txnr, body, conn):
                        return

    def close(self) -> None:
        self.lsock.close()
        self.thread.join(5)


def ok(txnr: int, msg: bytes, conn: socket.socket) -> bool:
    conn.sendall(relp_frame(txnr, b"rsp", b"200 OK"))
    return True


def msg(seq: int) -> bytes:
    return b'<109>1 - host vigil 1 exec [vigil@32473 seq="%d"] x' % seq


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    sp = Spool(tmp_path / "spool", 1 << 20, valid=seq_valid)
    sp.append([frame(msg(k)) for k in range(1, 11)], 1)
    try:
        yield sp
    finally:
        sp.close()


def transport(server: Server) -> RelpTransport:
    return RelpTransport(SyslogOutput(address=f"relp://127.0.0.1:{server.port}",
                                      scheme="relp", host="127.0.0.1", port=server.port))


def run(server: Server, spool: Spool, first_txnr: int | None = None) -> RelpTransport:
    tr = transport(server)
    tr.connect()
    if first_txnr is not None:
        tr._txnr = first_txnr - 1
    chunk = spool.take()
    assert chunk is not None
    try:
        tr.send_chunk(chunk, spool, lambda: True)
    finally:
        tr.close()
        server.close()
    return tr


def test_open_offers_then_messages_then_close(spool: Spool) -> None:
    server = Server(ok)
    run(server, spool)
    cmds = [(t, c) for t, c, _ in server.frames]
    assert cmds == [(1, "open"), *[(k + 1, "syslog") for k in range(1, 11)], (12, "close")]
    offers = server.frames[0][2].split(b"\n")
    assert offers == [b"relp_version=0", b"relp_software=vigil", b"commands=syslog"]
    assert [b for _, c, b in server.frames if c == "syslog"] == [msg(k) for k in range(1, 11)]
    assert (spool.queued(), spool.stats()["sent"]) == (0, 10)


def test_transaction_numbers_wrap(spool: Spool) -> None:
    server = Server(ok)
    run(server, spool, first_txnr=TXNR_MAX - 2)
    got = [t for t, c, _ in server.frames if c == "syslog"]
    assert got == [TXNR_MAX - 2, TXNR_MAX - 1, TXNR_MAX, *range(1, 8)]
    assert spool.queued() == 0


def test_cursor_moves_over_acknowledged_prefix_only(spool: Spool) -> None:
    """Answers 1..3, then 5 and 6 before 4, then nothing: the cursor stops after 6."""
    held: list[int] = []

    def policy(txnr: int, body: bytes, conn: socket.socket) -> bool:
        seq = txnr - 1
        if seq in (4, 5):
            held.append(txnr)
        elif seq <= 6:
            conn.sendall(relp_frame(txnr, b"rsp", b"200 OK"))
            if seq == 6:
                for t in reversed(held):
                    conn.sendall(relp_frame(t, b"rsp", b"200 OK"))
        return seq < 10

    server = Server(policy)
    with pytest.raises(ConnectionResetError):
        run(server, spool)
    assert (spool.queued(), spool.stats()["sent"]) == (4, 6)
    chunk = spool.take()
    assert chunk is not None and chunk.first_seq == 7


def test_a_refusal_fails_the_message(spool: Spool) -> None:
    def policy(txnr: int, body: bytes, conn: socket.socket) -> bool:
        status = b"500 no room" if txnr - 1 == 3 else b"200 OK"
        conn.sendall(relp_frame(txnr, b"rsp", status))
        return True

    server = Server(policy)
    with pytest.raises(RelpRefused, match="500 no room"):
        run(server, spool)
    assert (spool.queued(), spool.stats()["sent"]) == (8, 2)


def test_serverclose_ends_the_session(spool: Spool) -> None:
    def policy(txnr: int, body: bytes, conn: socket.socket) -> bool:
        if txnr - 1 == 5:
            conn.sendall(b"0 serverclose 0\n")
            return False
        return ok(txnr, body, conn)

    server = Server(policy)
    with pytest.raises(ConnectionResetError, match="serverclose"):
        run(server, spool)
    assert spool.queued() == 6


@pytest.mark.parametrize("answer,err", [(b"500 go away", "refused the RELP session"),
                                        (b"200 OK\ncommands=other", "does not take syslog")])
def test_open_refused(answer: bytes, err: str) -> None:
    server = Server(ok, open_answer=answer)
    tr = transport(server)
    try:
        with pytest.raises(RelpRefused, match=err):
            tr.connect()
    finally:
        tr.close()
        server.close()
