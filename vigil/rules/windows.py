"""The state of one correlation group (one correlation, one set of group-by values), bounded.

Owns the time arithmetic of vigil.rules.correlation's engine for one group, in event time
(nanoseconds), knowing nothing of Sigma documents:

- sliding windows, for conditions that can only become true as events are added (``gt``,
  ``gte``): an event counts while it is no more than ``span`` older than the group's newest
  event; the condition is checked on every event (the engine starts the group afresh once it
  held: one match per ``need`` events, not one per event);
- fixed windows, for the other conditions (``lt``, ``lte``, ``eq``, ``neq``): the window opens
  with the group's first event and closes ``span`` later; the count is judged at the close;
- ordered chains (temporal_ordered): per step, the chain of steps 0..i with the latest start
  whose events are in timestamp order (equal times count as in order).

Out of order: an event more than ``span`` older than its group's newest (sliding), or out of
reach of its fixed window, is *late* and not counted. Within reach, the order of arrival does
not matter (sorted timestamps, the newest sighting per value and rule), except for chains,
which keep one chain per step: with events delivered out of order a chain may be missed, none
is made up. Memory per group: at most ``need`` timestamps or values (fixed windows: ``cap``
values, one counter), one entry per rule, MAX_SAMPLES records (kept by reference).
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

Record = Mapping[str, str]
Sample = tuple[int, Record]
Chain = tuple[int, int, tuple[Sample, ...]]   # start, end, the steps' (time, record)
MAX_SAMPLES: Final = 10


@dataclass(frozen=True)
class Hit:
    """A condition that held: the count, the first and last event times, sample records."""

    count: int
    first_ns: int
    last_ns: int
    records: tuple[Record, ...]


def digest(values: tuple[str, ...]) -> bytes:
    """A fixed-size key for a value (or tuple of values) counted by value_count: groups keep
    16 bytes per distinct value, whatever the values' length."""
    h = hashlib.blake2b(digest_size=16)
    for v in values:
        b = v.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.digest()


def _records(samples: list[Sample]) -> tuple[Record, ...]:
    samples.sort(key=lambda s: s[0])
    return tuple(r for _, r in samples[-MAX_SAMPLES:])


class Group:
    """One group's state. The engine uses one kind of method per correlation type."""

    __slots__ = ("chain", "count", "first", "last", "samples", "steps", "times", "values")

    def __init__(self, ts: int, steps: int = 0) -> None:
        self.first = ts                      # oldest event time held (fixed: window start)
        self.last = ts                       # newest event time seen
        self.count = 0
        self.times = array("q")              # sliding event_count: sorted times
        self.values: dict[bytes, int] = {}   # value_count: value -> newest sighting
        self.steps: dict[int, Sample] = {}   # temporal: rule position -> newest sighting
        self.chain: list[Chain | None] = [None] * steps
        self.samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)

    def _see(self, t: int, rec: Record, sample: bool = True) -> None:
        self.first = min(self.first, t)
        self.last = max(self.last, t)
        if sample:
            self.samples.append((t, rec))

    def _recent(self, cutoff: int) -> tuple[Record, ...]:
        return _records([s for s in self.samples if s[0] >= cutoff])

    # --- sliding windows ------------------------------------------------------------------

    def late(self, t: int, span: int) -> bool:
        return t < self.last - span

    def events(self, t: int, rec: Record, span: int, need: int) -> Hit | None:
        """event_count: ``need`` events within ``span``."""
        self._see(t, rec)
        insort(self.times, t)
        cutoff = self.last - span
        del self.times[:bisect_left(self.times, cutoff)]
        if len(self.times) < need:
            return None
        return Hit(len(self.times), self.times[0], self.times[-1], self._recent(cutoff))

    def distinct(self, t: int, rec: Record, key: bytes, span: int, need: int) -> Hit | None:
        """value_count: ``need`` distinct values within ``span``."""
        self._see(t, rec)
        self.values[key] = max(self.values.get(key, t), t)
        if len(self.values) < need:
            return None
        cutoff = self.last - span
        self.values = {k: v for k, v in self.values.items() if v >= cutoff}
        if len(self.values) < need:
            return None
        return Hit(len(self.values), min(self.values.values()), self.last, self._recent(cutoff))

    def rules(self, t: int, rec: Record, pos: int, span: int, need: int) -> Hit | None:
        """temporal: ``need`` of the referenced rules matched within ``span``."""
        self._see(t, rec, sample=False)
        old = self.steps.get(pos)
        if old is None or old[0] <= t:
            self.steps[pos] = (t, rec)
        cutoff = self.last - span
        for p in [p for p, (ts, _) in self.steps.items() if ts < cutoff]:
            del self.steps[p]
        if len(self.steps) < need:
            return None
        seen = list(self.steps.values())
        return Hit(len(seen), min(s[0] for s in seen), max(s[0] for s in seen),
                   _records(seen))

    def ordered(self, t: int, rec: Record, pos: int, span: int) -> Hit | None:
        """temporal_ordered: every referenced rule, in the listed order, within ``span``."""
        self._see(t, rec, sample=False)
        if pos == 0:
            cur = self.chain[0]
            if cur is None or cur[0] <= t:
                self.chain[0] = (t, t, ((t, rec),))
        else:
            prev = self.chain[pos - 1]
            if prev is not None and prev[1] <= t and t - prev[0] <= span:
                cand = (prev[0], t, (*prev[2], (t, rec))[-MAX_SAMPLES:])
                cur = self.chain[pos]
                if cur is None or (cand[0], -cand[1]) > (cur[0], -cur[1]):
                    self.chain[pos] = cand
        cutoff = self.last - span
        self.chain = [c if c is not None and c[0] >= cutoff else None for c in self.chain]
        done = self.chain[-1]
        if done is None:
            return None
        return Hit(len(self.chain), done[0], done[1], tuple(r for _, r in done[2]))

    # --- fixed windows --------------------------------------------------------------------

    def place(self, t: int, span: int) -> Literal["in", "after", "late"]:
        """Where ``t`` falls for a fixed window opened at ``first``: inside (an earlier time
        moves the start, as long as the window still spans no more than ``span``), after
        it (the window is over), or too early to fit (late)."""
        if t - self.first > span:
            return "after"
        if self.last - t > span:
            return "late"
        return "in"

    def add(self, kind: str, t: int, rec: Record, pos: int, key: bytes, cap: int) -> None:
        """Count one event into a fixed window; distinct values stop being stored at ``cap``
        (the count is then known to exceed every number in the condition)."""
        self._see(t, rec, sample=kind != "temporal")
        if kind == "event_count":
            self.count += 1
        elif kind == "value_count":
            if key in self.values or len(self.values) < cap:
                self.values[key] = t
        elif pos not in self.steps or self.steps[pos][0] <= t:
            self.steps[pos] = (t, rec)

    def closed(self, kind: str) -> Hit:
        """The fixed window's count and records, at its close."""
        if kind == "event_count":
            return Hit(self.count, self.first, self.last, _records(list(self.samples)))
        if kind == "value_count":
            return Hit(len(self.values), self.first, self.last, _records(list(self.samples)))
        return Hit(len(self.steps), self.first, self.last, _records(list(self.steps.values())))
