"""The syscall-tracepoint backend: Vigil's BPF object, configured, loaded and attached.

Owns every decision that depends on the running kernel, in one place between open and load
(STYLE.md, "named loading phases"): which syscall tracepoints exist here (legacy syscalls are
absent on arm64, new ones on old kernels), the ring size, the settings written to .rodata. Then
the watch list (an LPM trie) and the counters. Does not own decoding (``vigil.events``) nor
what is done with events (``vigil.agent``).
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vigil.events import layout
from vigil.kernel.loader import BpfObjectSpec, Link, LoadedObject, bundled_object
from vigil.kernel.mounts import ensure_mounted, tracepoint_exists
from vigil.kernel.ringbuf import RingReader

log = logging.getLogger(__name__)

OBJECT_NAME = "vigil"
_SYSCALL_PREFIX = "tracepoint/syscalls/"
_WATCH_VAL = struct.Struct("=II")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")


@dataclass(frozen=True)
class BackendSettings:
    ring_bytes: int = 16 << 20
    failed_errnos: tuple[str, ...] = ("EPERM", "EACCES", "EROFS")
    ignore_tgid: int = field(default_factory=os.getpid)
    wakeup_bytes: int = 1 << 20
    btf_custom_path: str | None = None


def errno_mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        value = getattr(errno_mod, name, None)
        if not isinstance(value, int) or not 0 < value < 64:
            raise ValueError(f"unknown errno name {name!r}")
        mask |= 1 << value
    return mask


def watch_key(path: bytes) -> bytes:
    """The LPM key for a watched path: "<path>/" (the kernel looks up "<event path>/")."""
    p = path.rstrip(b"/") + b"/"
    data = p[: layout.WATCH_KEY_LEN]
    return _U32.pack(len(data) * 8) + data.ljust(layout.WATCH_KEY_LEN, b"\0")


# What this backend cannot see; `vigil doctor` shows it, ARCHITECTURE.md explains it.
TRACEPOINT_BLIND_SPOTS = (
    "io_uring file operations (they never pass through syscall tracepoints)",
    "operations through a symlink or bind mount into a watched tree made before Vigil started "
    "(path arguments are matched by their text; new symlinks are followed)",
    "close_range(), writes through mmap after close, files inherited by a child that outlives "
    "the opener (scheduled scans and rescans after drops catch the result)",
)


class TracepointBackend:
    """Open -> configure -> load -> attach, then the maps user space needs while running."""

    name = "tracepoint"
    blind_spots = TRACEPOINT_BLIND_SPOTS

    def __init__(self, settings: BackendSettings, obj_path: Path | None = None) -> None:
        self.settings = settings
        self._path = obj_path or bundled_object(OBJECT_NAME)
        self._obj: LoadedObject | None = None
        self._links: list[Link] = []
        self.skipped: list[str] = []  # syscalls this kernel does not have
        self.reader: RingReader | None = None

    def start(self) -> TracepointBackend:
        ensure_mounted(securityfs=False)
        s = self.settings
        with BpfObjectSpec.open(self._path, btf_custom_path=s.btf_custom_path) as spec:
            for prog in spec.programs:
                if prog.section.startswith(_SYSCALL_PREFIX):
                    tp = prog.section[len(_SYSCALL_PREFIX):]
                    if not tracepoint_exists("syscalls", tp):
                        spec.set_autoload(prog.name, False)
                        self.skipped.append(tp)
            spec.set_max_entries("events", s.ring_bytes)
            spec.set_rodata(
                cfg_failed_errnos=errno_mask(s.failed_errnos),
                cfg_wakeup_bytes=s.wakeup_bytes,
                cfg_self_tgid=s.ignore_tgid,
            )
            self._obj = spec.load()
        if self.skipped:
            log.info("syscalls absent on this kernel, not hooked: %s",
                     ", ".join(sorted({t.split("_", 2)[2] for t in self.skipped})))
        # Programs in a bare "tracepoint" section are tail-call targets, not attached.
        self._links = self._obj.attach_all(
            [p.name for p in self._obj.programs
             if p.section != "tracepoint" and not _skipped(p.section, self.skipped)])
        self.reader = RingReader(self._obj.map_fd("events"), s.ring_bytes)
        return self

    @property
    def obj(self) -> LoadedObject:
        if self._obj is None:
            raise RuntimeError("backend not started")
        return self._obj

    def set_watches(self, include: Iterable[bytes], exclude: Iterable[bytes] = ()) -> int:
        """Replaces the kernel's watch list. Returns the number of entries."""
        m = self.obj.map("watched")
        for key in list(m.keys()):
            m.delete(key)
        n = 0
        for flags, paths in ((layout.WATCH_INCLUDE, include), (layout.WATCH_EXCLUDE, exclude)):
            for i, p in enumerate(paths):
                m.update(watch_key(p), _WATCH_VAL.pack(flags, i))
                n += 1
        return n

    def add_watch(self, path: bytes) -> None:
        """One more watched name (a symlink leading into a watched tree)."""
        m = self.obj.map("watched")
        m.update(watch_key(path), _WATCH_VAL.pack(layout.WATCH_INCLUDE, 0))

    def counters(self) -> dict[str, int]:
        """The per-CPU counters, summed: drops per kind and full maps."""
        m = self.obj.map("stats")
        out: dict[str, int] = {}
        for stat in layout.Stat:
            values = m.lookup_percpu(_U32.pack(stat))
            out[stat.name.lower()] = sum(_U64.unpack_from(v)[0] for v in values)
        return out

    def forget_open_file(self, file_id: int) -> None:
        """The process holding ``file_id`` for writing exited: drop the kernel's record of it."""
        self.obj.map("wfiles").delete(_U64.pack(file_id))

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        # Each detach of the last program on a tracepoint waits for the kernel to unregister it
        # (~40 ms, serialised in the kernel: a thread pool does not help); ~3 s for all of them.
        for link in self._links:
            link.destroy()
        self._links = []
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> TracepointBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _skipped(section: str, skipped: list[str]) -> bool:
    return section.startswith(_SYSCALL_PREFIX) and section[len(_SYSCALL_PREFIX):] in skipped
