"""The syslog output against a real rsyslogd (Debian's package, a private config on private
ports and socket): every message arrives exactly once and in order over unix, udp, tcp and tls
(the server's certificate verified: a wrong CA is refused); and nothing is lost while rsyslog is
down, restarted in the middle of a burst, when the spool is full (the oldest dropped, counted
exactly), or when the agent is killed with SIGKILL in the middle of a burst."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from rsyslog_proc import Rsyslog, cleanup, make_ca

from vigil.config.model import SyslogOutput, TlsConfig
from vigil.events.model import LostEvents
from vigil.outputs.spool import Spool
from vigil.outputs.syslog import SyslogSink
from vigil.outputs.syslog_msg import seq_valid

HOST = {"name": "vigil-test-host", "hostname": "vigil-test-host"}
ROOT = Path(__file__).resolve().parents[2]


def output(address: str, **kw: object) -> SyslogOutput:
    scheme, rest = address.split("://", 1)
    if scheme == "unix":
        return SyslogOutput(address=address, scheme=scheme, path=rest, **kw)  # type: ignore[arg-type]
    host, port = rest.rsplit(":", 1)
    return SyslogOutput(address=address, scheme=scheme, host=host, port=int(port),
                        **kw)  # type: ignore[arg-type]


def events(start: int, n: int) -> list[LostEvents]:
    """Events numbered by their count: message k carries ``lost="k"``."""
    return [LostEvents(time.time_ns(), "file", k) for k in range(start, start + n)]


def emit_all(sink: SyslogSink, n: int, batch: int = 50, start: int = 1) -> None:
    for i in range(start, start + n, batch):
        sink.emit(events(i, min(batch, start + n - i)))


def wait_sent(sink: SyslogSink, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sink.stats()["queued"] and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    r = Rsyslog(tmp_path / "rsyslog")
    r.start()
    try:
        yield r
    finally:
        cleanup(r)


@pytest.mark.parametrize("scheme,fmt", [("unix", "json"), ("udp", "json"), ("tcp", "json"),
                                        ("tcp", "line")])
def test_every_message_once_in_order(rsyslog: Rsyslog, tmp_path: Path, scheme: str,
                                     fmt: str) -> None:
    n = 3000
    sink = SyslogSink(output(rsyslog.address(scheme), format=fmt, facility=10),
                      tmp_path / "spool", host=HOST)
    try:
        emit_all(sink, n)
        got = rsyslog.wait_for(n)
        st = sink.stats()
    finally:
        sink.close()
    assert got == list(range(1, n + 1)), rsyslog.log()[-2000:]
    assert (st["sent"], st["dropped"], st["queued"], st["connected"]) == (n, 0, 0, True)
    rec = rsyslog.received()
    # rsyslog parsed every part of the RFC 5424 header and kept the body intact
    first = rec[0]
    assert (first["pri"], first["host"], first["app"], first["msgid"]) == (
        str(10 * 8 + 4), "vigil-test-host", "vigil", "events-lost")
    assert first["procid"] == str(os.getpid())
    for k, r in enumerate(rec, 1):
        if fmt == "json":
            assert json.loads(r["msg"])["vigil"]["drops"]["count"] == k
        else:
            assert f"vigil.drops.count={k}" in r["msg"]
        assert f'lost="{k}"' in r["sd"]


def test_ocsf_body(rsyslog: Rsyslog, tmp_path: Path) -> None:
    """format: ocsf: the MSG is the OCSF document; the header and SD still come from ECS."""
    sink = SyslogSink(output(rsyslog.address("tcp"), format="ocsf"), tmp_path / "spool",
                      host=HOST)
    try:
        emit_all(sink, 100)
        got = rsyslog.wait_for(100)
    finally:
        sink.close()
    assert got == list(range(1, 101))
    for k, r in enumerate(rsyslog.received(), 1):
        doc = json.loads(r["msg"])
        assert doc["class_uid"] == 6008 and doc["metadata"]["event_code"] == "events-lost"
        assert f'lost="{k}"' in r["sd"] and r["msgid"] == "events-lost"


@pytest.mark.parametrize("scheme", ["udp", "unix", "tcp"])
def test_big_message(rsyslog: Rsyslog, tmp_path: Path, scheme: str) -> None:
    """An alert of 100 KB: whole over tcp; over datagrams cut at DGRAM_MAX and counted, its
    header and structured data intact (SD values are at most SD_VALUE_MAX characters)."""
    from vigil.outputs.syslog_msg import SD_VALUE_MAX
    from vigil.outputs.syslog_transport import DGRAM_MAX
    from vigil.rules.alert import Alert, RuleInfo

    path = "/srv/" + "é" * 50_000
    matched = {"@timestamp": "2026-12-07T12:00:00.000000Z",
               "event": {"kind": "event", "action": "created", "dataset": "vigil.file"},
               "file": {"path": path}}
    alert = Alert(time.time_ns(), RuleInfo("r-big", "Big one", "high"), "file", matched)
    sink = SyslogSink(output(rsyslog.address(scheme)), tmp_path / "spool", host=HOST)
    try:
        sink.emit([alert, *events(2, 1)])
        got = rsyslog.wait_for(2)
        st = sink.stats()
    finally:
        sink.close()
    assert got == [1, 2]
    big = rsyslog.received()[0]
    assert big["msgid"] == "alert" and big["pri"] == str(13 * 8 + 3)
    assert f'path="/srv/{"é" * (SD_VALUE_MAX - 5)}"' in big["sd"]
    if scheme == "tcp":
        assert json.loads(big["msg"])["file"]["path"] == path
        assert st["truncated"] == 0
    else:
        assert st["truncated"] == 1
        assert DGRAM_MAX - len(big["sd"].encode()) - 200 < len(big["msg"].encode()) < DGRAM_MAX
        assert big["msg"].startswith('{"@timestamp"')


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_ca(tmp_path_factory.mktemp("ca") / "good")


def test_tls_verified(tmp_path: Path, ca: dict[str, Path]) -> None:
    r = Rsyslog(tmp_path / "rsyslog", tls=ca)
    r.start()
    try:
        n = 2000
        sink = SyslogSink(output(r.address("tls"), tls=TlsConfig(ca_file=ca["ca"])),
                          tmp_path / "spool", host=HOST)
        try:
            emit_all(sink, n)
            got = r.wait_for(n)
        finally:
            sink.close()
        assert got == list(range(1, n + 1)), r.log()[-2000:]
        # another CA: the server's certificate is refused, nothing is sent, all is kept
        other = make_ca(tmp_path / "other")
        sink = SyslogSink(output(r.address("tls"), tls=TlsConfig(ca_file=other["ca"])),
                          tmp_path / "spool2", host=HOST)
        try:
            emit_all(sink, 10)
            time.sleep(1.5)
            st = sink.stats()
        finally:
            sink.close(timeout=0.5)
        assert not st["connected"] and st["sent"] == 0 and st["queued"] == 10
        assert "CERTIFICATE_VERIFY_FAILED" in st["last_error"]
        assert len(r.seqs()) == n
        # the right name is checked too: the certificate is for 127.0.0.1, not this name
        sink = SyslogSink(output(r.address("tls"), tls=TlsConfig(ca_file=ca["ca"],
                                                                   server_name="example.org")),
                          tmp_path / "spool3", host=HOST)
        try:
            emit_all(sink, 1)
            time.sleep(1.0)
            st = sink.stats()
        finally:
            sink.close(timeout=0.5)
        assert not st["connected"] and "CERTIFICATE_VERIFY_FAILED" in st["last_error"]
    finally:
        cleanup(r)


@pytest.mark.parametrize("scheme", ["tcp", "unix"])
def test_receiver_down_then_up(rsyslog: Rsyslog, tmp_path: Path, scheme: str) -> None:
    rsyslog.stop()
    n = 5000
    sink = SyslogSink(output(rsyslog.address(scheme)), tmp_path / "spool", host=HOST)
    try:
        emit_all(sink, n)
        time.sleep(0.5)
        st = sink.stats()
        assert not st["connected"] and st["queued"] == n and st["sent"] == 0
        rsyslog.start()
        got = rsyslog.wait_for(n)
    finally:
        sink.close()
    assert got == list(range(1, n + 1))


def test_close_leaves_the_rest_for_the_next_start(rsyslog: Rsyslog, tmp_path: Path) -> None:
    rsyslog.stop()
    sink = SyslogSink(output(rsyslog.address("tcp")), tmp_path / "spool", host=HOST)
    emit_all(sink, 500)
    sink.close(timeout=0.3)            # the receiver is down: nothing sent, nothing lost
    assert sink.stats()["queued"] == 500
    rsyslog.start()
    sink = SyslogSink(output(rsyslog.address("tcp")), tmp_path / "spool", host=HOST)
    try:
        emit_all(sink, 10, start=501)
        got = rsyslog.wait_for(510)
    finally:
        sink.close()
    assert got == list(range(1, 511))


def ranges(xs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for x in xs:
        if out and out[-1][1] == x - 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
def test_receiver_restarted_during_a_burst(tmp_path: Path, ca: dict[str, Path],
                                           scheme: str) -> None:
    """Plain TCP has no application acknowledgement: a receiver stopped in the middle of a
    burst may have read data its kernel never acknowledged to us, or acknowledged data it
    never read. The sender sends again what may be missing, so nothing is lost; a message
    may then come twice, with its sequence number, and only as one of those counted in
    ``resent``."""
    r = Rsyslog(tmp_path / "rsyslog", tls=ca if scheme == "tls" else None)
    r.start()
    n = 60000
    tls = TlsConfig(ca_file=ca["ca"]) if scheme == "tls" else TlsConfig()
    sink = SyslogSink(output(r.address(scheme), tls=tls), tmp_path / "spool", host=HOST)
    try:
        t = threading.Thread(target=emit_all, args=(sink, n, 100))
        t.start()
        while sink.stats()["sent"] < n // 4:      # restarted while messages flow
            time.sleep(0.005)
        r.stop()
        r.start()
        t.join()
        wait_sent(sink)
        got = r.wait_for(n)
        st = sink.stats()
    finally:
        sink.close()
        cleanup(r)
    missing = sorted(set(range(1, n + 1)) - set(got))
    dups = len(got) - len(set(got))
    if missing:
        print(ranges(missing)[:5], r.log()[-3000:])
    print(f"restart during a burst ({scheme}): {len(missing)} missing, {dups} twice, "
          f"resent {st['resent']}, connects {st['connects']}")
    assert st["connects"] >= 2
    assert (ranges(missing)[:10], len(missing)) == ([], 0)
    assert dups <= st["resent"]
    assert list(dict.fromkeys(got)) == list(range(1, n + 1))     # in order, deduplicated


def test_full_spool_drops_the_oldest_counted(rsyslog: Rsyslog, tmp_path: Path) -> None:
    rsyslog.stop()
    sink = SyslogSink(output(rsyslog.address("tcp"), spool_max_mb=1), tmp_path / "spool",
                      host=HOST)
    n = 12000                  # ~400 bytes each: several times the 1 MiB spool
    try:
        emit_all(sink, n)
        st = sink.stats()
        assert st["spool_bytes"] <= 1 << 20
        assert st["dropped"] > 0 and st["dropped"] + st["queued"] == n
        rsyslog.start()
        got = rsyslog.wait_for(st["queued"])
        time.sleep(0.5)
        got = rsyslog.seqs()
    finally:
        sink.close()
    # what arrived is the newest, in order, once; what did not is exactly the count
    assert got == list(range(n - len(got) + 1, n + 1))
    assert st["dropped"] == n - len(got)


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from vigil.config.model import SyslogOutput
from vigil.events.model import LostEvents
from vigil.outputs.spool import Spool
from vigil.outputs.syslog import SyslogSink
from vigil.outputs.syslog_msg import seq_valid
port, spool, start, n = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = SyslogOutput(address=f"tcp://127.0.0.1:{{port}}", scheme="tcp", host="127.0.0.1",
                   port=port)
sink = SyslogSink(out, spool, host={{"name": "child", "hostname": "child"}})
for i in range(start, start + n, 20):
    sink.emit([LostEvents(time.time_ns(), "file", k) for k in range(i, min(i + 20, start + n))])
    print(i + 19, flush=True)
    time.sleep(0.0005)
sink.close()
print("closed", flush=True)
"""


