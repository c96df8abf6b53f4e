"""Screening a whole batch of events at once: which of them may fire a rule at all.

The detector's per-event Screen (vigil.rules.matcher.Screen) builds every record of an event
and searches them; on a burst of file events that fire nothing, building the records cost
more than the search. Owns the batch's shortcut, exact for the question it answers ("can
this event fire a rule?"; a superset of the events that do): each event is reduced to the
joined text the Screen would search (without building its records: the fields of one shape
of event, its dataset, action, outcome and kind, are planned once; the auditd view's text
comes from a template per shape, vigil.rules.auditd.file_text), its who-data's atoms are
searched once per who-data and kept (vigil.rules.who), and ONE search runs over the texts of
the whole batch joined. Every atom is a pattern found inside one field's part (no trigger
crosses a field: vigil.rules.patterns), so the atoms of the joined batch hold those of each
of its events: when they pass no key of an event, nothing can fire on it. When some key
passes, the batch is searched again in chunks, and only the events of the chunks that still
pass are matched for real (vigil.rules.detector.Detector.matching decides them exactly), for
the keys that passed. The events of a shape that mostly passes (a burst of files written in
/tmp, which the dropper correlation's base rule counts) are searched one by one instead, and
their atoms handed on: the detector matches a key's one record with them, not searching it
again. The fills themselves are generated code (vigil.rules.screenfill).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from vigil.rules.auditd import (
    AUDITD,
    auditd_parts,
    file_shape,
    file_template,
    value_text,
)
from vigil.rules.ecsview import ecs_value
from vigil.rules.fieldmap import ENGINE_KEYS, SPLIT, keys_of, who_part
from vigil.rules.patterns import FIELD_SEP, NAME_SEP
from vigil.rules.screenfill import MISMATCH, Fill, generate

if TYPE_CHECKING:
    from vigil.rules.detector import Detector

CHUNK: Final = 16   # events per second search when the whole batch passes a key
RATE_OVER: Final = 64   # a shape's pass rate is judged over this many of its events
SAMPLE: Final = 16   # one event of a hot shape in SAMPLE is still screened
# the event fields a shape is made of: a field of Vigil's own view read from them is the
# same text for every event of the shape
_SHAPE_PATHS: Final = frozenset((("event", "dataset"), ("event", "action"),
                                 ("event", "outcome"), ("event", "kind")))
_UNSEARCHABLE: Final = object()   # a who part holding FIELD_SEP: its keys always pass
_MISSING: Final = object()
_NOTHING: Final[frozenset[str]] = frozenset()

Entry = tuple[str, tuple[str, ...], set[int] | None]   # text, keys, atoms known (None: pass)
# a document that may fire a rule: its index, the keys that may (None: not screened), and
# the atoms of its own text when it was searched alone (None: with others)
Screened = tuple[int, tuple[str, ...] | None, set[int] | None]


def file_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What decides, besides the event's dataset, action, outcome and kind, the layout of a
    file event's auditd records and its constant parts (vigil.rules.auditd.file_shape)."""
    vigil, f, err = doc.get("vigil"), doc.get("file"), doc.get("error")
    vf = vigil.get("file") if type(vigil) is dict else None
    if type(vf) is dict:
        file = (vf.get("operation"), vf.get("source", "kernel"),
                type(vf.get("original_path")) is str)
    else:
        file = None
    if type(f) is dict:
        inode = f.get("inode")
        given = (type(f.get("path")) is str,
                 not (inode is None or type(inode) is dict or type(inode) is list))
    else:
        given = None
    return file, given, err.get("code") if type(err) is dict else None


class _Shape:
    """One shape of event: its keys, the parts of its text the shape decides, and the
    function that makes the others from an event (generated: screenfill.generate). A shape
    whose events mostly pass the batch search (files written in /tmp) is ``hot``: its
    events skip it (it would only add searches) and are searched alone, all but a sample
    that keeps the rate known (``_learn``)."""

    __slots__ = ("const", "fill", "hot", "keys", "passed", "seen", "skipped")

    def __init__(self, keys: tuple[str, ...], const: str, fill: Fill) -> None:
        self.keys, self.const, self.fill = keys, const, fill
        self.hot = False
        self.seen = self.passed = self.skipped = 0


def _first(item: Screened) -> int:
    return item[0]


def _learn(pending: list[int], passed: set[int], shapes: list[_Shape | None]) -> None:
    """Each shape's rate of events that passed the batch search, per RATE_OVER events."""
    for i in pending:
        shape = shapes[i]
        if shape is None:
            continue
        shape.seen += 1
        shape.passed += i in passed
        if shape.seen >= RATE_OVER:
            shape.hot = shape.passed * 2 > shape.seen
            shape.seen = shape.passed = 0


