"""User and group names for ids, cached.

Owns the uid/gid -> name caches. Names are looked up once per id through the system's NSS (so
LDAP/SSSD users resolve too) and kept for ``ttl`` seconds, since accounts do get renamed. An id
without a name is asked again after ``miss_ttl`` seconds: an account created while Vigil runs
gets its name on its first events, not minutes later.
"""

from __future__ import annotations

import grp
import pwd
import time
from collections.abc import Callable


class NameCache:
    def __init__(self, ttl: float = 300.0, miss_ttl: float = 2.0) -> None:
        self._ttl = ttl
        self._miss_ttl = miss_ttl
        self._users: dict[int, tuple[float, str | None]] = {}
        self._groups: dict[int, tuple[float, str | None]] = {}

    def user(self, uid: int) -> str | None:
        return self._get(self._users, uid, _user_name)

    def group(self, gid: int) -> str | None:
        return self._get(self._groups, gid, _group_name)

    def _get(self, cache: dict[int, tuple[float, str | None]], key: int,
             fetch: Callable[[int], str | None]) -> str | None:
        now = time.monotonic()
        hit = cache.get(key)
        if hit is not None and now - hit[0] < (self._ttl if hit[1] is not None
                                                else self._miss_ttl):
            return hit[1]
        name = fetch(key)
        cache[key] = (now, name)
        return name


def _user_name(uid: int) -> str | None:
    if uid == 0xFFFFFFFF:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    if gid == 0xFFFFFFFF:
        return None
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


_shared = NameCache()


def user_name(uid: int) -> str | None:
    """The account name of ``uid`` (cached, shared by every caller), None when it has none."""
    return _shared.user(uid)


def group_name(gid: int) -> str | None:
    return _shared.group(gid)
