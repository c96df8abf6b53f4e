"""User-space hooks: uprobes on functions of programs and libraries, described as data.

Owns the table of user-space hooks (``HOOKS``: which function of which binaries, which BPF
program), finding those binaries (the host's, realpath'ed, and the same paths in the container
root filesystems found in the usual places, bounded), finding the function in each (its own
symbol tables, ``.gnu_debugdata``'s MiniDebugInfo, or the library it imports it from), and
attaching the program per binary, with one result per binary for ``vigil doctor`` and the
agent's start-up lines. Does not own the BPF side (bpf/shell.bpf.h) nor decoding.

A symbol found in ``.dynsym`` or ``.symtab`` is handed to libbpf by name (libbpf's own lookup);
one only ``.gnu_debugdata`` names (Fedora's MiniDebugInfo) is attached at the file offset found
here. A binary that imports the function (bash built against libreadline) gets the hook on the
library it needs, found in the same root filesystem: then every program using that library
reports its lines.
"""

from __future__ import annotations

import glob
import logging
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vigil.btfhub.elf import SHT_DYNAMIC, SHT_DYNSYM, SHT_SYMTAB, STT_FUNC, Elf, ElfError, Symbol
from vigil.btfhub.limits import DecompressError, TooBigError, decompress
from vigil.kernel.errors import KernelError
from vigil.kernel.loader import LoadedObject

log = logging.getLogger(__name__)

STT_GNU_IFUNC = 10
PT_LOAD = 1
DT_NEEDED = 1
MAX_BINARY = 256 << 20      # a binary larger than this is not read
MAX_DEBUGDATA = 64 << 20    # .gnu_debugdata decompresses to at most this
MAX_ROOTS = 512             # container root filesystems looked at
MAX_TARGETS = 256           # binaries hooked per hook

# Where container engines keep root filesystems (image layers: the files processes in the
# containers map, so a uprobe on them fires there; a merged overlay mount's inode would not).
ROOTFS_GLOBS: tuple[str, ...] = (
    "/var/lib/docker/overlay2/*/diff",
    "/var/lib/containers/storage/overlay/*/diff",
    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/*/fs",
    "/var/lib/machines/*",
    "/var/lib/lxc/*/rootfs",
)
# Where a root filesystem keeps shared libraries.
LIB_DIRS: tuple[str, ...] = ("lib/*-linux-gnu*", "usr/lib/*-linux-gnu*", "lib64", "usr/lib64",
                             "lib", "usr/lib")


@dataclass(frozen=True)
class UserHook:
    """One function hooked in every binary that has it.

    ``paths``: the binaries on the host (symlinks resolved); ``rootfs_paths``: the same, relative
    to a container root filesystem; ``libraries``: sonames (prefixes) a binary may import the
    function from, which then get the hook instead.
    """

    name: str
    program: str
    symbol: str
    paths: tuple[str, ...]
    rootfs_paths: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    retprobe: bool = False


HOOKS: tuple[UserHook, ...] = (
    # Each line an interactive bash reads: readline's return value (bash's own readline, or
    # libreadline's).
    UserHook("shell", "shell_readline", "readline", ("/usr/bin/bash", "/bin/bash"),
             ("usr/bin/bash", "bin/bash"), ("libreadline.so",), retprobe=True),
)


@dataclass
class Target:
    """One binary of a hook, and what became of it.

    ``status``: "ready" (symbol found, not attached yet), "attached", "symbol-not-found",
    "not-elf", "unreadable", "failed" (the kernel or libbpf refused the attach).
    """

    hook: UserHook
    binary: str
    status: str
    attach_path: str | None = None   # the file the probe goes on: the binary or its library
    offset: int | None = None        # file offset of the symbol, when found here
    by_name: bool = False            # libbpf can find the symbol by name itself
    found_in: str = ""               # ".dynsym", ".symtab", ".gnu_debugdata", "LIB (.dynsym)"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ready", "attached")

    def line(self) -> str:
        where = self.binary if self.attach_path in (None, self.binary) \
            else f"{self.binary} -> {self.attach_path}"
        if self.ok:
            return f"{self.hook.name}: {where}: {self.hook.symbol} in {self.found_in}: " \
                   f"{self.status}"
        return f"{self.hook.name}: {where}: {self.status}" + \
            (f" ({self.detail})" if self.detail else "")


# ---- binaries ----------------------------------------------------------------------------


def container_roots(globs: Iterable[str] = ROOTFS_GLOBS, limit: int = MAX_ROOTS) -> list[str]:
    """Container root filesystems (image layers) found on this host, at most ``limit``."""
    out: list[str] = []
    for pattern in globs:
        for d in sorted(glob.iglob(pattern)):
            if os.path.isdir(d) and not os.path.islink(d):
                out.append(d)
                if len(out) >= limit:
                    log.info("more than %d container root filesystems: the rest are not "
                             "looked at for user-space hooks", limit)
                    return out
    return out


