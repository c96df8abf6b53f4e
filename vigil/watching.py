"""What the running agent watches, and the kernel's list made from it.

Owns the union of everything watched: the configuration's realtime trees (and the policy's
exact verdict on a path), symlinks leading into them (aliases), the paths the file rules ask
for, Vigil's own files, the kernel's security knobs and the health check's directory; the
kernel watch list built from all of it (``kernel_list``), entries added while running, and a
new configuration applied in place (``apply``, on SIGHUP: the list changed without a moment
in which a path on both lists is unwatched). Does not own the kernel map itself
(vigil.kernel.backend) nor what happens to an event once it is kept (vigil.agent).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vigil.config import Config
from vigil.events.model import Event, FileEvent
from vigil.events.pipeline import TRUNCATED, TWO_PATHS
from vigil.events.truncated import TruncatedPaths
from vigil.fim.policy import Policy
from vigil.kernel.backend import KernelBackend
from vigil.ownfiles import OwnFiles, configured_sources
from vigil.rules.detector import Detector
from vigil.rules.watchpaths import WatchPath, watch_paths
from vigil.sysctl import SysctlWatch
from vigil.watchlist import Alias, AliasSet, kernel_watch_paths, realtime_roots, static_aliases

log = logging.getLogger(__name__)


def truncated_paths(config: Config) -> TruncatedPaths:
    """The realtime trees an event whose path the kernel cut may lie in (by device)."""
    return TruncatedPaths(d.path for d in config.directories if d.realtime)


class Watching:
    def __init__(self, config: Config, detector: Detector | None, *,
                 btf_path: str | None = None, obj_path: Path | None = None) -> None:
        self.config = config
        self.detector = detector
        self.backend: KernelBackend | None = None   # set once the programs are loaded
        self._btf_path = btf_path
        self._obj_path = obj_path
        self.policy = Policy(config)
        self.aliases = AliasSet(config)
        self.rule_paths: list[WatchPath] = []
        self._verdicts: dict[bytes, bool] = {}   # policy verdicts of the current batch
        # always watched, whatever the configuration says: Vigil's own files (for the rules)
        # and the kernel's security knobs (reported)
        self.own = OwnFiles()
        self._own_entries: set[bytes] = set()
        self.sysctl: SysctlWatch | None = None
        self.health_dir: bytes | None = None     # the health check's: kept for it alone

    # ---- the kernel's list -------------------------------------------------------------------

    def kernel_list(self) -> list[bytes]:
        """Every entry the kernel's watch list needs now."""
        return (kernel_watch_paths(self.config) + [a.link for a in self.aliases.aliases()]
                + [w.directory for w in self.rule_paths] + sorted(self._own_entries)
                + (self.sysctl.paths() if self.sysctl is not None else [])
                + ([self.health_dir] if self.health_dir is not None else []))

    def start(self, backend: KernelBackend | None) -> int:
        """The first list: static aliases, rule paths, own files, knobs. Returns its size."""
        for alias in static_aliases(self.config):
            self.aliases.add(alias)
        self.watch_for_rules()
        self.watch_own_files()
        self.sysctl = SysctlWatch()
        self.backend = backend
        return backend.set_watches(self.kernel_list()) if backend is not None else 0

    def _add(self, path: bytes) -> None:
        if self.backend is not None:
            self.backend.add_watch(path)

    def add_alias(self, alias: Alias) -> None:
        if not self.aliases.add(alias):
            return
        self._add(alias.link)
        log.info("following symlink %s -> %s into a watched tree (%s)",
                 os.fsdecode(alias.link), os.fsdecode(alias.target), alias.found_by)

    def new_link(self, link: bytes, target: bytes) -> None:
        """The pipeline saw a symlink created: an alias if it leads into a watched tree."""
        self.add_alias(Alias(link, target, "created"))

    def watch_for_rules(self) -> None:
        """Watch-only entries for the file rules' paths outside the configured directories
        (vigil.rules.watchpaths); added, never removed while running (a stale entry only lets
        records through to the exact check)."""
        if self.detector is None:
            return
        paths, _ = watch_paths(self.detector.ruleset.rules, realtime_roots(self.config))
        for w in paths:
            if w not in self.rule_paths:
                self.rule_paths.append(w)
                self._add(w.directory)
                log.info("watching %s for rule(s): %s", os.fsdecode(w.prefix),
                         "; ".join(w.rules))

    def watch_own_files(self) -> None:
        """Vigil's own files (vigil.ownfiles) as watch-only kernel entries, for the rules;
        again at each reload (the rule paths may change). Added, never removed."""
        if self.detector is None:
            return
        obj = self._obj_path
        self.own = OwnFiles(configured_sources(
            self.config, self.detector.ruleset.paths, btf_path=self._btf_path,
            obj_dir=(obj.parent if obj is not None and obj.is_file() else obj)))
        for p in self.own.kernel_entries(kernel_watch_paths(self.config)):
            if p not in self._own_entries:
                self._own_entries.add(p)
                self._add(p)
                log.info("watching Vigil's own %s", os.fsdecode(p))

    # ---- a new configuration -----------------------------------------------------------------

    def apply(self, config: Config) -> tuple[int, int]:
        """``config`` in place of the running one: the policy, the aliases that still lead into
        a watched tree, the rule paths and own files again, and the kernel's list updated (new
        entries first). Returns the kernel entries (added, removed)."""
        old = self.aliases.aliases()
        self.config = config
        self.policy = Policy(config)
        self._verdicts.clear()
        self.aliases = AliasSet(config)
        for alias in static_aliases(config) + old:
            self.aliases.add(alias)
        self.rule_paths = []
        self._own_entries = set()
        self.watch_for_rules()
        self.watch_own_files()
        if self.backend is None:
            return 0, 0
        return self.backend.update_watches(self.kernel_list())

    # ---- the exact check, per event ----------------------------------------------------------

    def new_batch(self) -> None:
        self._verdicts.clear()

    def is_watched(self, path: bytes) -> bool:
        """Whether the pipeline keeps an event of ``path``: reported (the policy), or seen by
        the rules only: a path a rule asked the kernel to watch, or one the configuration
        ignores (or restricts, or that lies deeper than its depth) in a configured tree,
        which must not become a place to hide from the rules (``*.swp`` in /usr/bin); or the
        health check's."""
        if self.reported(path):
            return True
        if self.sysctl is not None and path in self.sysctl:
            return True
        if self.health_dir is not None and path.startswith(self.health_dir + b"/"):
            return True
        if self.detector is None:
            return False
        return self.policy.directory_for(path) is not None \
            or any(w.covers(path) for w in self.rule_paths) or self.own.covers(path)

    def unix_watched(self, path: bytes) -> bool:
        """A Unix socket path on the network section's list (or below a directory on it)."""
        return any(path == p or path.startswith(p.rstrip(b"/") + b"/")
                   for p in self.config.network.unix_paths)

    def reported(self, path: bytes) -> bool:
        """The policy's verdict on ``path``, asked once per batch: the pipeline asks first,
        ``configured`` again for the same paths."""
        v = self._verdicts.get(path)
        if v is None:
            v = self._verdicts[path] = self.policy.watched(path) is not None
        return v

    def configured(self, ev: Event) -> bool:
        """A file event the configuration reports (telemetry, FIM), not one kept for the
        rules only (a rule's watch-only path, an ignored name, one of Vigil's own files);
        a security knob's write is reported."""
        if not isinstance(ev, FileEvent) or ev.flags & TRUNCATED or self.reported(ev.path) \
                or ev.sysctl is not None:
            return True   # a cut path is kept by the pipeline for the configured trees
        return ev.op in TWO_PATHS and ev.target_path is not None \
            and self.reported(ev.target_path)
