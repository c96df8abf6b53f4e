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

_NONE: Final = object()   # no document's who-data object
WHO_ROOTS: Final = frozenset(("process", "user", "group"))


def is_who_path(path: tuple[str, ...]) -> bool:
    """Whether a dotted ECS path (split) is in the who-data a document shares."""
    return path[0] in WHO_ROOTS or path[:2] == ("vigil", "process")


class WhoCache:
    """Per who-data, a dict of values made from it (by view key), looked up once per document
    (bounded: past ``limit`` who-data it starts again, as vigil.outputs.ecs's cache does)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._m: dict[tuple[int, ...], tuple[tuple[object, ...], dict[Any, Any]]] = {}
        self.hits = 0   # documents whose who-data was met before
        # the last who-data (its objects, kept alive, and its values): bursts hit it
        self._last: tuple[Any, Any, Any, Any, dict[Any, Any]] = (_NONE, _NONE, _NONE, _NONE, {})

    def values(self, doc: Mapping[str, Any]) -> dict[Any, Any]:
        """The values made so far for ``doc``'s who-data (the caller adds the missing): by view
        key, and the batch screen's atoms by its shape (vigil.rules.batchscreen)."""
        vigil = doc.get("vigil")
        p, u, g = doc.get("process"), doc.get("user"), doc.get("group")
        vp = vigil.get("process") if type(vigil) is dict else None
        last = self._last
        if last[0] is p and last[1] is u and last[2] is g and last[3] is vp:
            self.hits += 1   # a burst: the same who-data as the event before
            return last[4]
        k = (id(p), id(u), id(g), id(vp))
        hit = self._m.get(k)
        if hit is not None and hit[0][0] is p and hit[0][1] is u \
                and hit[0][2] is g and hit[0][3] is vp:
            self.hits += 1
            made = hit[1]
        else:
            if len(self._m) >= self.limit:
                self._m.clear()
            made = {}
            self._m[k] = ((p, u, g, vp), made)
        self._last = (p, u, g, vp, made)
        return made
