"""What an output is: something that takes batches of events and can be closed.

Owns the ``Sink`` protocol and what flows into it (kernel events, FIM events and alerts). Each
output module implements it; the agent fans every batch out to all of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

from vigil.events.model import Event
from vigil.fim.model import FimEvent
from vigil.rules.alert import Alert

Output = Event | FimEvent | Alert


class Sink(Protocol):
    def emit(self, events: Sequence[Output]) -> None: ...

    def close(self) -> None: ...


def write_all(fd: int, data: bytes) -> None:
    """Writes all of ``data`` to ``fd``, resuming after partial writes.

    Not through io.BufferedWriter on purpose: with CPython 3.11, a signal (our SIGTERM) landing
    during a large buffered write to a pipe loses part of the data (seen: a JSON line cut in the
    middle and ~400 events gone). os.write returns the partial count and we carry on.
    """
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def output_stats(sinks: Sequence[object]) -> dict[str, dict[str, Any]]:
    """The counters of the sinks that keep some (a syslog sink: spool bytes, dropped...), by
    output name; sinks without a ``name`` and ``stats()`` are left out."""
    out: dict[str, dict[str, Any]] = {}
    for sink in list(sinks):
        stats = getattr(sink, "stats", None)
        name = getattr(sink, "name", None)
        if stats is not None and isinstance(name, str):
            out[name] = stats()
    return out
