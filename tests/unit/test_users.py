"""The uid -> name cache: names are kept, an id without a name is asked again soon."""

from __future__ import annotations

import pytest

from vigil.enrich import users


def test_a_new_account_gets_its_name_soon_after_a_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    accounts: dict[int, str] = {}
    asked: list[int] = []

    def lookup(uid: int) -> str | None:
        asked.append(uid)
        return accounts.get(uid)

    monkeypatch.setattr(users.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(users, "_user_name", lookup)
    cache = users.NameCache(ttl=300.0, miss_ttl=2.0)

    assert cache.user(999) is None
    accounts[999] = "newuser"  # useradd, while the agent runs
    clock[0] += 1.0
    assert cache.user(999) is None  # the miss is still fresh
    clock[0] += 1.5
    assert cache.user(999) == "newuser"
    accounts[999] = "renamed"
    clock[0] += 299.0
    assert cache.user(999) == "newuser"  # names are kept for ttl
    clock[0] += 2.0
    assert cache.user(999) == "renamed"
    assert asked == [999, 999, 999]
