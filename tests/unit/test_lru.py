"""Eviction counts of the LRU maps from inserts, deletes and live entries (vigil.kernel.lru);
the kernel side: tests/kernel/test_counted_losses.py."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from vigil.kernel.backend import map_sizes_for_tests
from vigil.kernel.errors import VigilError
from vigil.kernel.lru import LOCAL_FREE_TARGET, EvictionCounter


class FakeLru:
    """An LRU map as the BPF side sees it, with its insert and delete counters."""

    def __init__(self, max_entries: int, slack: int = 0) -> None:
        self.max = max_entries
        self.slack = slack  # evicts this early, like free nodes parked on other CPUs' lists
        self.entries: OrderedDict[int, None] = OrderedDict()
        self.inserts = self.deletes = self.evicted = 0
        self.looks = 0

    def insert(self, key: int) -> None:
        if key in self.entries:
            self.entries.move_to_end(key)  # a replaced value: no new key
            return
        while len(self.entries) >= self.max - self.slack:
            self.entries.popitem(last=False)
            self.evicted += 1
        self.entries[key] = None
        self.inserts += 1

    def delete(self, key: int) -> bool:
        if self.entries.pop(key, 0) is None:
            self.deletes += 1
            return True
        return False

    def counter(self, cpus: int = 1) -> EvictionCounter:
        def live() -> int:
            self.looks += 1
            return len(self.entries)

        return EvictionCounter("m", self.max, cpus, lambda: (self.inserts, self.deletes), live)


def test_exact_after_any_sequence() -> None:
    rng = random.Random(7)
    m = FakeLru(300, slack=40)
    c = m.counter()
    for step in range(20_000):
        key = rng.randrange(2000)
        if rng.random() < 0.6:
            m.insert(key)
        else:
            m.delete(key)
        if step % 97 == 0:
            assert c.update() == m.evicted
    assert m.evicted > 0 and c.update() == m.evicted


def test_user_space_deletes_count_too() -> None:
    m = FakeLru(300)
    c = m.counter()
    for k in range(400):
        m.insert(k)
    for k in range(350, 400):  # deleted by user space: not in the BPF side's count
        assert m.delete(k)
        m.deletes -= 1
        c.user_deletes += 1
    assert c.update() == m.evicted == 100


def test_far_from_full_the_map_is_not_counted() -> None:
    m = FakeLru(65536)
    c = m.counter(cpus=2)
    assert c.threshold == 65536 - 4 * LOCAL_FREE_TARGET
    for round_ in range(50):
        for k in range(1000):
            m.insert(round_ * 1000 + k)
        for k in range(1000):
            m.delete(round_ * 1000 + k)
        assert c.update() == 0
    assert m.looks == 0
    # a burst that may have reached the threshold between two looks is counted
    for k in range(70_000):
        m.insert(10**6 + k)
    for k in range(70_000):
        m.delete(10**6 + k)
    assert c.update() == m.evicted > 0 and m.looks == 1


def test_concurrent_changes_never_overcount() -> None:
    """Inserts and deletes while the live entries are counted only lower the estimate; the
    next quiet look is exact."""
    m = FakeLru(100)
    for k in range(150):
        m.insert(k)
    rng = random.Random(3)

    def busy_live() -> int:
        n = len(m.entries)
        for _ in range(20):  # what other CPUs did meanwhile
            if rng.random() < 0.5:
                m.insert(rng.randrange(10**6))
            else:
                m.delete(next(iter(m.entries)))
        return n

    c = EvictionCounter("m", m.max, 1, lambda: (m.inserts, m.deletes), busy_live)
    for _ in range(30):
        assert c.update() <= m.evicted
    c.live = lambda: len(m.entries)
    assert c.update() == m.evicted


def test_a_failed_count_changes_nothing() -> None:
    m = FakeLru(10)
    for k in range(20):
        m.insert(k)
    c = EvictionCounter("m", m.max, 1, lambda: (m.inserts, m.deletes), lambda: None)
    assert c.update() == 0


def test_map_sizes_for_tests() -> None:
    assert map_sizes_for_tests("") == {}
    assert map_sizes_for_tests("wfiles=512, uring_reqs=64") == {"wfiles": 512, "uring_reqs": 64}
    for bad in ("events=1", "wfiles=0", "wfiles", "wfiles=x"):
        with pytest.raises(VigilError):
            map_sizes_for_tests(bad)
