"""A batch of outputs on its way to the sinks, each rendered as ECS at most once.

The detection stage (vigil.rules.detector) and every ECS sink (JSON lines today) read the
same ECS documents: rendering one costs about as much as the rest of an event's way through
the agent, so ``Batch`` renders each output's document when it is first asked for and keeps
it for the next reader. The documents are shared: readers never change them in place (an
alert's document is a shallow copy with its own parts, see vigil.outputs.ecs_alert).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

from vigil.events.model import FileEvent
from vigil.fim.model import FimEvent
from vigil.outputs.base import Output
from vigil.outputs.ecs import dumps, is_shared, share, to_ecs
from vigil.outputs.ecs_alert import alert_to_ecs
from vigil.outputs.ecs_fim import fim_to_ecs
from vigil.outputs.ecs_json import file_json, host_json
from vigil.rules.alert import Alert


def ecs_document(ev: Output, host: dict[str, Any]) -> dict[str, Any]:
    """Any output as its ECS document."""
    if isinstance(ev, FimEvent):
        return fim_to_ecs(ev, host)
    if isinstance(ev, Alert):
        return alert_to_ecs(ev)
    return to_ecs(ev, host)


class Batch(Sequence[Output]):
    """The outputs of one step of the agent (a sequence of them) and their ECS documents."""

    __slots__ = ("_docs", "_events", "_json", "host")

    def __init__(self, events: Sequence[Output], host: dict[str, Any]) -> None:
        self._events = list(events)
        self._docs: list[dict[str, Any] | None] = [None] * len(self._events)
        self._json: list[bytes] | None = None
        self.host = host

    def __len__(self) -> int:
        return len(self._events)

    @overload
    def __getitem__(self, i: int) -> Output: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Output]: ...

    def __getitem__(self, i: int | slice) -> Output | Sequence[Output]:
        return self._events[i]

    def __iter__(self):  # type: ignore[no-untyped-def]   # the list's own iterator: hot
        return iter(self._events)

    def doc(self, i: int) -> dict[str, Any]:
        """The ECS document of the i-th output (rendered now if no reader asked before)."""
        doc = self._docs[i]
        if doc is None:
            doc = self._docs[i] = ecs_document(self._events[i], self.host)
        return doc

    def docs(self) -> list[dict[str, Any]]:
        docs, events, host = self._docs, self._events, self.host
        for i, doc in enumerate(docs):
            if doc is None:
                docs[i] = ecs_document(events[i], host)
        return docs  # type: ignore[return-value]   # all rendered now

    def json(self) -> list[bytes]:
        """Every ECS document serialised (no newline), once for all the sinks that send
        ECS JSON (the JSON lines, syslog). The common file events are written straight from
        the event (vigil.outputs.ecs_json, the same bytes), the others from their document."""
        if self._json is None:
            if not is_shared(self.host):
                share(self.host)
            host = host_json(self.host)
            out = []
            for i, ev in enumerate(self._events):
                j = file_json(ev, host) if type(ev) is FileEvent else None
                out.append(j if j is not None else dumps(self.doc(i)))
            self._json = out
        return self._json

    def extended(self, more: Sequence[Output]) -> Batch:
        """This batch followed by ``more``, with the documents rendered so far."""
        out = Batch(self._events + list(more), self.host)
        out._docs[:len(self._docs)] = self._docs
        return out


def ecs_json(events: Sequence[Output], host: dict[str, Any]) -> list[bytes]:
    """The ECS documents of a batch as JSON (no newline): a ``Batch``'s own, else made now."""
    if isinstance(events, Batch):
        return events.json()
    return [dumps(ecs_document(ev, host)) for ev in events]


def ecs_documents(events: Sequence[Output], host: dict[str, Any]) -> list[dict[str, Any]]:
    """The ECS documents of a batch: a ``Batch``'s own (rendered once), else made now."""
    if isinstance(events, Batch):
        return events.docs()
    return [ecs_document(ev, host) for ev in events]
