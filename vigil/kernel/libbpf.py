"""The one ctypes module of Vigil: the system libbpf (>= 1.0) and the few libc calls we need.

Owns every ctypes declaration of the project (argtypes/restype), the mirror of
`struct bpf_object_open_opts`, errno -> typed-error translation, and the capture of libbpf's
own log (libbpf_set_print). It does not own object life cycles (vigil.kernel.loader), BTF
decoding (vigil.kernel.btf) or mount policy (vigil.kernel.mounts).

Conventions of libbpf 1.x that the wrappers rely on: pointer-returning calls return NULL and
set errno; int-returning calls return -errno. Both libraries are opened lazily so that merely
importing Vigil works on a machine without libbpf; the first real call raises
LibbpfMissingError.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno as _errno
import logging
import platform
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from ctypes import CFUNCTYPE, POINTER, c_bool, c_char_p, c_int, c_size_t, c_uint32, c_uint64
from ctypes import c_void_p as _ptr
from typing import Any

from vigil.kernel.errors import (
    ENOTSUPP,
    BpfPermissionError,
    KernelError,
    LibbpfError,
    LibbpfMissingError,
    NotSupportedError,
    errno_text,
)

logger = logging.getLogger("vigil.libbpf")

MIN_VERSION = (1, 0)
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

# uapi enum values used by probes (stable kernel ABI).
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_TRACING = 26
BPF_PROG_TYPE_LSM = 29
BPF_MAP_TYPE_RINGBUF = 27
BPF_FUNC_ringbuf_output = 130
BPF_FUNC_d_path = 147
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2


class BpfObjectOpenOpts(ctypes.Structure):
    """Mirror of libbpf 1.1's `struct bpf_object_open_opts` (80 bytes on x86_64).

    tests/unit/test_libbpf_abi.py compiles the real header and compares every offset.
    """

    _fields_ = [
        ("sz", c_size_t),  # 0: libbpf rejects unknown sizes, so this must be sizeof(mirror)
        ("object_name", c_char_p),  # 8
        ("relaxed_maps", c_bool),  # 16
        ("pin_root_path", c_char_p),  # 24
        ("_removed_attach_prog_fd", c_uint32),  # 32: `__u32 :32;` kept as a hole by libbpf
        ("kconfig", c_char_p),  # 40
        ("btf_custom_path", c_char_p),  # 48
        ("kernel_log_buf", _ptr),  # 56
        ("kernel_log_size", c_size_t),  # 64
        ("kernel_log_level", c_uint32),  # 72; `size_t :0` pads the struct to 80
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sz=ctypes.sizeof(BpfObjectOpenOpts), **kwargs)


class BpfUprobeOpts(ctypes.Structure):
    """Mirror of libbpf 1.1's `struct bpf_uprobe_opts` (40 bytes on x86_64): later libbpf
    versions append fields and accept this size. tests/unit/test_libbpf_abi.py compares it."""

    _fields_ = [
        ("sz", c_size_t),  # 0
        ("ref_ctr_offset", c_size_t),  # 8
        ("bpf_cookie", c_uint64),  # 16
        ("retprobe", c_bool),  # 24
        ("func_name", c_char_p),  # 32; `size_t :0` ends it
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sz=ctypes.sizeof(BpfUprobeOpts), **kwargs)


_PRINT_FN = CFUNCTYPE(c_int, c_int, _ptr, _ptr)
# perf_buffer__new's callbacks (sample: ctx, cpu, data, size; lost: ctx, cpu, count). The data
# arrives as a char pointer: slicing it (data[:size]) is the cheapest copy ctypes offers.
PERF_SAMPLE_FN = CFUNCTYPE(None, _ptr, c_int, POINTER(ctypes.c_char), c_uint32)
PERF_LOST_FN = CFUNCTYPE(None, _ptr, c_int, c_uint64)

# Every libbpf function we call: name -> (restype, argtypes). Opaque structs are void pointers.
_LIBBPF_PROTOS: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_major_version": (c_uint32, []),
    "libbpf_minor_version": (c_uint32, []),
    "libbpf_set_print": (_ptr, [_PRINT_FN]),
    "libbpf_num_possible_cpus": (c_int, []),
    "libbpf_probe_bpf_prog_type": (c_int, [c_int, _ptr]),
    "libbpf_probe_bpf_map_type": (c_int, [c_int, _ptr]),
    "libbpf_probe_bpf_helper": (c_int, [c_int, c_int, _ptr]),
    "bpf_object__open_file": (_ptr, [c_char_p, POINTER(BpfObjectOpenOpts)]),
    "bpf_object__load": (c_int, [_ptr]),
    "bpf_object__close": (None, [_ptr]),
    "bpf_object__btf": (_ptr, [_ptr]),
    "bpf_object__find_map_by_name": (_ptr, [_ptr, c_char_p]),
    "bpf_object__find_program_by_name": (_ptr, [_ptr, c_char_p]),
    "bpf_object__next_program": (_ptr, [_ptr, _ptr]),
    "bpf_object__next_map": (_ptr, [_ptr, _ptr]),
    "bpf_program__name": (c_char_p, [_ptr]),
    "bpf_program__section_name": (c_char_p, [_ptr]),
    "bpf_program__set_autoload": (c_int, [_ptr, c_bool]),
    "bpf_program__autoload": (c_bool, [_ptr]),
    "bpf_program__attach": (_ptr, [_ptr]),
    # prog, pid (-1: every process), binary path, offset in the file, opts
    "bpf_program__attach_uprobe_opts": (_ptr, [_ptr, c_int, c_char_p, c_size_t,
                                                POINTER(BpfUprobeOpts)]),
    "bpf_link__destroy": (c_int, [_ptr]),
    "bpf_link__fd": (c_int, [_ptr]),
    "bpf_program__fd": (c_int, [_ptr]),
    # fd, info (struct bpf_prog_info / bpf_map_info / bpf_link_info), its length in and out
    "bpf_obj_get_info_by_fd": (c_int, [c_int, _ptr, POINTER(c_uint32)]),
    "bpf_map__name": (c_char_p, [_ptr]),
    "bpf_map__fd": (c_int, [_ptr]),
    "bpf_map__set_max_entries": (c_int, [_ptr, c_uint32]),
    "bpf_map__set_autocreate": (c_int, [_ptr, c_bool]),
    "bpf_map__max_entries": (c_uint32, [_ptr]),
    "bpf_map__key_size": (c_uint32, [_ptr]),
    "bpf_map__value_size": (c_uint32, [_ptr]),
    "bpf_map__initial_value": (_ptr, [_ptr, POINTER(c_size_t)]),
    "bpf_map_lookup_elem": (c_int, [c_int, _ptr, _ptr]),
    "bpf_map_update_elem": (c_int, [c_int, _ptr, _ptr, c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, _ptr]),
    "bpf_map_get_next_key": (c_int, [c_int, _ptr, _ptr]),
    # opts (struct bpf_map_batch_opts: elem_flags, flags) passed as NULL: both 0
    "bpf_map_lookup_batch": (c_int, [c_int, _ptr, _ptr, _ptr, _ptr, POINTER(c_uint32), _ptr]),
    "btf__parse": (_ptr, [c_char_p, _ptr]),
    "btf__free": (None, [_ptr]),
    "btf__type_cnt": (c_uint32, [_ptr]),
    "btf__type_by_id": (_ptr, [_ptr, c_uint32]),
    "btf__name_by_offset": (c_char_p, [_ptr, c_uint32]),
    "btf__find_by_name_kind": (c_int, [_ptr, c_char_p, c_uint32]),
    "btf__pointer_size": (c_size_t, [_ptr]),
    # opts (struct perf_buffer_opts) is passed as NULL: in 1.1 it holds nothing but its size
    "perf_buffer__new": (_ptr, [c_int, c_size_t, PERF_SAMPLE_FN, PERF_LOST_FN, _ptr, _ptr]),
    "perf_buffer__free": (None, [_ptr]),
    "perf_buffer__epoll_fd": (c_int, [_ptr]),
    "perf_buffer__consume_buffer": (c_int, [_ptr, c_size_t]),
    "perf_buffer__buffer_cnt": (c_size_t, [_ptr]),
    "perf_buffer__buffer": (c_int, [_ptr, c_int, POINTER(_ptr), POINTER(c_size_t)]),
}

_LIBC_PROTOS: dict[str, tuple[Any, list[Any]]] = {
    # va_list is passed as an opaque pointer: on x86_64/aarch64 it is an array/struct that the
    # ABI passes by reference, elsewhere it is itself a pointer.
    "vsnprintf": (c_int, [_ptr, c_size_t, _ptr, _ptr]),
    "mount": (c_int, [c_char_p, c_char_p, c_char_p, ctypes.c_ulong, _ptr]),
}

_lock = threading.Lock()
_libbpf: ctypes.CDLL | None = None
_libc: ctypes.CDLL | None = None
_print_cb: Any = None  # the ctypes callback must outlive every libbpf call


def _declare(lib: ctypes.CDLL, protos: dict[str, tuple[Any, list[Any]]]) -> None:
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _declare(lib, _LIBC_PROTOS)
        _libc = lib
    return _libc


def lib() -> ctypes.CDLL:
    """The loaded, version-checked libbpf; raises LibbpfMissingError on the first use if absent."""
    global _libbpf, _print_cb
    if _libbpf is not None:
        return _libbpf
    with _lock:
        if _libbpf is not None:
            return _libbpf
        handle = _open_libbpf()
        try:
            _declare(handle, _LIBBPF_PROTOS)
        except AttributeError as e:
            raise LibbpfMissingError(
                f"the system libbpf lacks {e.name or 'a needed function'}; Vigil needs libbpf"
                f" >= {MIN_VERSION[0]}.{MIN_VERSION[1]} (Debian/Ubuntu package libbpf1)"
            ) from e
        have = (handle.libbpf_major_version(), handle.libbpf_minor_version())
        if have < MIN_VERSION:
            raise LibbpfMissingError(
                f"libbpf {have[0]}.{have[1]} is too old; Vigil needs >= "
                f"{MIN_VERSION[0]}.{MIN_VERSION[1]} (Debian/Ubuntu package libbpf1)"
            )
        _print_cb = _PRINT_FN(_on_print)
        handle.libbpf_set_print(_print_cb)
        _libbpf = handle
        return handle


def _open_libbpf() -> ctypes.CDLL:
    names = ["libbpf.so.1"]
    found = ctypes.util.find_library("bpf")
    if found and found not in names:
        names.append(found)
    for name in names:
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    raise LibbpfMissingError(
        "libbpf (libbpf.so.1) was not found; install it (Debian/Ubuntu package libbpf1)"
    )


def version() -> tuple[int, int]:
    handle = lib()
    return (int(handle.libbpf_major_version()), int(handle.libbpf_minor_version()))


# --- errno -> typed errors ------------------------------------------------------------------


def error_from_errno(err: int, operation: str, *, detail: str | None = None) -> KernelError:
    """The most specific Vigil error for `err` (a positive errno) raised by `operation`."""
    if err in (_errno.EPERM, _errno.EACCES):
        return BpfPermissionError(operation, err)
    if err in (_errno.EOPNOTSUPP, ENOTSUPP, _errno.ENOSYS):
        return NotSupportedError(operation, "kernel support for it", errno_text(err), err)
    return LibbpfError(operation, err, detail)


def check_int(ret: int, operation: str) -> int:
    """int-returning libbpf calls: a negative value is -errno."""
    if ret < 0:
        raise error_from_errno(-ret, operation)
    return ret


def check_ptr(ptr: int | None, operation: str) -> int:
    """Pointer-returning libbpf calls: NULL means failure, the reason is in errno."""
    if not ptr:
        raise error_from_errno(ctypes.get_errno() or _errno.EINVAL, operation)
    return ptr


# --- libbpf's log ---------------------------------------------------------------------------

# Bytes of the va_list object that va_copy duplicates, where va_list is passed by reference.
_VA_COPY = {"x86_64": 24, "AMD64": 24, "aarch64": 32, "arm64": 32, "s390x": 32}
# Architectures where va_list is a plain pointer passed by value: reuse is a valid copy.
_VA_BY_VALUE = {"i386", "i686", "armv7l", "ppc64le", "ppc64", "riscv64"}
_MAX_MESSAGE = 16 << 20  # libbpf's own verifier log buffer never exceeds 16 MiB
_recent: collections.deque[str] = collections.deque(maxlen=512)
_tls = threading.local()
_PROG_LOG = re.compile(r"prog '([^']+)': -- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --",
                       re.S)


def _vformat(fmt: int, va: int) -> str:
    c = libc()
    buf = ctypes.create_string_buffer(1024)
    arch = platform.machine()
    copy = None
    if arch in _VA_COPY:  # vsnprintf consumes va_list; keep a va_copy for a second pass
        copy = ctypes.create_string_buffer(_VA_COPY[arch])
        ctypes.memmove(copy, va, _VA_COPY[arch])
    n = c.vsnprintf(buf, len(buf), fmt, va)
    if n >= len(buf) and (copy is not None or arch in _VA_BY_VALUE):
        buf = ctypes.create_string_buffer(min(n + 1, _MAX_MESSAGE))
        again = ctypes.addressof(copy) if copy is not None else va
        n = c.vsnprintf(buf, len(buf), fmt, again)
    return buf.value.decode("utf-8", "replace") if n >= 0 else ""


def _on_print(level: int, fmt: int | None, va: int | None) -> int:
    # An exception escaping a ctypes callback is only printed to stderr; never let one out.
    try:
        captures: list[list[str]] = getattr(_tls, "captures", [])
        wanted = level <= LIBBPF_INFO or logger.isEnabledFor(logging.DEBUG)
        if not fmt or not va or not wanted:
            return 0
        text = _vformat(fmt, va)
        if level <= LIBBPF_INFO:
            for sink in captures:
                sink.append(text)
        _recent.append(text)
        logger.debug("%s", text.rstrip("\n"))
    except Exception:
        pass
    return 0


class LogCapture:
    """The libbpf messages (warn/info) printed by this thread while the capture is active."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.messages)

    def prog_load_logs(self) -> dict[str, str]:
        """Verifier logs libbpf printed between BEGIN/END PROG LOAD LOG, by program name."""
        return {m.group(1): m.group(2) for m in _PROG_LOG.finditer(self.text)}

    def cause(self, max_lines: int = 3) -> str | None:
        """libbpf's own explanation, most specific first lines, without the generic epilogue."""
        lines = [ln.strip().removeprefix("libbpf: ") for ln in self.text.splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("failed to load object")]
        return "; ".join(lines[:max_lines]) or None