def test_agent_killed_mid_burst(rsyslog: Rsyslog, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT)))
    spool = tmp_path / "spool"
    cmd = [sys.executable, str(script), str(rsyslog.tcp_port), str(spool)]
    first = subprocess.Popen([*cmd, "1", "100000"], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        emitted = 0
        while emitted < 20000:            # well into the burst, the sender busy
            emitted = int(first.stdout.readline())
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    sp = Spool(spool, 256 << 20, valid=seq_valid)
    spooled, left = sp.next_seq - 1, sp.stats()["queued"]
    sp.close()
    # a new agent on the same spool: what the first left unsent, then its own
    second = subprocess.run([*cmd, "200001", "1000"], capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0 and "closed" in second.stdout, second.stderr
    total = spooled + 1000
    got = rsyslog.wait_for(total)
    time.sleep(0.3)
    got = rsyslog.seqs()
    twice = sorted(k for k, c in Counter(got).items() if c > 1)
    print(f"killed after {emitted} emitted: {spooled} spooled, {left} unsent; "
          f"{len(twice)} twice")
    assert spooled >= emitted
    # every message the first emitted, and the second's, arrive, in order
    assert list(dict.fromkeys(got)) == list(range(1, total + 1))
    # twice only the messages of the one send() the kill fell after, before its cursor
    # store (the sender's documented window): one run of at most one chunk, sent once more
    assert all(c <= 2 for c in Counter(got).values())
    assert twice == list(range(twice[0], twice[0] + len(twice))) if twice else True
    assert len(twice) <= 4096 and all(k <= spooled for k in twice)
