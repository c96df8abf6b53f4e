"""A kernel backend: Vigil's BPF object, configured for one hook set, loaded and attached.

Owns the phases between open and load (STYLE.md, "named loading phases"): which programs load
(the backend's Plan from vigil.kernel.hooks, less the syscall and io_uring tracepoints this
kernel lacks), the ring size, the settings written to .rodata; then the watch list (an LPM
trie) and the counters. Does not own choosing the backend (``vigil.kernel.choose``), decoding
(``vigil.events``) nor what is done with events (``vigil.agent``).
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import platform
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vigil.config.model import NetworkConfig
from vigil.events import layout
from vigil.kernel import net, probes, uprobes
from vigil.kernel.errors import (
    LibbpfError,
    NotSupportedError,
    VigilError,
)
from vigil.kernel.hooks import TAIL_CALLS, Plan, tail_call_targets
from vigil.kernel.libbpf import bpf_map_count_entries, libbpf_num_possible_cpus
from vigil.kernel.loader import BpfObjectSpec, Link, LoadedObject, OpenObject, bundled_object
from vigil.kernel.lru import EvictionCounter
from vigil.kernel.mounts import ensure_mounted, tracepoint_exists
from vigil.kernel.perfbuf import PerfReader, per_cpu_pages
from vigil.kernel.ringbuf import ORDERED_ARCHES, RingReader

log = logging.getLogger(__name__)

OBJECT_NAME = "vigil"
# Tracepoint categories whose events differ between kernels: a program whose tracepoint is
# absent here is not loaded (syscalls come and go; io_uring_submit_sqe became _submit_req).
_OPTIONAL_TRACEPOINTS = ("syscalls", "io_uring", "sock", "module")
_WATCH_VAL = struct.Struct("=II")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_OWN_KINDS = {"prog": 1, "map": 2, "link": 3}   # enum vigil_own_kind
# Test-only: smaller kernel maps, so that tests can fill them ("wfiles=512,uring_reqs=64").
MAP_ENTRIES_ENV = "VIGIL_TEST_MAP_ENTRIES"
_SIZABLE_MAPS = ("wfiles", "uring_reqs", "pending", "inflight", "uring_parked")
# The LRU maps whose evictions are counted (vigil.kernel.lru): the map and its two stat slots.
LRU_MAPS = {"wfiles": (layout.Stat.WFILES_NEW, layout.Stat.WFILES_DEL),
            "uring_reqs": (layout.Stat.URING_NEW, layout.Stat.URING_DEL)}


def map_sizes_for_tests(value: str | None = None) -> dict[str, int]:
    """The map sizes ``VIGIL_TEST_MAP_ENTRIES`` asks for (tests only)."""
    raw = os.environ.get(MAP_ENTRIES_ENV, "") if value is None else value
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in raw.split(","))):
        name, _, n = item.partition("=")
        if name not in _SIZABLE_MAPS or not n.isdigit() or int(n) < 1:
            raise VigilError(f"{MAP_ENTRIES_ENV}: {item!r} is not MAP=N with MAP one of "
                             f"{', '.join(_SIZABLE_MAPS)}")
        out[name] = int(n)
    return out


@dataclass(frozen=True)
class BackendSettings:
    ring_bytes: int = 16 << 20
    failed_errnos: tuple[str, ...] = ("EPERM", "EACCES", "EROFS")
    ignore_tgid: int = field(default_factory=os.getpid)
    wakeup_bytes: int = 1 << 20
    btf_custom_path: str | None = None
    event_buffer: str = "auto"  # one of EVENT_BUFFERS
    network: NetworkConfig | None = None  # None: no network events
    shell: bool = False  # the user-space hooks (vigil.kernel.uprobes): shell commands


# How records reach user space: "ring" (BPF ring buffer, vigil.bpf.o) or "perf" (a perf event
# array, vigil_perf.bpf.o: kernels < 5.8, and CPUs the ring reader cannot run on).
EVENT_BUFFERS = ("auto", "ring", "perf")
EventReader = RingReader | PerfReader


def choose_event_buffer(requested: str = "auto") -> tuple[str, str]:
    """"ring" or "perf", and why."""
    if requested not in EVENT_BUFFERS:
        raise ValueError(f"unknown event buffer {requested!r} (known: {', '.join(EVENT_BUFFERS)})")
    if requested != "auto":
        return requested, "asked for"
    ring = probes.have_ringbuf()
    if ring is False:
        return "perf", "this kernel has no BPF ring buffer (Linux < 5.8)"
    if platform.machine() not in ORDERED_ARCHES:
        return "perf", (f"the ring buffer reader needs a strongly ordered 64-bit CPU (x86_64), "
                        f"this is {platform.machine()}")
    if ring is None:
        return "ring", "assumed: ring buffer support could not be measured (needs root)"
    return "ring", "the kernel has BPF ring buffers"


def perf_variant(path: Path) -> Path:
    """The perf event array build of an object: vigil.bpf.o -> vigil_perf.bpf.o beside it."""
    return path.with_name(path.name.removesuffix(".bpf.o") + "_perf.bpf.o")


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


class KernelBackend:
    """Open -> configure -> load -> attach one backend's programs, then the maps user space
    needs while running. Which programs and settings: a vigil.kernel.hooks.Plan."""

    def __init__(self, settings: BackendSettings, plan: Plan, obj_path: Path | None = None,
                 opened: OpenObject | None = None) -> None:
        """``opened``: the object already opened for these settings (vigil.kernel.choose's
        open_first); start() takes it, loaded or closed, instead of opening the file again."""
        self.settings = settings
        self.plan = plan
        self._path = obj_path or bundled_object(OBJECT_NAME)
        self._opened = opened
        self._obj: LoadedObject | None = None
        self._links: list[Link] = []
        self.skipped: list[str] = []  # syscalls this kernel does not have
        self.unattached: dict[str, str] = {}  # optional programs the kernel would not attach
        self.skipped_sections: set[str] = set()  # programs whose tracepoint is absent
        self.reader: EventReader | None = None
        self.event_buffer = "ring"  # decided by start()
        self.evictions: dict[str, EvictionCounter] = {}
        self.uprobes: list[uprobes.Target] = []  # one per hooked binary, with its outcome
        self.uprobes_off = ""  # why the user-space hooks are off although asked for

    @property
    def name(self) -> str:
        return self.plan.backend

    @property
    def blind_spots(self) -> tuple[str, ...]:
        return self.plan.blind_spots

    def start(self) -> KernelBackend:
        ensure_mounted(securityfs=False)
        s = self.settings
        probes.use_btf(s.btf_custom_path)
        self.event_buffer, why = choose_event_buffer(s.event_buffer)
        log.info("event buffer: %s (%s)", self.event_buffer, why)
        perf = self.event_buffer == "perf"
        path = perf_variant(self._path) if perf else self._path
        user_hooks = uprobes.programs() if s.shell else frozenset()
        if user_hooks and (why := uprobes.unavailable()):
            user_hooks, self.uprobes_off = frozenset(), why
        opened, self._opened = self._opened, None
        if opened is not None and opened.path != path:
            opened.close()  # built for the other event buffer (not what open_first does)
            opened = None
        if opened is None:
            opened = BpfObjectSpec.open(path, btf_custom_path=s.btf_custom_path)
        with opened as spec:
            loading: set[str] = set()
            for prog in spec.programs:
                wanted = prog.name in self.plan.programs and (
                    net.ops_mask(s.network) != 0 or not net.is_net_program(prog.name))
                wanted = wanted or prog.name in user_hooks
                optional = _optional_tracepoint(prog.section)
                if wanted and optional and not tracepoint_exists(*optional):
                    wanted = False
                    self.skipped_sections.add(prog.section)
                    if optional[0] == "syscalls":
                        self.skipped.append(optional[1])
                if wanted and prog.name not in TAIL_CALLS:
                    loading.add(prog.name)
            # the tail-call handlers that a loaded program reaches, and only those
            loading |= tail_call_targets(loading)
            for prog in spec.programs:
                spec.set_autoload(prog.name, prog.name in loading)
            if not perf:  # a perf event array gets one entry per CPU from libbpf
                spec.set_max_entries("events", s.ring_bytes)
            if s.network is not None:
                spec.set_max_entries("net_flows", s.network.udp_flows)
            for name, n in map_sizes_for_tests().items():
                spec.set_max_entries(name, n)
            spec.set_rodata(
                cfg_failed_errnos=errno_mask(s.failed_errnos),
                cfg_wakeup_bytes=s.wakeup_bytes,
                cfg_self_tgid=s.ignore_tgid,
                **net.rodata(s.network),
                **self.plan.rodata,
            )
            self._obj = spec.load()
        self.evictions = {name: self._eviction_counter(name, *slots)
                          for name, slots in LRU_MAPS.items()}
        if any(sec.startswith("tracepoint/sock/") for sec in self.skipped_sections):
            log.warning("no sock:inet_sock_set_state tracepoint on this kernel (before 4.16): "
                        "TCP connects and listens are not reported")
        if self.skipped:
            log.info("syscalls absent on this kernel, not hooked: %s",
                     ", ".join(sorted({t.split("_", 2)[2] for t in self.skipped})))
        try:
            self._fill_tail_calls()
            net.fill_maps(self._obj, s.network, watch_key)
            # The reader first: a perf event array has no buffer until the reader opens one,
            # and every record sent before that would be a drop.
            fd = self._obj.map_fd("events")
            # Perf buffers are per CPU: together they get the memory the ring would have had.
            self.reader = PerfReader(fd, per_cpu_pages(s.ring_bytes, os.cpu_count() or 1)) \
                if perf else RingReader(fd, s.ring_bytes)
            # Programs in a bare "tracepoint" section are tail-call targets, not attached.
            # Syscall exits before entries: an entry program may leave a call's arguments
            # for its exit, which must then be there to take them.
            for p in sorted(self._obj.programs, key=lambda p: "/sys_exit_" not in p.section):
                if p.name in self.plan.programs and p.section != "tracepoint" \
                        and p.section not in self.skipped_sections:
                    self._attach(p.name)
            if user_hooks:   # per binary, by path and symbol; their links go with the object
                self.uprobes = uprobes.attach_hooks(self._obj)
            self._own_ids()
        except BaseException:
            self.close()
            raise
        return self

    def _attach(self, name: str) -> None:
        """Attach one program. One the plan holds optional (a fallback of nothing: a
        trampoline of seven arguments, which kernels before 6.6 load but do not attach) may
        fail alone: what it reports goes unseen, and the log says so."""
        try:
            self._links.append(self.obj.attach(name))
        except (LibbpfError, NotSupportedError) as e:
            if self.plan.fallbacks.get(name, None) != frozenset():
                raise
            self.unattached[name] = str(e)
            log.warning("%s cannot attach on this kernel (%s): its events are not seen",
                        name, e)

    def _fill_tail_calls(self) -> None:
        """The slots of the loaded handlers in the tail-call table, before any program that
        calls them is attached (an empty slot is a tail call that does nothing)."""
        table = self.obj.map("handlers")
        for p in self.obj.programs:
            slot = TAIL_CALLS.get(p.name)
            if slot is not None:
                table.update(_U32.pack(slot[0]), _U32.pack(self.obj.program_fd(p.name)))

    def _own_ids(self) -> None:
        """Tell the kernel side the ids of this object's programs, maps and links: another
        process asking for a handle on one of them is reported (bpf/sec.bpf.h)."""
        own = self.obj.map("own_ids")
        for kind, ids in self.obj.object_ids().items():
            for i in ids:
                own.update(_U64.pack(_OWN_KINDS[kind] << 32 | i), b"\1")

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

    def update_watches(self, include: Iterable[bytes]) -> tuple[int, int]:
        """Makes the kernel's watch list ``include`` without a moment in which a path on both
        the old and the new list is unwatched: new entries are added first, then the entries
        no longer wanted removed. Returns (added, removed)."""
        m = self.obj.map("watched")
        want = {watch_key(p): i for i, p in enumerate(include)}
        have = set(m.keys())
        added = 0
        for key, i in want.items():
            if key not in have:
                m.update(key, _WATCH_VAL.pack(layout.WATCH_INCLUDE, i))
                added += 1
        gone = [key for key in have if key not in want]
        for key in gone:
            m.delete(key)
        return added, len(gone)

    def add_watch(self, path: bytes) -> None:
        """One more watched name (a symlink leading into a watched tree)."""
        m = self.obj.map("watched")
        m.update(watch_key(path), _WATCH_VAL.pack(layout.WATCH_INCLUDE, 0))

    def _stat(self, stat: layout.Stat) -> int:
        values = self.obj.map("stats").lookup_percpu(_U32.pack(stat))
        return sum(_U64.unpack_from(v)[0] for v in values)

    def _eviction_counter(self, name: str, new: layout.Stat,
                          deleted: layout.Stat) -> EvictionCounter:
        m = self.obj.map(name)

        def read() -> tuple[int, int]:
            d = self._stat(deleted)  # deletes first: inserts - deletes stays an upper bound
            return self._stat(new), d

        def live() -> int | None:
            n = bpf_map_count_entries(m.fd, m.key_size, m.value_size, m.max_entries)
            if n is None:  # no batch lookup (Linux < 5.6): one key at a time
                n = 0
                for _key in m.keys():  # noqa: SIM118 (a map handle, no dict)
                    n += 1
            return n

        return EvictionCounter(name, m.max_entries, libbpf_num_possible_cpus(), read, live)

    def counters(self) -> dict[str, int]:
        """The per-CPU counters, summed: drops per kind, full maps, and the evictions of each
        LRU map (``<map>_evicted``)."""
        out = {stat.name.lower(): self._stat(stat) for stat in layout.Stat}
        for name, ev in self.evictions.items():
            out[f"{name}_evicted"] = ev.update()
        if isinstance(self.reader, PerfReader):
            # Samples perf reports lost were also counted by kind (and as perf_full) when the
            # BPF side saw the failure; only kernels whose bpf_perf_event_output returns 0 on a
            # full buffer (4.x) leave an excess, whose kind nobody knows.
            out["drop_unknown"] = max(0, self.reader.lost - out["perf_full"])
        return out

    def forget_open_file(self, file_id: int) -> None:
        """The process holding ``file_id`` for writing exited: drop the kernel's record of it."""
        if self.obj.map("wfiles").delete(_U64.pack(file_id)):
            self.evictions["wfiles"].user_deletes += 1

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

    def __enter__(self) -> KernelBackend:
        return self if self._obj is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _optional_tracepoint(section: str) -> tuple[str, str] | None:
    """("io_uring", "io_uring_submit_req") for a program that needs that tracepoint, or None."""
    kind, _, rest = section.partition("/")
    category, _, name = rest.partition("/")
    if kind == "tracepoint" and category in _OPTIONAL_TRACEPOINTS and name:
        return category, name
    return None