@contextmanager
def capture_log() -> Iterator[LogCapture]:
    lib()  # the print callback is installed with the library
    cap = LogCapture()
    stack: list[list[str]] = getattr(_tls, "captures", None) or []
    _tls.captures = [*stack, cap.messages]
    try:
        yield cap
    finally:
        _tls.captures = stack


def recent_log() -> list[str]:
    """The last few hundred libbpf messages of the process (for bug reports)."""
    return list(_recent)


# --- thin wrappers --------------------------------------------------------------------------


def _s(value: bytes | None) -> str:
    return value.decode() if value else ""


def bpf_object__open_file(path: str, opts: BpfObjectOpenOpts | None = None) -> int:
    ptr = lib().bpf_object__open_file(path.encode(), ctypes.byref(opts) if opts else None)
    return check_ptr(ptr, f"opening BPF object {path}")


def bpf_object__load(obj: int) -> None:
    check_int(lib().bpf_object__load(obj), "bpf_object__load")


def bpf_object__close(obj: int) -> None:
    lib().bpf_object__close(obj)


def bpf_object__btf(obj: int) -> int | None:
    return lib().bpf_object__btf(obj) or None


def bpf_object__find_map_by_name(obj: int, name: str) -> int | None:
    return lib().bpf_object__find_map_by_name(obj, name.encode()) or None


