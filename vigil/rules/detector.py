"""Rules on live events: the agent's detection stage, between the pipeline and the outputs.

Owns what happens to a batch of events once the pipeline has made them: each kernel event is
rendered as its ECS document once, turned into flat records per logsource category
(vigil.rules.fieldmap), matched by the compiled engine, and every match becomes an ``Alert``,
unless a first alert for the same rule and process was sent within the suppression window:
then it is counted, and one ``repeat`` alert with the count follows when the window closes.
Every match, alert and suppression is counted (``counters``, the run summary). A reload
(SIGHUP) swaps the rule set between two batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from vigil.events.model import ExecEvent, ExitEvent, FileEvent
from vigil.outputs.base import Output
from vigil.outputs.ecs import host_fields, to_ecs
from vigil.rules.alert import Alert, RuleInfo
from vigil.rules.correlation import Correlation, CorrelationMatch
from vigil.rules.ecsview import ENGINE_KEY, Fields, field_paths
from vigil.rules.fieldmap import ecs_to_records
from vigil.rules.model import Rule
from vigil.rules.ruleset import RuleSet

MAX_WINDOWS: Final = 10_000   # open suppression windows; past that the oldest closes early
# correlation state is expired this long after the wall clock: events reach the detector in
# batches, a little after they happened
LATENESS_NS: Final = 2_000_000_000


def _own_fields(ruleset: RuleSet) -> Fields:
    """Per key of Vigil's own logsource, the fields its rules read and the correlations
    group or count by (the record is made of those alone)."""
    extra: set[str] = set()
    for c in ruleset.correlations.correlations if ruleset.correlations is not None else ():
        extra.update(c.group_by, c.field)
        extra.update(f for alias in c.aliases.values() for f in alias.values())
    out: dict[str, tuple[tuple[str, tuple[str, ...]], ...] | None] = {}
    for k in ENGINE_KEY.values():
        fields = ruleset.engine.fields(k)
        out[k] = field_paths(None if fields is None else fields | extra)
    return out


@dataclass
class _Window:
    first: Alert
    suppressed: int = 0
    last_event: dict[str, Any] | None = None
    last_ns: int = 0


class Detector:
    def __init__(self, ruleset: RuleSet, suppress_window_s: int,
                 host: dict[str, Any] | None = None) -> None:
        self.ruleset = ruleset
        self._fields = _own_fields(ruleset)
        self.window_ns = suppress_window_s * 1_000_000_000
        self.host = host if host is not None else host_fields()
        self._infos: dict[int, RuleInfo] = {}
        self._windows: dict[tuple[str, str], _Window] = {}   # insertion order = age
        self.matches = 0
        self.alerts = 0
        self.suppressed = 0
        self._next_expiry = 0

    def swap(self, ruleset: RuleSet) -> list[Alert]:
        """A new rule set (reload); the open windows of the old one close now."""
        out = self._close(lambda w: True)
        self.ruleset = ruleset
        self._fields = _own_fields(ruleset)
        self._infos.clear()
        return out

    def _info(self, rule: Rule | Correlation) -> RuleInfo:
        info = self._infos.get(id(rule))
        if info is None:
            info = self._infos[id(rule)] = RuleInfo.of(rule)
        return info

    def process(self, events: Sequence[Output]) -> list[Alert]:
        """The alerts of a batch of the agent's events (kernel events; the rest pass by)."""
        if not self.ruleset.engine.matchers:
            return []
        return self.process_documents(
            (ev.timestamp_ns, to_ecs(ev, self.host)) for ev in events
            if isinstance(ev, FileEvent | ExecEvent | ExitEvent))

    def process_documents(self, docs: Iterable[tuple[int, dict[str, Any]]]) -> list[Alert]:
        """The alerts of ECS documents with their times (ns): the live events, or recorded
        ones (``vigil rules test``). One event matches a rule at most once, whatever the
        number of its records (the auditd view makes several)."""
        engine = self.ruleset.engine
        ce = self.ruleset.correlations
        wanted = engine.matchers.keys()
        fields = self._fields
        out: list[Alert] = []
        for ts, doc in docs:
            seen: set[int] = set()
            for category, record in ecs_to_records(doc, wanted, fields):
                for rule in engine.match(category, record):
                    if id(rule) in seen:
                        continue
                    seen.add(id(rule))
                    self.matches += 1
                    if ce is not None and ce.wants(rule):
                        out += self._correlated(ce.feed(rule, record, ts), doc)
                    if not self.ruleset.alerts_for(rule):
                        continue
                    alert = self._alert(self._info(rule), category, doc, ts)
                    if alert is not None:
                        out.append(alert)
        return out

    def _correlated(self, matches: list[CorrelationMatch],
                    doc: dict[str, Any] | None) -> list[Alert]:
        """Correlation matches -> alerts: the event that completed it (none when a window
        closed by time), the group-by values, and the base records it counted."""
        out = []
        for m in matches:
            if not m.alert:
                continue
            info = self._info(m.correlation)
            self.alerts += 1
            out.append(Alert(m.last_ns, info, "correlation", doc or {}, count=m.count,
                             first_ns=m.first_ns, group=dict(m.group),
                             related=[dict(r) for r in m.records]))
        return out

    def _alert(self, info: RuleInfo, category: str, doc: dict[str, Any],
               ts: int) -> Alert | None:
        if self.window_ns <= 0:
            self.alerts += 1
            return Alert(ts, info, category, doc, first_ns=ts)
        entity = str(doc.get("process", {}).get("entity_id", ""))
        key = (info.key, entity)
        w = self._windows.get(key)
        if w is not None and ts - w.first.timestamp_ns < self.window_ns:
            w.suppressed += 1
            w.last_event, w.last_ns = doc, ts
            self.suppressed += 1
            return None
        if w is not None:   # its window has passed: close it before the new one opens
            del self._windows[key]
        alert = Alert(ts, info, category, doc, first_ns=ts)
        self._windows[key] = _Window(alert)
        self.alerts += 1
        return alert

    def tick(self, now_ns: int) -> list[Alert]:
        """The windows that have closed: a ``repeat`` alert for each that suppressed any."""
        out: list[Alert] = []
        ce = self.ruleset.correlations
        if ce is not None and now_ns >= self._next_expiry:
            self._next_expiry = now_ns + 1_000_000_000
            out += self._correlated(ce.expire(now_ns - LATENESS_NS), None)
        # windows are kept in the order they opened: the closed ones are at the front
        while self._windows:
            key, w = next(iter(self._windows.items()))
            if now_ns - w.first.timestamp_ns < self.window_ns \
                    and len(self._windows) <= MAX_WINDOWS:
                break
            out += self._flush(key)
        return out

    def _close(self, done: Callable[[_Window], bool]) -> list[Alert]:
        out: list[Alert] = []
        for key in [k for k, w in self._windows.items() if done(w)]:
            out += self._flush(key)
        return out

    def _flush(self, key: tuple[str, str]) -> list[Alert]:
        w = self._windows.pop(key)
        if not w.suppressed or w.last_event is None:
            return []
        self.alerts += 1
        first = w.first
        return [Alert(w.last_ns, first.rule, first.category, w.last_event, count=w.suppressed,
                      first_ns=first.timestamp_ns, repeat=True)]

    def close(self, at_ns: int | None = None) -> list[Alert]:
        """At the end of a run: every open window's count is said; with ``at_ns`` (replays),
        the correlation windows open at that time are judged as if it had come."""
        out: list[Alert] = []
        ce = self.ruleset.correlations
        if ce is not None and at_ns is not None:
            out += self._correlated(ce.expire(at_ns), None)
        return out + self._close(lambda w: True)

    def counters(self) -> dict[str, int]:
        out = {"matches": self.matches, "alerts": self.alerts, "suppressed": self.suppressed,
               "rules": len(self.ruleset.rules)}
        ce = self.ruleset.correlations
        if ce is not None:
            c = ce.counters()
            out.update(correlation_groups=c["groups"], correlation_overflow=c["overflow"],
                       correlation_late=c["late"])
        return out
