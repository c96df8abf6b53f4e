"""A base rule's record for the correlations, made whole only when a correlation keeps it.

The detector matches an event's records made of the fields its rules read (the record plans
of vigil.rules.fieldmap); a correlation is fed the whole record of a match (its alerts show
the base records it counted). A base rule that matches every event of a burst (a file
written under /tmp) would make every event's whole record, though a correlation whose group
table is full keeps none of them. Owns ``LazyRecord``: the matched record, read as is for the
fields it holds, made whole (once) when a field it lacks is read or a correlation keeps it
(vigil.rules.correlation calls ``whole``). Read through the Mapping interface it is the whole
record, so it can never be told from one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any


class LazyRecord(Mapping[str, str]):
    """``part``: the matched record, holding every field of ``names`` the whole record holds;
    ``make``: the whole record."""

    __slots__ = ("_make", "_names", "_part", "_whole")

    def __init__(self, part: Mapping[str, str], names: frozenset[str],
                 make: Callable[[], Mapping[str, str]]) -> None:
        self._part, self._names, self._make = part, names, make
        self._whole: Mapping[str, str] | None = None

    def whole(self) -> Mapping[str, str]:
        if self._whole is None:
            self._whole = self._make()
            self._make = _made   # drop what it held (the document)
        return self._whole

    def get(self, name: str, default: Any = None) -> Any:
        if name in self._names:
            return self._part.get(name, default)
        return self.whole().get(name, default)

    def __getitem__(self, name: str) -> str:
        if name in self._names:
            return self._part[name]
        return self.whole()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.whole())

    def __len__(self) -> int:
        return len(self.whole())


def _made() -> Mapping[str, str]:
    raise AssertionError("LazyRecord: made twice")


def whole(rec: Mapping[str, str]) -> Mapping[str, str]:
    """The record to keep: a LazyRecord made whole, any other as it is."""
    return rec.whole() if type(rec) is LazyRecord else rec