class BatchScreen:
    def __init__(self, det: Detector) -> None:
        self.det = det
        engine = det.ruleset.engine
        assert engine.screen is not None
        self.screen = engine.screen
        self.matchers = engine.matchers
        # a shape (or None: no plan) by dataset, action, outcome and kind, or for file events
        # with auditd records a list of shapes, each for one file_key (all: _files)
        self._shapes: dict[tuple[Any, ...], Any] = {}
        self._files: dict[tuple[int, tuple[Any, ...]], _Shape | None] = {}
        self.searches = 0   # batch and chunk searches (for the benchmark)
        self._last: _Shape | None = None   # the shape of the last _entry (None: none)
        self._hot = False   # the last _entry's shape is hot (and it is not in the sample)

    def candidates(self, docs: list[dict[str, Any]]) -> list[int]:
        """The indices of the documents that may fire a rule, in order."""
        return [i for i, _, _ in self.screened(docs)]

    def screened(self, docs: list[dict[str, Any]]) -> list[Screened]:
        """The documents that may fire a rule, in order: each index with the keys of the
        event that may, in the event's order of keys (a superset: the keys the screen passes
        with the atoms of its text, or of its chunk's), or None when the event could not be
        screened (its records are made and screened by the detector)."""
        if not self.matchers:
            return []
        entries = []
        shapes: list[_Shape | None] = []
        direct: set[int] = set()
        for i, doc in enumerate(docs):
            entries.append(self._entry(doc))
            shapes.append(self._last)
            if self._hot:
                direct.add(i)
        out: list[Screened] = []
        pending = []
        alone: dict[int, frozenset[str]] = {}   # per known atoms (by identity): keys passed
        for i, (text, keys, known) in enumerate(entries):
            if not keys:
                continue
            if known is None:
                out.append((i, None, None))   # cannot be searched joined: matched for real
                continue
            if i not in direct:
                passed = alone.get(id(known)) if known else _NOTHING
                if passed is None:
                    passed = alone[id(known)] = self.screen.passing(known)
                if passed.isdisjoint(keys):
                    pending.append(i)   # searched with the batch
                    continue
            # a hot shape's event, or one whose who-data and shape alone may fire a rule:
            # its own text searched alone, for the keys that pass
            atoms = self.screen.atoms_text(text + FIELD_SEP)
            if atoms is None:
                out.append((i, None, None))
                continue
            if known:
                atoms |= known
            ks = self.screen.passing_of(atoms, keys)
            if ks:
                out.append((i, ks, atoms))
        if pending:
            through = self._narrow(pending, entries, CHUNK if len(pending) > CHUNK else 1)
            out += through
            _learn(pending, {i for i, _, _ in through}, shapes)
        out.sort(key=_first)
        return out

    def _narrow(self, ids: list[int], entries: list[Entry], chunk: int
                ) -> list[Screened]:
        """The events of ``ids`` that pass one search over all their texts, with the keys
        that pass; when some do, each chunk of ``chunk`` events is searched again (1: those
        events are the answer)."""
        self.searches += 1
        atoms = self.screen.atoms_text("".join([entries[i][0] for i in ids]) + FIELD_SEP)
        passed: list[Screened]
        if atoms is None:   # RE2 gave up (memory): smaller texts, or matched for real
            passed = [(i, None, None) for i in ids]
        else:
            screen = self.screen
            plain = screen.passing(atoms)
            with_known: dict[int, frozenset[str]] = {}
            passed = []
            for i in ids:
                _, ks, known = entries[i]
                keys = plain
                if known:
                    keys = with_known.get(id(known))   # type: ignore[assignment]
                    if keys is None:
                        keys = with_known[id(known)] = screen.passing(atoms | known)
                if not keys.isdisjoint(ks):
                    passed.append((i, tuple(k for k in ks if k in keys), None))
        if not passed or chunk <= 1 or len(ids) <= 1:
            return passed
        out: list[Screened] = []
        hit = {i for i, _, _ in passed}
        for c in range(0, len(ids), chunk):
            part = ids[c:c + chunk]
            if not hit.isdisjoint(part):
                out += self._narrow(part, entries, 1)
        return out

    def _entry(self, doc: dict[str, Any]) -> Entry:
        """An event's text for the batch search, its keys and the atoms already known of its
        who-data and shape (None: the event is left to the detector's records)."""
        self._last = None
        self._hot = False
        found = self.planned(doc)
        if found is None:
            return "", ("",), None   # Detector.matching makes its records (and screens them)
        shape, text = found
        if shape.hot:
            shape.skipped += 1
            if shape.skipped % SAMPLE:
                self._hot = True   # most pass: searched alone (not with the batch)
            else:
                self._last = shape
        else:
            self._last = shape
        if not shape.keys:
            return "", (), set()
        return self._known(doc, shape, text)

    def planned(self, doc: dict[str, Any]) -> tuple[_Shape, str] | None:
        """The shape of an event and its own values' text; None when its shape has no plan
        or a value cannot be searched joined. Shapes are found by the event's dataset,
        action, outcome and kind, then for file events with auditd records by trying each
        planned shape's fill, which checks the rest of the shape (``file_key``) itself."""
        event = doc.get("event")
        if type(event) is not dict:
            return None
        sk = (event.get("dataset"), event.get("action"), event.get("outcome"),
              event.get("kind"))
        try:
            found = self._shapes.get(sk, _MISSING)
            if found is _MISSING:
                wants = AUDITD in self.matchers and sk[0] == "vigil.file"
                found = self._shapes[sk] = [] if wants else self._plan(doc, None)
            text: Any = None
            if type(found) is list:
                for n, shape in enumerate(found):
                    text = _fill(shape, doc)
                    if text is not MISMATCH:
                        if n:   # the shape met last is tried first (a burst's)
                            found.insert(0, found.pop(n))
                        break
                else:
                    shape = self._by_file(doc, found)
                    text = None if shape is None else _fill(shape, doc)
            else:
                shape = found
                if shape is not None:
                    text = _fill(shape, doc)
        except TypeError:   # an unhashable value (a recorded document): the records
            return None
        if shape is None or text is None or text is MISMATCH:
            return None
        return shape, text

    def _by_file(self, doc: dict[str, Any], shapes: list[_Shape]) -> _Shape | None:
        """The shape of a file event none of the planned ``shapes`` fits: planned now."""
        fk = (id(shapes), file_key(doc))
        if fk in self._files:
            return self._files[fk]
        shape = self._files[fk] = self._plan(doc, fk[1])
        if shape is not None:
            shapes.append(shape)
        return shape

    def _known(self, doc: dict[str, Any], shape: _Shape, text: str) -> Entry:
        """The event's text with its who parts' and its shape's constant parts when they are
        met the first time; after, their atoms (searched on the second event, kept while the
        who cache keeps them)."""
        made = self.det._who.values(doc)
        keys = shape.keys
        w = made.get(shape)
        if w is None:   # first met: searched with the event
            parts = []
            for k in keys:
                wp = made.get(k)
                if wp is None:
                    wp = made[k] = who_part(k, doc, self.det._fields)
                parts += self.matchers[k].joined_parts(wp)
            who = "".join(parts)
            if who.count(FIELD_SEP) != len(parts):
                made[shape] = _UNSEARCHABLE
                return text, keys, None
            made[shape] = [who + shape.const]
            return who + shape.const + text, keys, set()
        if type(w) is list:
            a = self.screen.atoms_text(w[0] + FIELD_SEP)
            made[shape] = _UNSEARCHABLE if a is None else a
            return text, keys, a
        return text, keys, None if w is _UNSEARCHABLE else w

    def _plan(self, doc: dict[str, Any], fk: tuple[Any, ...] | None) -> _Shape | None:
        """How to make the text of the events shaped like ``doc``; None when a key of them
        has no plan (execs' auditd records, typed commands, keyword rules on Vigil's
        view): their records are made. ``fk``: the ``file_key`` of a file event's shape,
        which its fill checks."""
        keys = list(keys_of(doc, self.matchers.keys()))
        plans = self.det._fields
        const: list[str] = []
        fields: list[tuple[str, tuple[str, ...], str | None]] = []
        auditd = None
        for k in list(keys):
            m = self.matchers[k]
            if k == AUDITD:
                event = doc["event"]
                if event.get("dataset") != "vigil.file":
                    if event.get("action") == "exec" and event.get("outcome") != "failure":
                        return None   # an exec's records: made by the detector
                    # no system call's (an exit): the shape says so (vigil.rules.auditd)
                    assert not auditd_parts(doc)
                    keys.remove(k)
                    continue
                how = file_shape(doc, event)
                if how is None:   # no auditd records (a scan's result)
                    keys.remove(k)
                    continue
                call, layout, failed, _, _ = how
                inode = value_text((doc.get("file") or {}).get("inode")) is not None
                auditd = file_template(doc, call, layout, failed, inode, m.pre)
                if auditd is None:
                    return None
                const.append(auditd[0])
            elif k in ENGINE_KEYS:
                plan = plans.get(k)
                if plan is None or m.keywords:
                    return None
                for name, path in plan[1]:
                    if name not in m.names:
                        continue
                    if path in _SHAPE_PATHS:
                        v = ecs_value(doc, path)
                        if v is not None and FIELD_SEP in v:
                            return None   # cannot be searched joined: the records decide
                        if v is not None:
                            const.append(m.pre + name + NAME_SEP + v)
                    else:
                        fields.append((m.pre + name + NAME_SEP, path, None))
            elif k in SPLIT:
                for name, path in (plans.get(k) or SPLIT[k])[1]:
                    if m.keywords or name in m.names:
                        fields.append((m.pre + name + NAME_SEP, path, name))
            else:
                return None
        return _Shape(tuple(keys), "".join(const),
                      generate(fields, auditd[1] if auditd is not None else None, fk))


def _fill(shape: _Shape, doc: dict[str, Any]) -> Any:
    """The event's own text by its shape's fill: None (a value holds FS) or MISMATCH."""
    try:
        return shape.fill(doc)
    except (TypeError, AttributeError):   # not shaped as the fill expects: the records
        return None
