"""The who-data part of rule records, made once per who-data.

An ECS document's ``process``, ``user`` and ``group`` objects and its ``vigil.process`` are
shared by every event of one process with the same who-data (vigil.outputs.ecs's who cache:
a burst of file events from one program renders them once). The fields a view takes from
them (``Image``, ``User``, auditd's ``exe``/``uid``, ``process.executable``...) are then the
same for all those events. Owns which ECS paths are who-data (``is_who_path``) and
``WhoCache``: per who-data identity (those objects themselves, kept alive by the cache so an
identity is never reused), values made once by view key (the who part of a record, see
vigil.rules.fieldmap.ecs_to_parts). Documents that do not share their who-data
(recorded JSON, exec events) simply miss: the result is the same, only slower.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

WHO_ROOTS: Final = frozenset(("process", "user", "group"))


def is_who_path(path: tuple[str, ...]) -> bool:
    """Whether a dotted ECS path (split) is in the who-data a document shares."""
    return path[0] in WHO_ROOTS or path[:2] == ("vigil", "process")


def who_objects(doc: Mapping[str, Any]) -> tuple[object, ...]:
    """The objects that make a document's who-data identity."""
    vigil = doc.get("vigil")
    return (doc.get("process"), doc.get("user"), doc.get("group"),
            vigil.get("process") if type(vigil) is dict else None)


class WhoCache:
    """Per who-data, a dict of values made from it (by view key), looked up once per document
    (bounded: past ``limit`` who-data it starts again, as vigil.outputs.ecs's cache does)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._m: dict[tuple[int, ...], tuple[tuple[object, ...], dict[str, Any]]] = {}
        self.hits = 0   # documents whose who-data was met before

    def values(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The values made so far for ``doc``'s who-data (the caller adds the missing)."""
        objs = who_objects(doc)
        k = tuple(map(id, objs))
        hit = self._m.get(k)
        if hit is not None and hit[0][0] is objs[0] and hit[0][1] is objs[1] \
                and hit[0][2] is objs[2] and hit[0][3] is objs[3]:
            self.hits += 1
            return hit[1]
        if len(self._m) >= self.limit:
            self._m.clear()
        made: dict[str, Any] = {}
        self._m[k] = (objs, made)
        return made
