"""What an output is: something that takes batches of events and can be closed.

Owns the ``Sink`` protocol and what flows into it (kernel events and FIM events). Each
output module implements it; the agent fans every batch out to all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from vigil.events.model import Event
from vigil.fim.model import FimEvent

Output = Event | FimEvent


class Sink(Protocol):
    def emit(self, events: Sequence[Output]) -> None: ...

    def close(self) -> None: ...
