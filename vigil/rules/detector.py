"""Rules on live events: the agent's detection stage, between the pipeline and the outputs.

Owns what happens to a batch of events once the pipeline has made them: each kernel event is
rendered as its ECS document once, turned into flat records per logsource category
(vigil.rules.fieldmap), matched by the compiled engine, and every match becomes an ``Alert``,
unless a first alert for the same rule and process was sent within the suppression window:
then it is counted, and one ``repeat`` alert with the count follows when the window closes.
Every match, alert and suppression is counted (``counters``, the run summary). A reload
(SIGHUP) swaps the rule set between two batches. The batch is screened first
(vigil.rules.batchscreen): only the events that may fire are matched, only for the keys
that may, and with the atoms the screen found when it searched an event alone; a base rule's
record reaches the correlations whole only when one keeps it (vigil.rules.lazyrecord).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from vigil.events.model import ExecEvent, ExitEvent, FileEvent, NetEvent, ShellEvent
from vigil.events.security import CredEvent, SecEvent
from vigil.outputs.base import Output
from vigil.outputs.batch import Batch
from vigil.outputs.ecs import host_fields, to_ecs
from vigil.rules.alert import Alert, RuleInfo
from vigil.rules.auditd import AUDITD
from vigil.rules.batchscreen import BatchScreen
from vigil.rules.correlation import Correlation, CorrelationMatch
from vigil.rules.ecsview import Fields
from vigil.rules.fieldmap import (
    Parts,
    ecs_to_parts,
    key_parts,
    merged,
    record_plans,
)
from vigil.rules.lazyrecord import LazyRecord
from vigil.rules.matcher import CategoryMatcher, Screen
from vigil.rules.model import Rule
from vigil.rules.ruleset import RuleSet
from vigil.rules.shellview import SHELL_KEY
from vigil.rules.who import WhoCache

_FIRST: Final[set[int]] = set()   # a who part's atoms before its second event (identity)
MAX_WINDOWS: Final = 10_000   # open suppression windows; past that the oldest closes early
# correlation state is expired this long after the wall clock: events reach the detector in
# batches, a little after they happened
LATENESS_NS: Final = 2_000_000_000

# The events the rules see: what the kernel reported (FIM results and alerts pass by).
_KERNEL = (FileEvent, ExecEvent, ExitEvent, NetEvent, ShellEvent, CredEvent, SecEvent)


def _record_fields(ruleset: RuleSet) -> Fields:
    """Per engine key, the fields its records are made of for matching: those its rules
    read (a correlation is fed the whole record of a match)."""
    engine = ruleset.engine
    return record_plans({k: engine.fields(k) for k in engine.matchers if k is not None})


def _plan_names(plans: Fields) -> dict[str, frozenset[str]]:
    """Per key whose records are made of some fields only, the names of those fields (a
    record of a key not here is whole: auditd's, the typed commands', keyword rules')."""
    return {k: frozenset(n for n, _ in plan[0] + plan[1])
            for k, plan in plans.items() if plan is not None and k not in (AUDITD, SHELL_KEY)}


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
        self._fields = _record_fields(ruleset)
        self._names = _plan_names(self._fields)
        self._who = WhoCache()
        self._who_whole = WhoCache()
        self._atoms: dict[int, tuple[dict[str, str], set[int] | None]] = {}
        self._screen = BatchScreen(self)
        self.window_ns = suppress_window_s * 1_000_000_000
        self.host = host if host is not None else host_fields()
        self._infos: dict[int, RuleInfo] = {}
        self._how: dict[int, tuple[str | None, bool]] = {}   # by rule: see _how_of
        self._windows: dict[tuple[str, str], _Window] = {}   # insertion order = age
        self.matches = 0
        self.alerts = 0
        self.suppressed = 0
        self._next_expiry = 0

    def swap(self, ruleset: RuleSet) -> list[Alert]:
        """A new rule set (reload); the open windows of the old one close now."""
        out = self._close(lambda w: True)
        self.ruleset = ruleset
        self._fields = _record_fields(ruleset)
        self._names = _plan_names(self._fields)
        self._who = WhoCache()
        self._who_whole = WhoCache()
        self._atoms.clear()
        self._screen = BatchScreen(self)
        self._infos.clear()
        self._how.clear()
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
        kernel = [ev for ev in events if isinstance(ev, _KERNEL)]
        if isinstance(events, Batch):   # the documents the sinks will write, rendered once
            docs = [events.doc(i) for i, ev in enumerate(events) if isinstance(ev, _KERNEL)]
        else:
            docs = [to_ecs(ev, self.host) for ev in kernel]
        return self._alerts([ev.timestamp_ns for ev in kernel], docs)

    def process_documents(self, docs: Iterable[tuple[int, dict[str, Any]]]) -> list[Alert]:
        """The alerts of ECS documents with their times (ns): the live events, or recorded
        ones (``vigil rules test``)."""
        batch = list(docs)
        return self._alerts([ts for ts, _ in batch], [doc for _, doc in batch])

    def _alerts(self, times: list[int], docs: list[dict[str, Any]]) -> list[Alert]:
        """The batch is screened at once first (vigil.rules.batchscreen): only the documents
        that may fire a rule are matched, in order, each for the keys that may."""
        out: list[Alert] = []
        for i, keys, atoms in self._screen.screened(docs):
            doc = docs[i]
            for rule, key, r, record in self._matches(doc, keys, atoms):
                out += self._matched(rule, key, r, record, doc, times[i])
        return out

    def matching(self, doc: dict[str, Any], keys: Sequence[str] | None = None
                 ) -> list[tuple[Rule, str, int]]:
        """The rules one ECS document matches, each once (whatever the number of its
        records), with the key and index of the record it matched first. ``keys``: the
        only keys that may fire, some of the document's in its order (the batch screen's,
        vigil.rules.fieldmap.keys_of; None: the document is screened here)."""
        return [(rule, key, i) for rule, key, i, _ in self._matches(doc, keys)]

    def _matches(self, doc: dict[str, Any], keys: Sequence[str] | None,
                 atoms: set[int] | None = None) -> list[tuple[Rule, str, int, dict[str, str]]]:
        """``matching``, with the record each rule matched (made of the fields read). With
        ``keys``, only their records are made and matched; without, the records of every
        key are screened at once first (vigil.rules.matcher.Screen: most events can fire no
        rule), the fields from the who-data searched once per who-data (vigil.rules.who: a
        burst of one program's events pays for its file fields only); only the keys that
        pass are matched, record by record. A key with one record (all but auditd's) is
        matched with its atoms among the Screen's of the whole event (``atoms``, with
        ``keys``: the batch screen's, when it searched the event alone), not searched
        again."""
        matchers, screen = self.ruleset.engine.matchers, self.ruleset.engine.screen
        assert screen is not None
        if keys is not None:
            parts = key_parts(doc, keys, self._fields, self._who)
            hits = None
        else:
            parts, text, known = self.event_text(doc)
            if not parts:
                return []
            found = screen.atoms(text) if known is not None else None
            hits = None if found is None or known is None else found | known
        # a key with one record is matched with its atoms among the whole event's
        have = atoms if keys is not None else hits
        direct = have is not None and screen.scoped
        out: list[tuple[Rule, str, int, dict[str, str]]] = []
        seen: set[int] = set()
        for key, who, recs in parts:
            if hits is not None and not screen.passes(key, hits):
                continue
            m = matchers[key]
            if direct and have is not None and len(recs) == 1:
                record = {**recs[0], **who}
                for rule in m.match_atoms(screen.key_atoms(key, have), record):
                    out.append((rule, key, 0, record))   # a rule is of one key: found once
                continue
            for i, record in enumerate(merged(who, recs)):
                for rule in m.match(record):
                    if id(rule) not in seen:
                        seen.add(id(rule))
                        out.append((rule, key, i, record))
        return out

    def event_text(self, doc: dict[str, Any]) -> tuple[Parts, list[str], set[int] | None]:
        """One document's records per key (``ecs_to_parts``), the joined parts the Screen
        searches, and the atoms of its who parts already known (None: they cannot be
        searched joined, every key passes)."""
        engine = self.ruleset.engine
        matchers, screen = engine.matchers, engine.screen
        assert screen is not None
        parts = ecs_to_parts(doc, matchers.keys(), self._fields, self._who)
        text: list[str] = []
        known: set[int] | None = set()
        for key, who, recs in parts:
            m = matchers[key]
            w = self._who_atoms(screen, m, who)
            if w is _FIRST:   # not met before: searched with the rest of the event
                text += m.joined_parts(who)
            else:
                known = None if w is None or known is None else known | w
            for r in recs:
                text += m.joined_parts(r)
        return parts, text, known

    def _who_atoms(self, screen: Screen, m: CategoryMatcher, who: dict[str, str]
                   ) -> set[int] | None:
        """The screen's atoms of a who part, searched on its second event and kept while
        the who cache keeps it; ``_FIRST`` on its first event (an exec's who-data is seldom
        met again: it is searched with the rest of the event, at no extra cost)."""
        hit = self._atoms.get(id(who))
        if hit is not None and hit[0] is who:
            if hit[1] is not _FIRST:
                return hit[1]
            atoms = screen.atoms(m.joined_parts(who))
        else:
            if len(self._atoms) >= self._who.limit * 4:
                self._atoms.clear()
            atoms = _FIRST
        self._atoms[id(who)] = (who, atoms)
        return atoms

    def _matched(self, rule: Rule, key: str, i: int, record: dict[str, str],
                 doc: dict[str, Any], ts: int) -> list[Alert]:
        """A rule matched the i-th record of ``key`` (``record``: made of the fields read):
        fed to the correlations that count it (the whole record, which their alerts show,
        made when a correlation keeps it: vigil.rules.lazyrecord), and its alert unless the
        rule only feeds correlations (below the minimum level) or a window suppresses it."""
        self.matches += 1
        out: list[Alert] = []
        how = self._how.get(id(rule))
        if how is None:
            how = self._how[id(rule)] = self._how_of(rule)
        feeds, alerts = how
        if feeds is not None:
            names = self._names.get(key)
            rec: Mapping[str, str] = record if names is None else \
                LazyRecord(record, names, lambda: self._whole(doc, key, i))
            ce = self.ruleset.correlations
            assert ce is not None
            out += self._correlated(ce.feed_source(feeds, rec, ts), doc)
        if alerts:
            alert = self._alert(self._info(rule), key, doc, ts)
            if alert is not None:
                out.append(alert)
        return out

    def _whole(self, doc: dict[str, Any], key: str, i: int) -> dict[str, str]:
        """The i-th whole record of ``key`` (``ecs_to_records``'), its who part made once
        per who-data (a cache of its own: the matched records' who parts are smaller)."""
        return merged(*key_parts(doc, (key,), None, self._who_whole)[0][1:])[i]

    def _how_of(self, rule: Rule) -> tuple[str | None, bool]:
        """Whether a rule's matches feed correlations (its ``where``: None when not) and may
        alert (kept per rule: both are asked on every match)."""
        ce = self.ruleset.correlations
        return (rule.where if ce is not None and ce.wants(rule) else None,
                self.ruleset.alerts_for(rule))

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

    @property
    def who_hits(self) -> int:
        """Events whose who-data part was made for an earlier one (vigil.rules.who)."""
        return self._who.hits

    def counters(self) -> dict[str, int]:
        out = {"matches": self.matches, "alerts": self.alerts, "suppressed": self.suppressed,
               "rules": len(self.ruleset.rules)}
        ce = self.ruleset.correlations
        if ce is not None:
            c = ce.counters()
            out.update(correlation_groups=c["groups"], correlation_overflow=c["overflow"],
                       correlation_late=c["late"])
        return out