def find_binaries(hook: UserHook, roots: Iterable[str] | None = None,
                  limit: int = MAX_TARGETS) -> list[tuple[str, str]]:
    """(binary, its root filesystem) of ``hook``, one per file (device and inode): the host's
    paths resolved, then each container root's regular files (a symlink there would resolve
    against the host's root)."""
    seen: set[tuple[int, int]] = set()
    out: list[tuple[str, str]] = []

    def add(path: str, root: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in seen or len(out) >= limit:
            return
        seen.add((st.st_dev, st.st_ino))
        out.append((path, root))

    for p in hook.paths:
        if os.path.exists(p):
            add(os.path.realpath(p), "/")
    for root in container_roots() if roots is None else roots:
        for rel in hook.rootfs_paths:
            p = os.path.join(root, rel)
            if os.path.isfile(p) and not os.path.islink(p):
                add(p, root)
    return out


# ---- symbols -----------------------------------------------------------------------------


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_BINARY + 1)
    if len(data) > MAX_BINARY:
        raise ValueError(f"larger than {MAX_BINARY >> 20} MiB")
    return data


def _defined(syms: list[Symbol], name: str) -> Symbol | None:
    for s in syms:
        if s.name == name and s.shndx != 0 and s.type in (STT_FUNC, STT_GNU_IFUNC) and s.value:
            return s
    return None


def _imports(elf: Elf, name: str) -> bool:
    return any(s.name == name and s.shndx == 0 for s in elf.symbols(SHT_DYNSYM))