def bpf_object__find_program_by_name(obj: int, name: str) -> int | None:
    return lib().bpf_object__find_program_by_name(obj, name.encode()) or None


def bpf_object__next_program(obj: int, prev: int | None) -> int | None:
    return lib().bpf_object__next_program(obj, prev) or None


def bpf_object__next_map(obj: int, prev: int | None) -> int | None:
    return lib().bpf_object__next_map(obj, prev) or None


def bpf_program__name(prog: int) -> str:
    return _s(lib().bpf_program__name(prog))


def bpf_program__section_name(prog: int) -> str:
    return _s(lib().bpf_program__section_name(prog))


def bpf_program__set_autoload(prog: int, enabled: bool) -> None:
    check_int(lib().bpf_program__set_autoload(prog, enabled), "bpf_program__set_autoload")


def bpf_program__autoload(prog: int) -> bool:
    return bool(lib().bpf_program__autoload(prog))


def bpf_program__attach(prog: int) -> int:
    return check_ptr(lib().bpf_program__attach(prog), f"attaching {bpf_program__name(prog)}")


def bpf_program__attach_uprobe_opts(prog: int, binary: str, offset: int, *, retprobe: bool,
                                    func_name: str | None = None, pid: int = -1) -> int:
    """A uprobe on ``binary`` at ``offset`` (a file offset), or at ``func_name`` (+ offset)
    found by libbpf in the binary's symbol tables; every process when ``pid`` is -1."""
    opts = BpfUprobeOpts(retprobe=retprobe,
                         func_name=func_name.encode() if func_name else None)
    return check_ptr(
        lib().bpf_program__attach_uprobe_opts(prog, pid, binary.encode(), offset,
                                              ctypes.byref(opts)),
        f"attaching {bpf_program__name(prog)} to {binary}:{func_name or hex(offset)}")


