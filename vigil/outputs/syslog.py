"""The syslog output: events -> RFC 5424 messages -> the on-disk spool -> a sender thread.

Owns the sink (``SyslogSink``: emit, close, stats) and its sender thread. ``emit`` never
touches the network: it formats a batch (vigil.outputs.syslog_msg) and appends it to the spool
(vigil.outputs.spool) with one write, then wakes the sender. The sender connects (again and
again while the receiver is down, waiting 0.1 s doubling to 2 s), takes the spool's unsent
messages in order and sends them (vigil.outputs.syslog_transport), the spool's cursor following
every send. Nothing is lost while the receiver is down, nor when the agent is killed: the spool
keeps what was not sent for the next start (bounded: the oldest are dropped and counted).

``close()`` sends what it can for up to ``CLOSE_TIMEOUT`` seconds and leaves the rest in the
spool. ``stats()`` gives the counters the metrics read; new ``dropped`` messages are the
agent's to report as an ``events-lost`` event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from vigil.config.model import SyslogOutput
from vigil.outputs.base import Output
from vigil.outputs.batch import ecs_documents, ecs_json
from vigil.outputs.ecs import host_fields
from vigil.outputs.spool import Spool
from vigil.outputs.syslog_msg import Formatter, seq_valid
from vigil.outputs.syslog_transport import Transport, transport_for

CLOSE_TIMEOUT: Final = 5.0
BACKOFF_MIN: Final = 0.1
BACKOFF_MAX: Final = 2.0


class SyslogSink:
    """One ``outputs.syslog`` entry. ``spool_dir``: ``Config.spool_dir(out)``."""

    def __init__(self, out: SyslogOutput, spool_dir: Path, *,
                 host: dict[str, Any] | None = None,
                 close_timeout: float = CLOSE_TIMEOUT) -> None:
        self.out = out
        self._host = host if host is not None else host_fields()
        self._fmt = Formatter(out.facility, out.app_name, out.format, self._host["name"])
        self._transport: Transport = transport_for(out)     # first: a bad TLS file fails
        self._spool = Spool(spool_dir, out.spool_max_mb << 20, valid=seq_valid)
        self._close_timeout = close_timeout
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = 0.0
        self._emit_lock = threading.Lock()
        self.connected = False
        self.connects = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name=f"syslog-{out.key}",
                                        daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        """The output's name (its spool's folder; ``output:NAME`` in events-lost)."""
        return self.out.key

    # -- the agent's side ----------------------------------------------------------------

    def emit(self, events: Sequence[Output]) -> None:
        if not events:
            return
        docs = ecs_documents(events, self._host)
        other = None
        if self.out.format == "ocsf":
            def other() -> list[dict[str, Any]]:
                from vigil.outputs.ocsf import ocsf_documents
                return ocsf_documents(events, self._host)
        bodies = self._fmt.bodies(docs, other, lambda: ecs_json(events, self._host))
        with self._emit_lock:
            seq = self._spool.next_seq
            make = self._fmt.frame
            frames = [make(d, seq + i, b) for i, (d, b) in enumerate(zip(docs, bodies,
                                                                         strict=True))]
            self._spool.append(frames, seq)
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        """spool_bytes (on disk), queued (messages not sent yet), sent, dropped (cumulative,
        unsent messages the spool's bound or a write error cost), truncated (datagrams cut),
        connected, connects, torn_bytes (cut off at start), next_seq, last_error."""
        st: dict[str, Any] = self._spool.stats()
        st.update(connected=self.connected, connects=self.connects,
                  truncated=self._transport.truncated,
                  last_error=self.last_error or self._spool.last_error)
        return st

    def close(self, timeout: float | None = None) -> None:
        """Sends what it can within the timeout; the rest stays in the spool."""
        if self._stop.is_set():
            return
        wait = self._close_timeout if timeout is None else timeout
        self._deadline = time.monotonic() + wait
        self._stop.set()
        self._wake.set()
        self._thread.join(wait + 2.0)
        if not self._thread.is_alive():
            self._spool.close()

    # -- the sender thread -----------------------------------------------------------------

    def _give_up(self) -> bool:
        return self._stop.is_set() and time.monotonic() >= self._deadline

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        tr, spool = self._transport, self._spool
        try:
            while not self._give_up():
                if not self.connected:
                    if self._stop.is_set() and spool.queued() == 0:
                        break
                    try:
                        tr.connect()
                    except OSError as e:
                        self.last_error = f"{self.out.address}: {e.strerror or e}"
                        self._wake.wait(min(backoff, max(self._deadline - time.monotonic(),
                                                         0.01)) if self._stop.is_set()
                                        else backoff)
                        self._wake.clear()
                        backoff = min(backoff * 2, BACKOFF_MAX)
                        continue
                    self.connected, backoff = True, BACKOFF_MIN
                    self.connects += 1
                self._wake.clear()
                chunk = spool.take()
                if chunk is None:
                    if self._stop.is_set():
                        break
                    self._wake.wait(1.0)
                    continue
                try:
                    if not tr.send_chunk(chunk, spool, self._give_up):
                        break
                except OSError as e:
                    self.last_error = f"{self.out.address}: {e.strerror or e}"
                    tr.close()
                    self.connected = False
        finally:
            tr.close()
            self.connected = False
