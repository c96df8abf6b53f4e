"""ECS documents as JSON lines, to a stream or an append-only file.

Owns serialisation and writing; the field mapping is ``vigil.outputs.ecs``. A batch is written
with one ``write`` call, and flushed once per batch, not once per event.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from vigil.fim.model import FimEvent
from vigil.outputs.base import Output
from vigil.outputs.ecs import host_fields, to_ecs
from vigil.outputs.ecs_fim import fim_to_ecs

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class JsonLinesSink:
    def __init__(self, stream: IO[str], *, owns_stream: bool = False) -> None:
        self._stream = stream
        self._owns = owns_stream
        self._host: dict[str, Any] = host_fields()
        self.written = 0

    @classmethod
    def to_file(cls, path: Path) -> JsonLinesSink:
        """Appends to ``path``, created 0600: events name users, commands and files."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return cls(os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 20), owns_stream=True)

    def emit(self, events: Sequence[Output]) -> None:
        if not events:
            return
        host = self._host
        self._stream.write("".join(
            _dumps(fim_to_ecs(ev, host) if isinstance(ev, FimEvent) else to_ecs(ev, host)) + "\n"
            for ev in events))
        self._stream.flush()
        self.written += len(events)

    def close(self) -> None:
        self._stream.flush()
        if self._owns:
            self._stream.close()