def bpf_link__destroy(link: int) -> None:
    check_int(lib().bpf_link__destroy(link), "bpf_link__destroy")


def object_id(fd: int) -> int:
    """The kernel's id of the program, map or link behind ``fd``: each info struct starts with
    its type and its id (two u32), and the kernel fills no more than the length asked for."""
    info = (c_uint32 * 2)()
    size = c_uint32(ctypes.sizeof(info))
    check_int(lib().bpf_obj_get_info_by_fd(fd, ctypes.addressof(info), ctypes.byref(size)),
              "bpf_obj_get_info_by_fd")
    return int(info[1])


def bpf_program__fd(prog: int) -> int:
    return check_int(lib().bpf_program__fd(prog), "bpf_program__fd")


def bpf_link__fd(link: int) -> int:
    return check_int(lib().bpf_link__fd(link), "bpf_link__fd")


def bpf_map__name(m: int) -> str:
    return _s(lib().bpf_map__name(m))


def bpf_map__fd(m: int) -> int:
    return check_int(lib().bpf_map__fd(m), f"bpf_map__fd({bpf_map__name(m)})")


def bpf_map__set_max_entries(m: int, n: int) -> None:
    check_int(lib().bpf_map__set_max_entries(m, n), "bpf_map__set_max_entries")


