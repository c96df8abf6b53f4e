"""ECS documents as JSON lines, to a stream or an append-only file.

Owns serialisation and writing; the field mapping is ``vigil.outputs.ecs``. A batch is written
at once (no buffering layer: see ``write_all``), not event by event. orjson serialises about ten
times faster than the standard library, which matters at tens of thousands of events a second.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from vigil.outputs.base import Output, write_all
from vigil.outputs.batch import ecs_documents
from vigil.outputs.ecs import host_fields


class JsonLinesSink:
    def __init__(self, fd: int, *, owns_fd: bool = False) -> None:
        self._fd = fd
        self._owns = owns_fd
        self._host: dict[str, Any] = host_fields()

    @classmethod
    def to_file(cls, path: Path) -> JsonLinesSink:
        """Appends to ``path``, created 0600: events name users, commands and files."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return cls(fd, owns_fd=True)

    def emit(self, events: Sequence[Output]) -> None:
        if not events:
            return
        dumps, nl = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        write_all(self._fd, b"".join(dumps(doc, option=nl)
                                     for doc in ecs_documents(events, self._host)))

    def close(self) -> None:
        """Idempotent: a second close must not close an fd number reused since."""
        if self._owns:
            self._owns = False
            os.close(self._fd)
