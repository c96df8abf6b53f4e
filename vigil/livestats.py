"""What the running agent knows about itself between summaries, for its metrics: the newest
event handled (pipeline lag), alerts per rule, the parts it can ask (ring, process table), and
where its time goes (``StageTimes``: seconds and items per user-space stage).

Owns cheap per-batch bookkeeping on the agent's thread; the metrics endpoint (vigil.metrics)
reads it from its own thread at scrape time (plain attribute reads and dict copies).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Protocol

from vigil.enrich.process import ProcessTable


class StageTimes:
    """CPU time of the agent's thread and items per stage of its steps (decode, pipeline, ecs,
    rules, fim, each output), read by bench/pipeline.py. CPU time, not wall time: on a busy
    machine a stage's wall time includes whatever ran while the agent waited for a CPU. One
    clock read per stage per step of ~128 records: nothing next to the step's work."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.items: dict[str, int] = {}

    clock = staticmethod(time.thread_time)

    def add(self, stage: str, since: float, items: int) -> float:
        """Books the time since ``since`` (a ``clock()`` value) to ``stage``; returns now."""
        now = time.thread_time()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        self.items[stage] = self.items.get(stage, 0) + items
        return now


class _Ring(Protocol):
    def fill_ratio(self) -> float | None: ...


class LiveStats:
    def __init__(self) -> None:
        self.started = time.time()
        self.lag = 0.0                   # seconds between an event and its handling
        self.alerts: Counter[tuple[str, str]] = Counter()   # (rule, level) -> alerts
        self.procs: ProcessTable | None = None
        self.reader: _Ring | None = None

    def handled(self, newest: object) -> None:
        """A batch went through; ``newest`` its last event (its timestamp, when it has one)."""
        ts = getattr(newest, "timestamp_ns", None)
        if isinstance(ts, int) and ts > 0:
            self.lag = max(0.0, (time.time_ns() - ts) / 1e9)

    def idle(self) -> None:
        """A wait brought nothing: nothing waits, no lag."""
        self.lag = 0.0

    def ring_fill(self) -> float | None:
        reader = self.reader
        fill = getattr(reader, "fill_ratio", None)
        return fill() if fill is not None else None

    def process_count(self) -> int:
        return len(self.procs) if self.procs is not None else 0