def bpf_map__set_autocreate(m: int, enabled: bool) -> None:
    check_int(lib().bpf_map__set_autocreate(m, enabled), "bpf_map__set_autocreate")


def bpf_map__max_entries(m: int) -> int:
    return int(lib().bpf_map__max_entries(m))


def bpf_map__key_size(m: int) -> int:
    return int(lib().bpf_map__key_size(m))


def bpf_map__value_size(m: int) -> int:
    return int(lib().bpf_map__value_size(m))


def bpf_map__initial_value(m: int) -> tuple[int, int]:
    """(address, size) of the map's initial data image, writable until the object is loaded."""
    size = c_size_t(0)
    ptr = lib().bpf_map__initial_value(m, ctypes.byref(size))
    return check_ptr(ptr, f"bpf_map__initial_value({bpf_map__name(m)})"), size.value


def bpf_map_lookup_elem(fd: int, key: bytes, value_size: int) -> bytes | None:
    value = ctypes.create_string_buffer(value_size)
    ret = lib().bpf_map_lookup_elem(fd, key, value)
    if ret == -_errno.ENOENT:
        return None
    check_int(ret, "bpf_map_lookup_elem")
    return value.raw


def bpf_map_update_elem(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    check_int(lib().bpf_map_update_elem(fd, key, value, flags), "bpf_map_update_elem")


def bpf_map_delete_elem(fd: int, key: bytes) -> bool:
    ret = lib().bpf_map_delete_elem(fd, key)
    if ret == -_errno.ENOENT:
        return False
    check_int(ret, "bpf_map_delete_elem")
    return True


def bpf_map_get_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """The key after `key` (the first key when None), or None at the end."""
    nxt = ctypes.create_string_buffer(key_size)
    ret = lib().bpf_map_get_next_key(fd, key, nxt)
    if ret == -_errno.ENOENT:
        return None
    check_int(ret, "bpf_map_get_next_key")
    return nxt.raw


_NO_BATCH = frozenset({-_errno.EINVAL, -_errno.EOPNOTSUPP, -ENOTSUPP})


def bpf_map_count_entries(fd: int, key_size: int, value_size: int,
                          max_entries: int) -> int | None:
    """How many entries a hash map holds, read with BPF_MAP_LOOKUP_BATCH (Linux 5.6+): the
    kernel copies each bucket under its lock, so an entry present throughout is counted exactly
    once. None when this kernel has no batch lookup for the map."""
    n = max(1, max_entries)
    keys = ctypes.create_string_buffer(key_size * n)
    values = ctypes.create_string_buffer(value_size * n)
    token = [ctypes.create_string_buffer(max(8, key_size)) for _ in range(2)]
    total, first = 0, True
    while True:
        count = c_uint32(n)
        ret = lib().bpf_map_lookup_batch(fd, None if first else token[0], token[1], keys,
                                         values, ctypes.byref(count), None)
        if ret == -_errno.ENOENT:  # the last batch (count says how many it still returned)
            return total + count.value
        if first and ret in _NO_BATCH:
            return None
        check_int(ret, "bpf_map_lookup_batch")
        total += count.value
        ctypes.memmove(token[0], token[1], len(token[1]))
        first = False


def libbpf_num_possible_cpus() -> int:
    return check_int(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def libbpf_probe_bpf_prog_type(prog_type: int) -> bool:
    return bool(check_int(lib().libbpf_probe_bpf_prog_type(prog_type, None), "probe prog type"))


def libbpf_probe_bpf_map_type(map_type: int) -> bool:
    return bool(check_int(lib().libbpf_probe_bpf_map_type(map_type, None), "probe map type"))


def libbpf_probe_bpf_helper(prog_type: int, helper_id: int) -> bool:
    ret = lib().libbpf_probe_bpf_helper(prog_type, helper_id, None)
    return bool(check_int(ret, "probe helper"))


def btf__parse(path: str) -> int:
    return check_ptr(lib().btf__parse(path.encode(), None), f"parsing BTF from {path}")


def btf__free(btf: int) -> None:
    lib().btf__free(btf)


def btf__type_cnt(btf: int) -> int:
    return int(lib().btf__type_cnt(btf))


def btf__type_by_id(btf: int, type_id: int) -> int:
    return check_ptr(lib().btf__type_by_id(btf, type_id), f"btf__type_by_id({type_id})")


def btf__name_by_offset(btf: int, offset: int) -> str:
    return _s(lib().btf__name_by_offset(btf, offset))


def btf__find_by_name_kind(btf: int, name: str, kind: int) -> int | None:
    ret = int(lib().btf__find_by_name_kind(btf, name.encode(), kind))
    if ret == -_errno.ENOENT:
        return None
    return check_int(ret, f"btf__find_by_name_kind({name})")


def btf__pointer_size(btf: int) -> int:
    return int(lib().btf__pointer_size(btf))


def perf_buffer__new(map_fd: int, page_cnt: int, sample_cb: Any, lost_cb: Any) -> int:
    """A perf buffer of ``page_cnt`` pages (a power of two) per CPU on a PERF_EVENT_ARRAY map.

    ``sample_cb``/``lost_cb`` are PERF_SAMPLE_FN/PERF_LOST_FN objects: the caller keeps them
    alive until perf_buffer__free."""
    ptr = lib().perf_buffer__new(map_fd, page_cnt, sample_cb, lost_cb, None, None)
    return check_ptr(ptr, "perf_buffer__new")


def perf_buffer__free(pb: int) -> None:
    lib().perf_buffer__free(pb)


def perf_buffer__epoll_fd(pb: int) -> int:
    return check_int(lib().perf_buffer__epoll_fd(pb), "perf_buffer__epoll_fd")


def perf_buffer__buffer_cnt(pb: int) -> int:
    return int(lib().perf_buffer__buffer_cnt(pb))


def perf_buffer__header(pb: int, idx: int) -> tuple[memoryview, int] | None:
    """The control page (struct perf_event_mmap_page) of buffer ``idx``, read-only, and the
    size of its data area, through libbpf's perf_buffer__buffer: data_head and data_tail say
    how full that CPU's buffer is. None when that CPU has no buffer. The page is valid until
    perf_buffer__free."""
    base, size = _ptr(), c_size_t()
    ret = lib().perf_buffer__buffer(pb, idx, ctypes.byref(base), ctypes.byref(size))
    if ret == -_errno.ENOENT:
        return None
    check_int(ret, f"perf_buffer__buffer({idx})")
    if not base.value:
        return None
    page = (ctypes.c_char * PERF_HEADER_BYTES).from_address(base.value)
    return memoryview(page).cast("B").toreadonly(), int(size.value)


# struct perf_event_mmap_page's fields this module reads (uapi/linux/perf_event.h; fixed)
PERF_HEADER_BYTES = 1040
PERF_DATA_HEAD = 1024
PERF_DATA_TAIL = 1032


def perf_buffer__consume_buffer(pb: int, idx: int) -> bool:
    """Reads every record of buffer ``idx`` through the callbacks. False when that CPU has no
    buffer (offline when the perf buffer was made)."""
    ret = lib().perf_buffer__consume_buffer(pb, idx)
    if ret == -_errno.ENOENT:
        return False
    check_int(ret, "perf_buffer__consume_buffer")
    return True


# --- libc -----------------------------------------------------------------------------------


def libc_mount(source: str, target: str, fstype: str, flags: int = 0) -> None:
    """mount(2); raises OSError with the errno (vigil.kernel.mounts gives it a meaning)."""
    if libc().mount(source.encode(), target.encode(), fstype.encode(), flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} {source} {target}: {errno_text(err)}")
