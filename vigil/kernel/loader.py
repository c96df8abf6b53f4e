"""BPF object life cycle in named phases: open -> configure -> load -> attach -> read -> close.

Modelled on cilium/ebpf (spec vs. loaded collection) and libbpf-rs (OpenObject -> Object):

    with BpfObjectSpec.open(path) as spec:          # ELF parsed, nothing in the kernel yet
        spec.set_autoload("x", False)               # everything that depends on the running
        spec.set_rodata(target_pid=1234)            # kernel is decided here, in one place
        obj = spec.load()                           # verifier; spec is consumed
    with obj:
        obj.attach_all()
        obj.map("counts").lookup(key)

Owns object/link/map-handle life cycles and the translation of load failures into
VerifierError / BpfPermissionError / LibbpfError. It does not decide which programs to load
(callers and vigil.kernel.probes do), and declares no ctypes prototypes (vigil.kernel.libbpf).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import platform
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from vigil.kernel import libbpf
from vigil.kernel.arch import canonical
from vigil.kernel.btf import Btf
from vigil.kernel.errors import (
    BpfPermissionError,
    KernelError,
    LibbpfError,
    VerifierError,
)

OBJECTS_DIR = Path(__file__).resolve().parent.parent / "bpf_objects"
_FAILED_PROG = re.compile(r"prog '([^']+)': BPF program load failed")
# Verifier lines that carry no information about *why* a program was rejected.
_NOISE = re.compile(r"^(processed \d+ insns|verification time|stack depth|-- END|$)")


def bundled_object(name: str, arch: str | None = None) -> Path:
    """Path of a compiled object shipped with Vigil: bpf_objects/<uname -m>/<name>.bpf.o, for
    this machine unless ``arch`` says otherwise. NotSupportedError for an architecture Vigil
    has no objects for."""
    return OBJECTS_DIR / canonical(arch or platform.machine()) / f"{name}.bpf.o"


def summarize_verifier_log(log: str, lines: int = 5) -> str:
    meaningful = [ln.rstrip() for ln in log.splitlines() if not _NOISE.match(ln.strip())]
    return "\n".join(meaningful[-lines:])


@dataclass(frozen=True)
class ProgramInfo:
    name: str
    section: str


class _Closable:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort only: at interpreter exit the modules we need may already be gone.
        with contextlib.suppress(Exception):
            self.close()


class BpfObjectSpec:
    """Namespace for the first phase; open() parses the ELF file without touching the kernel."""

    @staticmethod
    def open(path: Path | str, *, btf_custom_path: str | None = None,
             name: str | None = None) -> OpenObject:
        path = Path(path)
        if not path.is_file():
            raise LibbpfError(f"opening BPF object {path}", _errno.ENOENT,
                              "the file does not exist (was `make -C bpf` run?)")
        opts = libbpf.BpfObjectOpenOpts(
            object_name=name.encode() if name else None,
            btf_custom_path=btf_custom_path.encode() if btf_custom_path else None,
        )
        with libbpf.capture_log() as cap:
            try:
                ptr = libbpf.bpf_object__open_file(str(path), opts)
            except LibbpfError as e:
                raise LibbpfError(e.operation, e.errno, cap.cause()) from None
        return OpenObject(ptr, path)


class OpenObject(_Closable):
    """An opened, not yet loaded object: the place to configure before the verifier runs."""

    def __init__(self, ptr: int, path: Path) -> None:
        self._ptr: int | None = ptr
        self.path = path

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise ValueError(f"{self.path.name}: the object was already loaded or closed")
        return self._ptr

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr:
            libbpf.bpf_object__close(ptr)

    @property
    def programs(self) -> list[ProgramInfo]:
        return [ProgramInfo(libbpf.bpf_program__name(p), libbpf.bpf_program__section_name(p))
                for p in _programs(self.ptr)]

    @property
    def maps(self) -> list[str]:
        return [libbpf.bpf_map__name(m) for m in _maps(self.ptr)]

    def _program(self, name: str) -> int:
        prog = libbpf.bpf_object__find_program_by_name(self.ptr, name)
        if prog is None:
            known = ", ".join(p.name for p in self.programs)
            raise ValueError(f"{self.path.name} has no program {name!r} (it has: {known})")
        return prog

    def _map(self, name: str) -> int:
        m = libbpf.bpf_object__find_map_by_name(self.ptr, name)
        if m is None:
            raise ValueError(f"{self.path.name} has no map {name!r} (it has: "
                             f"{', '.join(self.maps)})")
        return m

    def set_autoload(self, prog_name: str, enabled: bool) -> None:
        libbpf.bpf_program__set_autoload(self._program(prog_name), enabled)

    def set_max_entries(self, map_name: str, n: int) -> None:
        libbpf.bpf_map__set_max_entries(self._map(map_name), n)

    def set_autocreate(self, map_name: str, enabled: bool) -> None:
        """Skip creating a map no loaded program uses (e.g. a ring buffer on a kernel < 5.8)."""
        libbpf.bpf_map__set_autocreate(self._map(map_name), enabled)

    def rodata_layout(self) -> dict[str, tuple[int, int]]:
        """{name: (offset, size)} of the `const volatile` globals, from the object's BTF.

        Read after open because libbpf fixes up the DATASEC offsets then (clang leaves them 0).
        """
        btf_ptr = libbpf.bpf_object__btf(self.ptr)
        if btf_ptr is None:
            raise ValueError(f"{self.path.name} has no BTF (compile it with -g)")
        with Btf.borrow(btf_ptr, str(self.path)) as btf:
            try:
                return btf.datasec_vars(".rodata")
            except KeyError:
                return {}

    def set_rodata(self, **values: int | bytes) -> None:
        """Write `const volatile` globals before load (ints in host byte order, bytes padded)."""
        layout = self.rodata_layout()
        unknown = sorted(set(values) - set(layout))
        if unknown:
            raise ValueError(f"{self.path.name} has no .rodata variable {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(layout)) or 'none'})")
        addr, total = libbpf.bpf_map__initial_value(self._map(".rodata"))
        for name, value in values.items():
            offset, size = layout[name]
            if isinstance(value, bool | int):
                data = int(value).to_bytes(size, sys.byteorder, signed=int(value) < 0)
            elif isinstance(value, bytes):
                if len(value) > size:
                    raise ValueError(f"{name} holds {size} bytes, got {len(value)}")
                data = value.ljust(size, b"\0")
            else:
                raise TypeError(f"{name}: expected int or bytes, got {type(value).__name__}")
            if offset + size > total:  # a corrupt object; never write past libbpf's buffer
                raise ValueError(f"{name} lies outside .rodata ({offset}+{size} > {total})")
            ctypes.memmove(addr + offset, data, size)

    def load(self) -> LoadedObject:
        """Run the verifier. Consumes this OpenObject; on failure the object is closed."""
        ptr = self.ptr
        self._ptr = None  # whatever happens next, the pointer has a new owner
        with libbpf.capture_log() as cap:
            try:
                libbpf.bpf_object__load(ptr)
            except KernelError as e:
                libbpf.bpf_object__close(ptr)
                raise self._load_error(e, cap) from None
        return LoadedObject(ptr, self.path)

    def _load_error(self, e: KernelError, cap: libbpf.LogCapture) -> KernelError:
        err = e.errno or _errno.EINVAL
        logs = cap.prog_load_logs()
        failed = _FAILED_PROG.findall(cap.text)
        prog = failed[-1] if failed else (list(logs)[-1] if logs else None)
        if prog and logs.get(prog, "").strip():
            return VerifierError(prog, summarize_verifier_log(logs[prog]), logs[prog], err)
        what = f"loading program '{prog}' of {self.path.name}" if prog else \
            f"loading {self.path.name}"
        if err in (_errno.EPERM, _errno.EACCES):
            return BpfPermissionError(what, err)
        if isinstance(e, LibbpfError):
            return LibbpfError(what, err, cap.cause())
        return e


class Link(_Closable):
    """An attachment of a program to its hook; destroy() detaches."""

    def __init__(self, ptr: int, program: str) -> None:
        self._ptr: int | None = ptr
        self.program = program

    @property
    def attached(self) -> bool:
        return self._ptr is not None

    def object_id(self) -> int | None:
        """The kernel's id of this BPF link; None for an attachment that is no BPF link (a
        kprobe or tracepoint attached through a perf event before 5.15, a detached link)."""
        if self._ptr is None:
            return None
        try:
            return libbpf.object_id(libbpf.bpf_link__fd(self._ptr))
        except LibbpfError:
            return None

    def destroy(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr:
            libbpf.bpf_link__destroy(ptr)

    close = destroy


class LoadedObject(_Closable):
    """Programs and maps held by the kernel. close() detaches every link, then frees all fds."""

    def __init__(self, ptr: int, path: Path) -> None:
        self._ptr: int | None = ptr
        self.path = path
        self._links: list[Link] = []

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise ValueError(f"{self.path.name}: the object is closed")
        return self._ptr

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        links, self._links = getattr(self, "_links", []), []
        for link in links:
            link.destroy()
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr:
            libbpf.bpf_object__close(ptr)

    @property
    def programs(self) -> list[ProgramInfo]:
        return [ProgramInfo(libbpf.bpf_program__name(p), libbpf.bpf_program__section_name(p))
                for p in _programs(self.ptr) if libbpf.bpf_program__autoload(p)]

    def program_fd(self, prog_name: str) -> int:
        prog = libbpf.bpf_object__find_program_by_name(self.ptr, prog_name)
        if prog is None:
            raise ValueError(f"{self.path.name} has no program {prog_name!r}")
        return libbpf.bpf_program__fd(prog)

    def attach(self, prog_name: str) -> Link:
        prog = libbpf.bpf_object__find_program_by_name(self.ptr, prog_name)
        if prog is None:
            raise ValueError(f"{self.path.name} has no program {prog_name!r}")
        with libbpf.capture_log() as cap:
            try:
                ptr = libbpf.bpf_program__attach(prog)
            except LibbpfError as e:
                # libbpf's last warning says which hook was missing; the errno alone does not.
                raise LibbpfError(e.operation, e.errno, cap.cause()) from None
        link = Link(ptr, prog_name)
        self._links.append(link)
        return link

    def attach_uprobe(self, prog_name: str, binary: str, *, offset: int = 0,
                      func_name: str | None = None, retprobe: bool = False) -> Link:
        """A uprobe (or uretprobe) of every process on ``binary``: at ``func_name``, found by
        libbpf in its symbol tables, or at the file ``offset``. Detached with the object."""
        prog = libbpf.bpf_object__find_program_by_name(self.ptr, prog_name)
        if prog is None:
            raise ValueError(f"{self.path.name} has no program {prog_name!r}")
        with libbpf.capture_log() as cap:
            try:
                ptr = libbpf.bpf_program__attach_uprobe_opts(
                    prog, binary, offset, retprobe=retprobe, func_name=func_name)
            except LibbpfError as e:
                raise LibbpfError(e.operation, e.errno, cap.cause()) from None
        link = Link(ptr, prog_name)
        self._links.append(link)
        return link

    def attach_all(self, names: Iterable[str] | None = None) -> list[Link]:
        """Attach the named programs (default: every loaded one); all or nothing."""
        wanted = list(names) if names is not None else [p.name for p in self.programs]
        links: list[Link] = []
        try:
            for name in wanted:
                links.append(self.attach(name))
        except BaseException:
            for link in links:
                link.destroy()
            raise
        return links

    def object_ids(self) -> dict[str, list[int]]:
        """The kernel's ids of this object's loaded programs, its maps and its live links
        (``prog``, ``map``, ``link``): what another process would name to take a handle on
        them (BPF_*_GET_FD_BY_ID)."""
        return {
            "prog": [libbpf.object_id(libbpf.bpf_program__fd(p)) for p in _programs(self.ptr)
                     if libbpf.bpf_program__autoload(p)],
            "map": [libbpf.object_id(fd) for m in _maps(self.ptr)
                    if (fd := libbpf.lib().bpf_map__fd(m)) >= 0],   # maps never created: -1
            "link": [i for link in self._links if (i := link.object_id()) is not None],
        }

    def map_fd(self, name: str) -> int:
        m = libbpf.bpf_object__find_map_by_name(self.ptr, name)
        if m is None:
            raise ValueError(f"{self.path.name} has no map {name!r}")
        return libbpf.bpf_map__fd(m)

    def map(self, name: str) -> MapHandle:
        m = libbpf.bpf_object__find_map_by_name(self.ptr, name)
        if m is None:
            known = ", ".join(libbpf.bpf_map__name(x) for x in _maps(self.ptr))
            raise ValueError(f"{self.path.name} has no map {name!r} (it has: {known})")
        return MapHandle(self, libbpf.bpf_map__fd(m), name, libbpf.bpf_map__key_size(m),
                         libbpf.bpf_map__value_size(m), libbpf.bpf_map__max_entries(m))


class MapHandle:
    """Key/value access to one map of a LoadedObject; refuses to run once the object closed
    (its fd number may already belong to something else)."""

    def __init__(self, owner: LoadedObject, fd: int, name: str, key_size: int,
                 value_size: int, max_entries: int) -> None:
        self._owner = owner
        self.fd, self.name = fd, name
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries

    def _fd(self, key: bytes | None = None) -> int:
        if self._owner.closed:
            raise ValueError(f"map {self.name}: its object is closed")
        if key is not None and len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, needs {self.key_size}")
        return self.fd

    def lookup(self, key: bytes) -> bytes | None:
        return libbpf.bpf_map_lookup_elem(self._fd(key), key, self.value_size)

    def lookup_percpu(self, key: bytes) -> list[bytes]:
        """One value per possible CPU; the kernel pads each to 8 bytes."""
        ncpu = libbpf.libbpf_num_possible_cpus()
        stride = (self.value_size + 7) // 8 * 8
        raw = libbpf.bpf_map_lookup_elem(self._fd(key), key, stride * ncpu)
        if raw is None:
            return []
        return [raw[i * stride: i * stride + self.value_size] for i in range(ncpu)]

    def update(self, key: bytes, value: bytes, flags: int = libbpf.BPF_ANY) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, "
                             f"needs {self.value_size}")
        libbpf.bpf_map_update_elem(self._fd(key), key, value, flags)

    def delete(self, key: bytes) -> bool:
        return libbpf.bpf_map_delete_elem(self._fd(key), key)

    def keys(self) -> Iterator[bytes]:
        key: bytes | None = None
        while True:
            key = libbpf.bpf_map_get_next_key(self._fd(), key, self.key_size)
            if key is None:
                return
            yield key


def _programs(obj: int) -> Iterator[int]:
    prog = libbpf.bpf_object__next_program(obj, None)
    while prog:
        yield prog
        prog = libbpf.bpf_object__next_program(obj, prog)


def _maps(obj: int) -> Iterator[int]:
    m = libbpf.bpf_object__next_map(obj, None)
    while m:
        yield m
        m = libbpf.bpf_object__next_map(obj, m)
