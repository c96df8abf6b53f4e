"""Exact eviction counts for the kernel side's LRU maps, which evict without telling anyone.

Owns the arithmetic: every entry of an LRU map is inserted once and then deleted, evicted, or
still there, so ``evicted = inserts - deletes - live``. The BPF side counts its new keys and its
deletes in per-CPU slots (``lru_insert``/``lru_delete`` in bpf/maps.bpf.h); user space adds its
own deletes; the live entries are counted (one batch lookup) only when an eviction may have
happened since the last look. Does not own reading the counters (``vigil.kernel.backend``).

When an eviction is possible. A kernel LRU map keeps its free nodes on a global list and on
per-CPU lists of at most LOCAL_FREE_TARGET nodes (kernel/bpf/bpf_lru_list.c; since 6.16 the
target may be smaller, never larger). A CPU refills its own list only when it is empty, and
evicts only when the global list then holds fewer than the target: so an eviction needs fewer
than ``possible CPUs x target`` free nodes, i.e. more than ``max_entries - that`` live entries.
Between two looks the live entries never exceed the bound at the last look plus the inserts
since, so while that stays below the threshold nothing can have been evicted, and nothing is
counted. The margin is doubled for the rarer paths (nodes stolen between CPUs).

Why the result is never too high: the inserts are read before the live count and the deletes
after it; an entry present throughout is counted once (each bucket is read under its lock), and
an entry inserted or deleted meanwhile can only lower the estimate. A low estimate is corrected
by the next look, as the totals are recomputed from scratch each time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LOCAL_FREE_TARGET = 128


@dataclass
class EvictionCounter:
    """One LRU map's evictions. ``read()`` gives (inserts, deletes) counted by the BPF side,
    the deletes read first; ``live()`` counts the map's entries now (None: it could not)."""

    name: str
    max_entries: int
    possible_cpus: int
    read: Callable[[], tuple[int, int]]
    live: Callable[[], int | None]
    evicted: int = 0
    user_deletes: int = 0  # successful deletes by user space (forget_open_file)
    looks: int = 0  # how many times the live entries were counted
    _inserts: int = 0  # inserts at the last update
    _live_bound: int = 0  # live entries at the last update, at most

    @property
    def threshold(self) -> int:
        return self.max_entries - 2 * self.possible_cpus * LOCAL_FREE_TARGET

    def update(self) -> int:
        """The total of evictions so far (exact once the map is quiet for one look)."""
        ins, dels = self.read()
        bound = self._live_bound + (ins - self._inserts)
        if bound < self.threshold:  # nothing can have been evicted since the last update
            self._inserts = ins
            self._live_bound = min(bound, ins - dels - self.user_deletes - self.evicted)
            return self.evicted
        live = self.live()
        ins2, dels2 = self.read()
        if live is None:
            return self.evicted
        self.looks += 1
        self.evicted = max(self.evicted, ins - (dels2 + self.user_deletes) - live)
        self._inserts = ins2
        self._live_bound = ins2 - (dels2 + self.user_deletes) - self.evicted
        return self.evicted
