"""Vigil's own files: the set the agent always watches, whatever the configuration says.

An intruder who can rewrite the agent's configuration, its rules, its baseline, its BPF
objects or its code can blind it from then on (MITRE ATT&CK T1562.001, "Impair Defenses:
Disable or Modify Tools"). So these paths are watched in the kernel for the rules even where
no configured directory covers them, and every event on them carries ``vigil.protected:
self`` (vigil.outputs.ecs), which the pack rule ``vigil_file_own_files_changed.yml`` alerts
on. The agent's own writes (its baseline database, its JSON log) never reach user space: the
kernel side drops every file operation of the agent's own process (``cfg_self_tgid``).

Owns which paths are Vigil's own (``own_files``), the exact test of a path against them
(``OwnFiles.covers``: the file itself, or anything below a directory) and the kernel entries
they need. Does not own the kernel map (vigil.kernel.backend) nor the rule.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vigil.config import EMBEDDED_NAME, Config

PACKAGE_DIR = Path(__file__).resolve().parent
# SQLite's companions of a database: write-ahead log, shared memory index, rollback journal
DB_SIBLINGS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True, slots=True)
class OwnFile:
    path: bytes   # canonical (events name canonical paths)
    what: str     # config, rules, database, output, bpf-objects, btf, package
    is_dir: bool


def _distribution_files(package_dir: Path) -> list[Path]:
    """The installed distribution's files outside the package directory: its metadata, the
    ``vigil`` launcher and, for an editable install, the ``.pth`` file and import hook that
    say where the package is (rewrite those and another ``vigil`` is imported)."""
    try:
        files = importlib.metadata.distribution("vigil").files or []
    except importlib.metadata.PackageNotFoundError:
        return []
    out: list[Path] = []
    for f in files:
        p = Path(os.path.realpath(f.locate()))
        if not p.is_relative_to(package_dir) and "__pycache__" not in p.parts:
            out.append(p)
    return out


def own_files(config: Config, rule_paths: Iterable[Path] = (), *,
              btf_path: str | Path | None = None, obj_dir: Path | None = None,
              btf_archive: Path | None = None,
              package_dir: Path | None = PACKAGE_DIR) -> list[OwnFile]:
    """Vigil's own files for this run, those that exist (the database's companions even
    before SQLite makes them), in a stable order, each once."""
    found: dict[bytes, OwnFile] = {}

    def add(p: str | Path | None, what: str, must_exist: bool = True) -> None:
        if p is None:
            return
        real = os.fsencode(os.path.realpath(os.path.abspath(p)))
        if real in found or (must_exist and not os.path.exists(real)):
            return
        found[real] = OwnFile(real, what, os.path.isdir(real))

    if config.source != EMBEDDED_NAME:
        add(config.source, "config")
    for r in rule_paths:
        add(r, "rules")
    add(config.database, "database", must_exist=False)
    for suffix in DB_SIBLINGS:
        add(str(config.database) + suffix, "database", must_exist=False)
    add(config.json_file, "output", must_exist=False)
    add(obj_dir, "bpf-objects")
    add(btf_path, "btf")
    add(btf_archive, "btf")
    if package_dir is not None:
        add(package_dir, "package")
        for f in _distribution_files(package_dir):
            add(f, "package")
    return list(found.values())


class OwnFiles:
    """The exact test: a path is Vigil's own when it is one of the files or lies below one of
    the directories (whole components)."""

    def __init__(self, files: Sequence[OwnFile] = ()) -> None:
        self.files = list(files)
        self._exact = frozenset(f.path for f in files)
        self._dirs = tuple(f.path.rstrip(b"/") + b"/" for f in files if f.is_dir)

    def __bool__(self) -> bool:
        return bool(self.files)

    def covers(self, path: bytes) -> bool:
        return path in self._exact or path.startswith(self._dirs)

    def kernel_entries(self, covered: Sequence[bytes] = ()) -> list[bytes]:
        """The kernel watch entries (the list matches whole components, so a file's own path
        is an entry for that file alone), less those inside one of ``covered``'s prefixes or
        below another of Vigil's own directories."""
        out: list[bytes] = []
        for f in self.files:
            if not any(f.path == c or f.path.startswith(c.rstrip(b"/") + b"/")
                       for c in covered) and not f.path.startswith(
                           tuple(d for d in self._dirs if d != f.path + b"/")):
                out.append(f.path)
        return out


def configured_sources(config: Config, rule_paths: Iterable[Path], *,
                       btf_path: str | Path | None = None,
                       obj_dir: Path | None = None) -> list[OwnFile]:
    """``own_files`` with the places this installation uses by default: the shipped BPF
    objects (vigil.kernel.loader) and the tailored-BTF archive in use (VIGIL_BTF_ARCHIVE or
    the shipped one)."""
    from vigil.kernel.btf_archive import SHIPPED
    from vigil.kernel.btf_source import ARCHIVE_ENV
    from vigil.kernel.loader import OBJECTS_DIR

    archive = Path(os.environ.get(ARCHIVE_ENV) or SHIPPED)
    return own_files(config, rule_paths, btf_path=btf_path,
                     obj_dir=obj_dir or OBJECTS_DIR, btf_archive=archive)
