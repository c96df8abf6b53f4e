"""ECS or OCSF documents as JSON lines, to a stream or an append-only file.

Owns serialisation and writing; the field mappings are ``vigil.outputs.ecs`` (``fmt="ecs"``,
the default) and ``vigil.outputs.ocsf`` (``fmt="ocsf"``). A batch is written
at once (no buffering layer: see ``write_all``), not event by event. orjson serialises about ten
times faster than the standard library, which matters at tens of thousands of events a second.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from vigil.outputs.base import Output, write_all
from vigil.outputs.batch import ecs_documents, ecs_json
from vigil.outputs.ecs import host_fields

FORMATS: Final = ("ecs", "ocsf")
Documents = Callable[[Sequence[Output], dict[str, Any]], list[dict[str, Any]]]


def documents_of(fmt: str) -> Documents:
    """The renderer of a format name: ``ecs`` or ``ocsf``."""
    if fmt == "ecs":
        return ecs_documents
    if fmt == "ocsf":
        from vigil.outputs.ocsf import ocsf_documents
        return ocsf_documents
    raise ValueError(f"unknown output format {fmt!r} (one of {', '.join(FORMATS)})")


class JsonLinesSink:
    def __init__(self, fd: int, *, owns_fd: bool = False, fmt: str = "ecs") -> None:
        self._documents = documents_of(fmt)   # checked before the fd is ours to close
        self._fd = fd
        self._owns = owns_fd
        self._host: dict[str, Any] = host_fields()

    @classmethod
    def to_file(cls, path: Path, fmt: str = "ecs") -> JsonLinesSink:
        """Appends to ``path``, created 0600: events name users, commands and files."""
        documents_of(fmt)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return cls(fd, owns_fd=True, fmt=fmt)

    def emit(self, events: Sequence[Output]) -> None:
        if not events:
            return
        if self._documents is ecs_documents:   # serialised once per batch for every sink
            write_all(self._fd, b"\n".join(ecs_json(events, self._host)) + b"\n")
            return
        dumps, nl = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        write_all(self._fd, b"".join(dumps(doc, option=nl)
                                     for doc in self._documents(events, self._host)))

    def close(self) -> None:
        """Idempotent: a second close must not close an fd number reused since."""
        if self._owns:
            self._owns = False
            os.close(self._fd)