def file_offset(elf: Elf, vaddr: int) -> int | None:
    """The file offset of virtual address ``vaddr``, from the loadable segments (what the
    kernel maps, and what a uprobe is placed by)."""
    data, o = elf.data, elf.order
    if elf.bits == 64:
        phoff, = struct.unpack_from(o + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(o + "HH", data, 0x36)
        fmt = o + "IIQQQQQQ"    # type flags offset vaddr paddr filesz memsz align
    else:
        phoff, = struct.unpack_from(o + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(o + "HH", data, 0x2A)
        fmt = o + "IIIIIIII"    # type offset vaddr paddr filesz memsz flags align
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + struct.calcsize(fmt) > len(data):
            return None
        f = struct.unpack_from(fmt, data, at)
        if elf.bits == 64:
            ptype, offset, va, filesz = f[0], f[2], f[3], f[5]
        else:
            ptype, offset, va, filesz = f[0], f[1], f[2], f[4]
        if ptype == PT_LOAD and va <= vaddr < va + filesz:
            return vaddr - va + offset
    return None


def _needed(elf: Elf) -> list[str]:
    dyn = next((s for s in elf.sections if s.type == SHT_DYNAMIC), None)
    if dyn is None or dyn.link >= len(elf.sections):
        return []
    strtab = elf.sections[dyn.link]
    data = elf.section_data(dyn)
    fmt, size = (elf.order + "qQ", 16) if elf.bits == 64 else (elf.order + "iI", 8)
    out = []
    for off in range(0, len(data) - size + 1, size):
        tag, val = struct.unpack_from(fmt, data, off)
        if tag == 0:
            break
        if tag == DT_NEEDED:
            end = elf.data.find(b"\0", strtab.offset + val, strtab.offset + val + 256)
            if end > 0:
                out.append(elf.data[strtab.offset + val:end].decode("utf-8", "replace"))
    return out


def _library(root: str, soname: str) -> str | None:
    for d in LIB_DIRS:
        for cand in sorted(glob.glob(os.path.join(root, d, soname))):
            if os.path.isfile(cand):
                return cand
    return None


def find_symbol(elf: Elf, name: str, source: str) -> tuple[str, int, bool] | None:
    """(where, file offset, whether libbpf finds it by name) of function ``name``: its
    ``.dynsym``, its ``.symtab``, or the symbol table of the xz-compressed ELF in its
    ``.gnu_debugdata`` (MiniDebugInfo: the symbols a stripped binary no longer has)."""
    for table, where in ((SHT_DYNSYM, ".dynsym"), (SHT_SYMTAB, ".symtab")):
        sym = _defined(elf.symbols(table), name)
        if sym is not None:
            off = file_offset(elf, sym.value)
            if off is not None:
                return where, off, True
    sec = elf.section(".gnu_debugdata")
    if sec is not None:
        try:
            mini, _complete = decompress("xz", elf.section_data(sec), MAX_DEBUGDATA,
                                         source=f"{source} (.gnu_debugdata)", offset=sec.offset)
            sym = _defined(Elf(mini, f"{source} (.gnu_debugdata)").symbols(SHT_SYMTAB), name)
        except (ElfError, DecompressError, TooBigError):
            sym = None
        if sym is not None:
            off = file_offset(elf, sym.value)
            if off is not None:
                return ".gnu_debugdata", off, False
    return None


def resolve(hook: UserHook, binary: str, root: str = "/") -> Target:
    """Where ``hook``'s function is for ``binary``: in it, or in the library it imports it
    from (looked for in ``root``). Reads files, attaches nothing."""
    try:
        elf = Elf(_read(binary), binary)
    except ElfError as e:
        return Target(hook, binary, "not-elf", detail=str(e))
    except (OSError, ValueError) as e:
        return Target(hook, binary, "unreadable", detail=str(e))
    try:
        hit = find_symbol(elf, hook.symbol, binary)
        if hit is not None:
            where, off, by_name = hit
            return Target(hook, binary, "ready", binary, off, by_name, where)
        imported = _imports(elf, hook.symbol)
        needed = _needed(elf) if imported else []
    except (ElfError, struct.error) as e:
        return Target(hook, binary, "not-elf", detail=f"damaged: {e}")
    for soname in needed:
        if not soname.startswith(hook.libraries):
            continue
        lib = _library(root, soname)
        if lib is None:
            return Target(hook, binary, "symbol-not-found",
                          detail=f"imports {hook.symbol} from {soname}, not found in {root}")
        t = resolve(UserHook(hook.name, hook.program, hook.symbol, ()), lib, root)
        t.hook, t.binary = hook, binary
        if t.ok:
            t.found_in = f"{os.path.basename(lib)} ({t.found_in})"
        return t
    what = ("imported, from none of " + ", ".join(hook.libraries)) if imported \
        else "in none of .dynsym, .symtab, .gnu_debugdata"
    return Target(hook, binary, "symbol-not-found", detail=f"{hook.symbol}: {what}")


def plan(hooks: Iterable[UserHook] = HOOKS, roots: Iterable[str] | None = None) -> list[Target]:
    """Every binary of every hook, resolved; a library shared by several binaries is hooked
    once (the later ones say "ready" with the same attach path and are skipped at attach)."""
    roots = list(container_roots() if roots is None else roots)
    return [resolve(h, path, root) for h in hooks for path, root in find_binaries(h, roots)]


# ---- attaching ---------------------------------------------------------------------------


class UprobeAttacher:
    """Attaches resolved targets to a loaded object (vigil.kernel.loader.LoadedObject); the
    links go with the object."""

    def __init__(self, obj: LoadedObject) -> None:
        self._obj = obj
        self.targets: list[Target] = []
        self._done: set[tuple[str, str, int]] = set()

    def attach(self, targets: Iterable[Target]) -> list[Target]:
        for t in targets:
            self.targets.append(t)
            if t.status != "ready" or t.attach_path is None:
                continue
            key = (t.hook.program, t.attach_path, t.offset or 0)
            if key in self._done:
                t.status, t.detail = "attached", "shares the probe of the same file"
                continue
            self._one(t)
            if t.status == "attached":
                self._done.add(key)
        return self.targets

    def _one(self, t: Target) -> None:
        attach = self._obj.attach_uprobe
        assert t.attach_path is not None
        try:
            if t.by_name:   # libbpf's own lookup; its offset if that fails
                try:
                    attach(t.hook.program, t.attach_path, func_name=t.hook.symbol,
                           retprobe=t.hook.retprobe)
                    t.status = "attached"
                    return
                except KernelError as e:
                    log.debug("libbpf did not attach %s by name: %s", t.attach_path, e)
            attach(t.hook.program, t.attach_path, offset=t.offset or 0,
                   retprobe=t.hook.retprobe)
            t.status = "attached"
        except (KernelError, OSError) as e:
            t.status, t.detail = "failed", str(e)


def attach_hooks(obj: LoadedObject, hooks: Iterable[UserHook] = HOOKS,
                 roots: Iterable[str] | None = None) -> list[Target]:
    """Every hook's binaries found, resolved and attached; one Target per binary."""
    return UprobeAttacher(obj).attach(plan(hooks, roots))


def unavailable() -> str:
    """Why this kernel cannot take uprobes, or "" (the uprobe PMU, or tracefs's legacy
    uprobe_events, which libbpf falls back to)."""
    if os.path.exists("/sys/bus/event_source/devices/uprobe") or any(
            os.path.exists(f"{t}/uprobe_events")
            for t in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")):
        return ""
    return "this kernel has no uprobes (CONFIG_UPROBES, CONFIG_UPROBE_EVENTS)"


def programs(hooks: Iterable[UserHook] = HOOKS) -> frozenset[str]:
    """The BPF programs the hooks use: loaded when the hooks are on, never attached by
    section."""
    return frozenset(h.program for h in hooks)


def summary(targets: Iterable[Target]) -> Iterator[str]:
    for t in targets:
        yield t.line()
