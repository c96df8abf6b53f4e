"""The kernel's watch list: which path prefixes the kernel side passes on to user space.

Owns the watched roots as the kernel must match them (as configured and as resolved) and the
*aliases*: symlinks that lead into (or above) a watched tree. The tracepoint backend matches
syscall path arguments by their text, so on a merged-/usr system (``/bin -> usr/bin``)
``rename("/bin/cat.dpkg-new", "/bin/cat")`` would be filtered out in the kernel unless ``/bin``
is in the list. An alias only lets more records reach user space; it never widens what is
reported: the pipeline resolves every argument path to its canonical form and the exact
policy (vigil.fim.policy) decides, so the event names ``/usr/bin/cat``.

Aliases come from four places, each named in ``Alias.found_by``:

- ``config``: a configured directory that is itself a symlink;
- ``ancestor``: a symlink among the entries of a watched root's ancestors (``/``, ``/usr``, ...),
  which covers the merged-/usr links (``/bin``, ``/sbin``, ``/lib``...) on any distribution;
- ``baseline``: a symlink the baseline walk recorded in a watched tree;
- ``created``: a symlink the kernel saw being created while Vigil runs.

What stays invisible to the tracepoint backend: a symlink elsewhere (outside every watched tree
and not in a root's ancestors) that existed before Vigil started, or that is used within
microseconds of its creation (before user space adds it). The VFS backends work on resolved
dentries and are not affected. Does not own the kernel map (vigil.kernel.backend) nor the
policy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from vigil.config import Config

log = logging.getLogger(__name__)

# The kernel's watch list holds 4096 entries; the roots take a handful.
MAX_ALIASES = 2048


@dataclass(frozen=True, slots=True)
class Alias:
    link: bytes  # the symlink's own path, as a syscall argument would name it
    target: bytes  # what it resolves to (canonical)
    found_by: str  # config, ancestor, baseline, created


def realtime_roots(config: Config) -> list[bytes]:
    """The canonical path of every directory watched in realtime."""
    out: list[bytes] = []
    for d in config.directories:
        if d.realtime:
            real = os.path.realpath(d.path)
            if real not in out:
                out.append(real)
    return out


def kernel_watch_paths(config: Config) -> list[bytes]:
    """Every realtime directory as configured, plus its real path when it is reached through
    a symlink: paths from syscall arguments are matched before symlinks resolve."""
    out: list[bytes] = []
    for d in config.directories:
        if not d.realtime:
            continue
        for p in (d.path, os.path.realpath(d.path)):
            if p not in out:
                out.append(p)
    return out


def leads_into(real: bytes, roots: Sequence[bytes]) -> bool:
    """Whether the canonical path ``real`` is a watched root, inside one, or above one."""
    real = real.rstrip(b"/") or b"/"
    inside = b"/" if real == b"/" else real + b"/"
    return any(real == r or r.startswith(inside) or real.startswith(r.rstrip(b"/") + b"/")
               for r in roots)


def resolve(link: bytes) -> bytes | None:
    """The canonical target of ``link`` when it is a symlink (dangling ones resolve too)."""
    try:
        if not os.path.islink(link):
            return None
        return os.path.realpath(link)
    except (OSError, ValueError):
        return None


def _ancestors(path: bytes) -> list[bytes]:
    out = []
    while path not in (b"/", b""):
        path = os.path.dirname(path)
        out.append(path or b"/")
    return out


def covered(path: bytes, prefixes: Sequence[bytes]) -> bool:
    """Whether the kernel already passes ``path`` on: it is at or below one of ``prefixes``."""
    return any(path == p or path.startswith(p.rstrip(b"/") + b"/") for p in prefixes)


def static_aliases(config: Config) -> list[Alias]:
    """The aliases known before any scan: configured symlinks and the symlinked entries of the
    watched roots' ancestor directories (those not inside a watched tree already), in a
    stable order."""
    roots = realtime_roots(config)
    kernel = kernel_watch_paths(config)
    found: dict[bytes, Alias] = {}
    for d in config.directories:
        if d.realtime and (target := resolve(d.path)) is not None:
            found.setdefault(d.path, Alias(d.path, target, "config"))
    parents = sorted({a for r in [*roots, *(d.path for d in config.directories)]
                      for a in _ancestors(r)})
    for parent in parents:
        try:
            with os.scandir(parent) as it:
                links = sorted(e.path for e in it if e.is_symlink())
        except OSError as e:
            log.debug("cannot list %r for symlinks into watched trees: %s", parent, e)
            continue
        for link in links:
            if covered(link, kernel):
                continue
            target = os.path.realpath(link)
            if leads_into(target, roots):
                found.setdefault(link, Alias(link, target, "ancestor"))
    return list(found.values())


class AliasSet:
    """The aliases in the kernel's list, bounded; ``add`` says whether one is new. A symlink
    the kernel passes on anyway (inside a realtime tree) needs no entry of its own."""

    def __init__(self, config: Config, limit: int = MAX_ALIASES) -> None:
        self.roots = realtime_roots(config)
        self.kernel_paths = kernel_watch_paths(config)
        self.limit = limit
        self._by_link: dict[bytes, Alias] = {}
        self.refused = 0  # over the limit: counted, said once per link

    def __len__(self) -> int:
        return len(self._by_link)

    def aliases(self) -> list[Alias]:
        return list(self._by_link.values())

    def add(self, alias: Alias) -> bool:
        if (alias.link in self._by_link or covered(alias.link, self.kernel_paths)
                or not leads_into(alias.target, self.roots)):
            return False
        if len(self._by_link) >= self.limit:
            self.refused += 1
            log.warning("not following symlink %s into a watched tree: %d already followed",
                        os.fsdecode(alias.link), self.limit)
            return False
        self._by_link[alias.link] = alias
        return True

    def add_link(self, link: bytes, found_by: str) -> bool:
        """A symlink by its path: resolved now, added when it leads into a watched tree."""
        if link in self._by_link:
            return False
        target = resolve(link)
        return target is not None and self.add(Alias(link, target, found_by))
