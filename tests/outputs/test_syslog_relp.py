"""The syslog output over RELP against a real rsyslogd (Debian's ``rsyslog`` and
``rsyslog-relp``: its ``imrelp`` input on a private port): every message arrives exactly once
and in order; rsyslog restarted in the middle of a burst, or down at the start, costs neither a
loss nor a duplicate, since the spool's cursor moves only over what rsyslog acknowledged."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from rsyslog_proc import Rsyslog, cleanup

from vigil.config.model import SyslogOutput
from vigil.events.model import LostEvents
from vigil.outputs.syslog import SyslogSink

HOST = {"name": "vigil-test-host", "hostname": "vigil-test-host"}


def relp_output(r: Rsyslog, **kw: object) -> SyslogOutput:
    return SyslogOutput(address=r.address("relp"), scheme="relp", host="127.0.0.1",
                        port=r.relp_port, **kw)  # type: ignore[arg-type]


def emit_all(sink: SyslogSink, n: int, batch: int = 50) -> None:
    """Message k carries ``lost="k"`` and the sequence number k."""
    for i in range(1, n + 1, batch):
        sink.emit([LostEvents(time.time_ns(), "file", k)
                   for k in range(i, min(i + batch, n + 1))])


def wait_acked(sink: SyslogSink, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sink.stats()["queued"] and time.monotonic() < deadline:
        time.sleep(0.05)


def settled(r: Rsyslog, n: int) -> list[int]:
    """What rsyslog wrote, once it has ``n`` different messages and a moment more (for a
    duplicate that would come late)."""
    r.wait_for(n, timeout=20)
    time.sleep(0.3)
    return r.seqs()


def twice(got: list[int]) -> list[int]:
    return sorted(k for k, c in Counter(got).items() if c > 1)


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    r = Rsyslog(tmp_path / "rsyslog")
    r.start()
    try:
        yield r
    finally:
        cleanup(r)


def test_every_message_once_in_order(rsyslog: Rsyslog, tmp_path: Path) -> None:
    n = 5000
    sink = SyslogSink(relp_output(rsyslog, facility=10), tmp_path / "spool", host=HOST)
    try:
        emit_all(sink, n)
        wait_acked(sink)
        st = sink.stats()
        got = settled(rsyslog, n)
    finally:
        sink.close()
    assert got == list(range(1, n + 1)), rsyslog.log()[-2000:]
    assert (st["sent"], st["dropped"], st["queued"], st["resent"]) == (n, 0, 0, 0)
    assert st["connected"] and st["connects"] == 1
    rec = rsyslog.received()
    assert {r["input"] for r in rec} == {"imrelp"}     # it came in by RELP, not another input
    first = rec[0]
    assert (first["pri"], first["host"], first["app"], first["msgid"]) == (
        str(10 * 8 + 4), "vigil-test-host", "vigil", "events-lost")
    for k, r in enumerate(rec, 1):
        assert f'lost="{k}"' in r["sd"]


def test_big_message_whole(rsyslog: Rsyslog, tmp_path: Path) -> None:
    """100 KB in one RELP frame: whole (imrelp's limit is rsyslog's maxMessageSize)."""
    from vigil.rules.alert import Alert, RuleInfo

    path = "/srv/" + "é" * 50_000
    matched = {"@timestamp": "2026-12-07T12:00:00.000000Z",
               "event": {"kind": "event", "action": "created", "dataset": "vigil.file"},
               "file": {"path": path}}
    alert = Alert(time.time_ns(), RuleInfo("r-big", "Big one", "high"), "file", matched)
    sink = SyslogSink(relp_output(rsyslog), tmp_path / "spool", host=HOST)
    try:
        sink.emit([alert, LostEvents(time.time_ns(), "file", 2)])
        got = settled(rsyslog, 2)
    finally:
        sink.close()
    assert got == [1, 2]
    assert f'"path":"{path}"' in rsyslog.received()[0]["msg"].replace(" ", "")


def test_receiver_down_then_up(rsyslog: Rsyslog, tmp_path: Path) -> None:
    rsyslog.stop()
    n = 5000
    sink = SyslogSink(relp_output(rsyslog), tmp_path / "spool", host=HOST)
    try:
        emit_all(sink, n)
        time.sleep(0.5)
        st = sink.stats()
        assert not st["connected"] and st["queued"] == n and st["sent"] == 0
        assert "refused" in st["last_error"].lower()
        rsyslog.start()
        wait_acked(sink)
        st = sink.stats()
        got = settled(rsyslog, n)
    finally:
        sink.close()
    assert got == list(range(1, n + 1))
    assert (st["sent"], st["queued"], st["resent"]) == (n, 0, 0)


@pytest.mark.parametrize("run", range(3))
def test_receiver_restarted_during_a_burst(tmp_path: Path, run: int) -> None:
    """rsyslog stopped (SIGTERM) and started again while messages flow: what it
    acknowledged is not sent again, what it did not is: each message exactly once."""
    r = Rsyslog(tmp_path / "rsyslog")
    r.start()
    n = 30000
    sink = SyslogSink(relp_output(r), tmp_path / "spool", host=HOST)
    try:
        t = threading.Thread(target=emit_all, args=(sink, n, 100))
        t.start()
        deadline = time.monotonic() + 20
        while sink.stats()["sent"] < n // 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        at = sink.stats()["sent"]
        r.stop()
        r.start()
        t.join()
        wait_acked(sink)
        st = sink.stats()
        got = settled(r, n)
    finally:
        sink.close()
        cleanup(r)
    missing = sorted(set(range(1, n + 1)) - set(got))
    print(f"RELP restart during a burst (after {at} acknowledged): {len(missing)} missing, "
          f"{len(got) - len(set(got))} twice, connects {st['connects']}")
    assert at < n, "the burst ended before the restart"
    assert st["connects"] >= 2
    assert (missing[:10], len(missing)) == ([], 0), r.log()[-3000:]
    assert (twice(got)[:10], len(got)) == ([], n)
    assert got == list(range(1, n + 1))
    assert (st["sent"], st["queued"]) == (n, 0)
