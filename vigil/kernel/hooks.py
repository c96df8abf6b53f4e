"""Which BPF programs each backend loads, and the argument positions they need, from BTF.

Owns the backend catalogue (best first: lsm, fentry, kprobe, tracepoint), the rule that picks a
backend's programs out of the one BPF object by section, and the reading of the hooked kernel
functions' prototypes from the BTF in use. A prototype this module does not recognise makes the
backend unsupported (HookUnsupported, with the function and the prototype found), so Vigil falls
back to another backend instead of reading the wrong argument. No kernel version is compared
anywhere: vendor kernels backport signature changes.

Does not load anything (vigil.kernel.backend) and does not probe the kernel (vigil.kernel.probes).
"""

from __future__ import annotations

import functools
import platform
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vigil.kernel import net_hooks, sec_hooks
from vigil.kernel.arch import canonical
from vigil.kernel.blind_spots import (
    BLIND_SPOTS,
    NET_BLIND_SPOTS_FUNCS,
    NET_BLIND_SPOTS_SYSCALLS,
    SEC_BLIND_SPOTS,
)
from vigil.kernel.btf import Btf

# Best first. `probes` are the feature probes (vigil.kernel.probes) a backend needs.
BACKENDS: tuple[str, ...] = ("lsm", "fentry", "kprobe", "tracepoint")
NEEDED_PROBES: dict[str, tuple[str, ...]] = {
    "lsm": ("lsm", "fentry"),  # LSM hooks capture; fexit gives the result
    "fentry": ("fentry",),
    "kprobe": ("kprobe",),
    "tracepoint": ("tracepoint",),
}
VFS_BACKENDS = frozenset({"lsm", "fentry", "kprobe"})

# xattr changes have no path-level hook; the VFS backends keep these syscall tracepoints.
XATTR_SYSCALLS = frozenset({
    "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
    "removexattr", "lremovexattr", "fremovexattr", "removexattrat",
})

CHOWN_SYSCALLS = frozenset({"chown", "lchown", "fchown", "fchownat"})

KP_MAX_ARGS = 5  # kp_arg() in bpf/vfs.bpf.h reads the first five register arguments
REGPARM3 = frozenset({"i686"})  # kernels with three register arguments: no kprobe backend
FEXIT_MAX_SLOTS = 8  # ctx_arg() reads ctx[0..7]

def _other_part(name: str) -> bool:
    """A program of the network or of the privilege/tampering part: planned by its module."""
    return net_hooks.is_net(name) or sec_hooks.is_sec(name)


class HookUnsupported(Exception):
    """This backend cannot run on this kernel; the message says exactly why."""


@dataclass(frozen=True)
class Plan:
    """What one backend loads: program names, .rodata settings, and notes for the log."""

    backend: str
    programs: frozenset[str]
    rodata: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    # program -> the programs that take over its job when this kernel refuses it
    fallbacks: dict[str, frozenset[str]] = field(default_factory=dict)
    net_via_syscalls: bool = True   # the network from the socket syscalls' tracepoints
    sec_unseen: tuple[str, ...] = ()  # privilege and tampering events not hooked here

    @property
    def blind_spots(self) -> tuple[str, ...]:
        return BLIND_SPOTS[self.backend] + (
            NET_BLIND_SPOTS_SYSCALLS if self.net_via_syscalls else NET_BLIND_SPOTS_FUNCS) + (
            SEC_BLIND_SPOTS[self.backend]) + tuple(
            f"{what}: not hooked on this kernel" for what in self.sec_unseen)

    def without(self, program: str, why: str) -> Plan:
        """This plan with ``program`` replaced by its fallback programs (none: dropped)."""
        instead = self.fallbacks[program]
        return Plan(self.backend, (self.programs - {program}) | instead,
                    self.rodata, (*self.notes, f"{program} refused here ({why}); " + (
                        "its changes are seen through syscall tracepoints instead" if instead
                        else "what it reports is not seen")),
                    {k: v for k, v in self.fallbacks.items() if k != program},
                    self.net_via_syscalls, self.sec_unseen)


@dataclass(frozen=True)
class Program:
    name: str
    section: str


# --- argument positions ------------------------------------------------------------------------

DENTRY = "struct dentry *"


def _index(params: list[tuple[str, str]], names: Iterable[str], ctype: str) -> int | None:
    for i, (pname, ptype) in enumerate(params):
        if pname in names and ptype == ctype:
            return i
    return None


@dataclass(frozen=True)
class _Commit:
    """A VFS function whose exit commits a captured change."""

    func: str
    key: str  # the .rodata names are pos_<key>, ret_<key>
    ident: tuple[str, ...] = ("dentry",)


_COMMITS = (
    _Commit("vfs_unlink", "unlink"),
    _Commit("vfs_rmdir", "rmdir"),
    _Commit("vfs_mkdir", "mkdir"),
    _Commit("vfs_mknod", "mknod"),
    _Commit("vfs_symlink", "symlink"),
    _Commit("vfs_link", "link", ("old_dentry",)),
    _Commit("notify_change", "setattr"),
    _Commit("do_truncate", "truncate"),
)


def _unsupported(func: str, params: list[tuple[str, str]], why: str) -> HookUnsupported:
    proto = ", ".join(f"{t} {n}" for n, t in params) or "void"
    return HookUnsupported(f"{func}({proto}): {why}")


def _proto(btf: Btf, func: str) -> list[tuple[str, str]]:
    """The (name, type) parameters of ``func``, or HookUnsupported when the BTF lacks it."""
    try:
        return btf.func_proto(func)
    except KeyError:
        raise HookUnsupported(f"{func} is not in the BTF in use ({btf.source})") from None


def _require_int_return(btf: Btf, func: str, params: list[tuple[str, str]]) -> None:
    if _return_kind(btf, func) != "int":
        raise _unsupported(func, params, "returns a pointer, expected int")


def _return_kind(btf: Btf, func: str) -> str:
    """'int' or 'ptr' for the return value of ``func``."""
    ret = btf.func_return(func)
    if ret in ("int", "long", "long int"):
        return "int"
    if ret == DENTRY:
        return "ptr"
    raise HookUnsupported(f"{func} returns {ret}, expected int or {DENTRY}")


def argument_positions(btf: Btf, max_index: int, ret_in_ctx: bool) -> dict[str, int]:
    """The pos_*/ret_* settings of bpf/vfs.bpf.h, read from the prototypes in ``btf``.

    ``max_index`` is the highest argument index the hook type can read; with ``ret_in_ctx``
    (fexit) the return value is one more slot after the arguments, which must be readable too
    (a kretprobe reads it from its register).
    """
    out: dict[str, int] = {}
    for c in _COMMITS:
        params = _proto(btf, c.func)
        pos = _index(params, c.ident, DENTRY)
        if pos is None:
            raise _unsupported(c.func, params, f"no {DENTRY} argument named "
                                               f"{' or '.join(c.ident)}")
        out[f"pos_{c.key}"] = pos
        out[f"ret_{c.key}"] = len(params)
        if c.key == "mkdir":
            out["ret_ptr_mkdir"] = int(_return_kind(btf, c.func) == "ptr")
        else:
            _require_int_return(btf, c.func, params)
        if c.key == "truncate":
            attrs = _index(params, ("time_attrs",), "unsigned int")
            if attrs is None:
                raise _unsupported(c.func, params, "no unsigned int time_attrs argument")
            out["pos_truncate_attrs"] = attrs
    params = _proto(btf, "vfs_rename")
    if params and params[0][1] == "struct renamedata *":
        out.update(pos_rename=0, rename_takes_struct=1)
    else:
        pos = _index(params, ("old_dentry",), DENTRY)
        if pos is None:
            raise _unsupported("vfs_rename", params, "neither a struct renamedata * first "
                                                     f"argument nor a {DENTRY} old_dentry")
        out.update(pos_rename=pos, rename_takes_struct=0)
    out["ret_rename"] = len(params)
    _require_int_return(btf, "vfs_rename", params)
    too_far = {k: v for k, v in out.items()
               if (k.startswith("pos_") and v > max_index)
               or (ret_in_ctx and k.startswith("ret_") and not k.startswith("ret_ptr")
                   and v > max_index + 1)}
    if too_far:
        raise HookUnsupported("argument positions beyond what the hook can read: "
                              + ", ".join(f"{k}={v}" for k, v in sorted(too_far.items())))
    return out


def _has_func(btf: Btf, name: str) -> bool:
    try:
        btf.func_proto(name)
    except KeyError:
        return False
    return True


# --- programs per backend ----------------------------------------------------------------------

_SYSCALLS = "tracepoint/syscalls/"
_IO_URING = "tracepoint/io_uring/"


def _syscall_of(section: str) -> str | None:
    """'setxattr' for 'tracepoint/syscalls/sys_enter_setxattr'."""
    if not section.startswith(_SYSCALLS):
        return None
    return section[len(_SYSCALLS):].split("_", 2)[2]


# The tail-call table (bpf/syscalls_file.bpf.h: `handlers`, the same H_* slots): each handler
# with its slot and whether a program (by name) calls it. A handler is loaded only with one of
# its callers; the loader fills its slot (vigil.kernel.backend).
_CLOSING = frozenset({"enter_close", "enter_dup2", "enter_dup3"})
_URING_SUBMIT = frozenset({"uring_submit_req", "uring_submit_sqe"})
_SEC_PATH_EXITS = frozenset({"sec_exit_mount", "sec_exit_umount", "sec_exit_pivot_root"})
# The entries of the calls on path strings, judged at entry (not opens: the file they reach may
# be another, through a symlink; not symlinks: each new one is reported)
PATH_ENTERS = frozenset(f"enter_{sc}" for sc in (
    "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat",
    "mkdir", "mkdirat", "mknod", "mknodat", "chmod", "fchmodat", "fchmodat2", "chown",
    "lchown", "fchownat", "truncate", "setxattr", "lsetxattr", "setxattrat", "removexattr",
    "lremovexattr", "removexattrat"))
TAIL_CALLS: dict[str, tuple[int, Callable[[str], bool]]] = {
    "handle_sys_exit": (0, lambda n: n.startswith("exit_")),
    "handle_close": (1, lambda n: n in _CLOSING or n in _URING_SUBMIT),
    "handle_uring_submit": (2, lambda n: n in _URING_SUBMIT),
    "handle_net_exit": (3, lambda n: n.startswith("net_exit_")),
    "handle_cred_exit": (4, lambda n: n.startswith("cred_exit_")),
    "handle_sec_exit": (5, lambda n: n in _SEC_PATH_EXITS),
    "handle_enter_path": (6, lambda n: n in PATH_ENTERS),
}


def tail_call_targets(loading: Iterable[str]) -> set[str]:
    """The handlers the programs ``loading`` reach by tail call."""
    names = list(loading)
    return {h for h, (_, calls) in TAIL_CALLS.items() if any(calls(n) for n in names)}


def _common(p: Program) -> bool:
    """Programs every backend plans: exec/exit, and the tail-call targets (each loaded only
    with a program that calls it: TAIL_CALLS)."""
    return p.section.startswith("tracepoint/sched/") or p.section == "tracepoint"


def _tracepoint_prog(p: Program) -> bool:
    """The syscall tracepoints, and the io_uring ones for what io_uring does without them."""
    return p.section.startswith((_SYSCALLS, _IO_URING))


def _xattr_prog(p: Program) -> bool:
    return _syscall_of(p.section) in XATTR_SYSCALLS


# Commit functions the compiler may split, and the caller whose exit commits instead: the
# capture (security_path_rmdir) runs in do_rmdir, so its exit ends the same operation. The
# caller takes no dentry; its commit takes whatever rmdir this thread parked (commit_parked).
_CALLER_COMMITS: dict[str, str] = {"vfs_rmdir": "do_rmdir"}


def _caller_commit_settings(btf: Btf, caller: str) -> dict[str, int]:
    """ret_<caller>: where an fexit program finds the caller's return value."""
    params = _proto(btf, caller)
    _require_int_return(btf, caller, params)
    return {f"ret_{caller}": len(params)}


_CLONE = re.compile(r"^(?P<func>[A-Za-z_][A-Za-z0-9_]*)\.(?:part|isra|constprop|cold)\.\d+")


def partial_clones(symbols: Iterable[str], funcs: set[str]) -> dict[str, set[str]]:
    """The hooked functions the compiler split (``vfs_rmdir.part.0``): callers may run the
    split-off body without ever entering the function Vigil hooks. Debian's 5.10 has
    vfs_rmdir.part.0, and rmdir(2) goes straight to it."""
    out: dict[str, set[str]] = {}
    for sym in symbols:
        m = _CLONE.match(sym)
        if m and m.group("func") in funcs and ".cold" not in sym:
            out.setdefault(m.group("func"), set()).add(sym)
    return out


@functools.lru_cache(maxsize=1)
def kernel_symbols() -> frozenset[str]:
    """Function names kprobes can attach to (/proc/kallsyms text symbols)."""
    names: set[str] = set()
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    names.add(parts[2])
    except OSError:
        pass
    return frozenset(names)


def plan(backend: str, programs: Iterable[Program], *, btf: Btf | None,
         kernel_btf: bool = True,
         symbols: Callable[[], frozenset[str]] = kernel_symbols,
         machine: str | None = None) -> Plan:
    """The programs and settings of ``backend`` here, or HookUnsupported.

    ``btf`` is the BTF in use (the kernel's or a file given with --btf); ``kernel_btf`` says
    whether it is the running kernel's own: LSM and fentry programs attach through it.
    """
    progs = list(programs)
    if backend == "tracepoint":
        net = net_hooks.plan(backend, ((p.name, p.section) for p in progs), btf,
                             lambda f: True, lambda fs: {}, 0)
        sec = sec_hooks.plan(backend, ((p.name, p.section) for p in progs), btf,
                             lambda f: True, lambda fs: {}, 0)
        chosen = {p.name for p in progs if (_common(p) or _tracepoint_prog(p))
                  and not _other_part(p.name)}
        return Plan(backend, frozenset(chosen | net.programs | sec.programs))
    if backend not in VFS_BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    if btf is None:
        raise HookUnsupported("argument positions come from BTF, and no BTF is available")
    if backend in ("lsm", "fentry") and not kernel_btf:
        raise HookUnsupported("attaching to kernel functions needs the kernel's own BTF, "
                              "and a tailored BTF is in use")
    if backend == "kprobe" and canonical(machine or platform.machine()) in REGPARM3:
        raise HookUnsupported("a 32-bit x86 kernel passes only three arguments in registers "
                              "(regparm(3)), and security_path_rename's five are read from "
                              "registers")
    max_index = KP_MAX_ARGS - 1 if backend == "kprobe" else FEXIT_MAX_SLOTS - 2
    rodata = argument_positions(btf, max_index, ret_in_ctx=backend != "kprobe")
    rodata["cfg_close_at_fput"] = 1
    notes: list[str] = []

    def exists(func: str) -> bool:
        if backend == "kprobe":
            return func in symbols()
        return _has_func(btf, func)

    clones = partial_clones(symbols(), {p.section.partition("/")[2] for p in progs
                                        if p.section.startswith(("fexit/", "kretprobe/",
                                                                 "fentry/", "kprobe/"))
                                        and not _other_part(p.name)})
    # A split commit function is replaced by its caller's exit where Vigil knows one.
    moved = {f: _CALLER_COMMITS[f] for f in clones
             if f in _CALLER_COMMITS and _CALLER_COMMITS[f] not in clones
             and exists(_CALLER_COMMITS[f])}
    if set(clones) - set(moved):
        split = ", ".join(f"{f} (the kernel calls {', '.join(sorted(c))})"
                          for f, c in sorted(clones.items()) if f not in moved)
        raise HookUnsupported(f"partly inlined here, so hooking them misses calls: {split}")
    for func, caller in sorted(moved.items()):
        rodata.update(_caller_commit_settings(btf, caller))
        notes.append(f"{func} is partly inlined here ({', '.join(sorted(clones[func]))}): "
                     f"its changes are committed at the exit of {caller}")
    skipped = set(moved) | (set(_CALLER_COMMITS.values()) - set(moved.values()))
    chosen = {p.name for p in progs if (_common(p) or _xattr_prog(p))
              and not _other_part(p.name)}
    prefix = {"lsm": ("lsm/", "fexit/"), "fentry": ("fentry/", "fexit/"),
              "kprobe": ("kprobe/", "kretprobe/")}[backend]
    for p in progs:
        kind, _, target = p.section.partition("/")
        if not p.section.startswith(prefix) or _other_part(p.name):
            continue
        if kind in ("fexit", "kprobe", "kretprobe") and target in skipped:
            continue
        func = f"bpf_lsm_{target}" if kind == "lsm" else target
        if exists(func):
            chosen.add(p.name)
        elif target in ("file_truncate", "security_file_truncate"):
            notes.append(f"{func} absent: ftruncate is seen through path_truncate here")
        elif target == "file_release":
            notes.append("no file_release LSM hook here: the last close is seen by fentry "
                         "on __fput")
        else:
            raise HookUnsupported(f"{func} does not exist on this kernel "
                                  f"({'kallsyms' if backend == 'kprobe' else btf.source})")
    if backend == "lsm" and not any(p.section == "lsm/file_release" and p.name in chosen
                                    for p in progs):
        if not _has_func(btf, "__fput"):
            raise HookUnsupported("neither the file_release LSM hook nor __fput exists here")
        chosen.update(p.name for p in progs if p.section == "fentry/__fput")
    # Trampolines (fentry, LSM) take struct arguments only since 6.1; security_path_chown
    # passes kuid_t/kgid_t by value. Where the kernel refuses it, the chown syscalls' tracepoints
    # do its job (io_uring has no chown).
    chown_tps = frozenset(p.name for p in progs if _syscall_of(p.section) in CHOWN_SYSCALLS)
    fallbacks = {p.name: chown_tps for p in progs
                 if p.name in chosen and p.section in ("lsm/path_chown",
                                                       "fentry/security_path_chown")}
    net = net_hooks.plan(backend, ((p.name, p.section) for p in progs), btf, exists,
                         lambda funcs: partial_clones(symbols(), funcs), max_index)
    if net.note:
        notes.append(net.note)
    sec = sec_hooks.plan(backend, ((p.name, p.section) for p in progs), btf, exists,
                         lambda funcs: partial_clones(symbols(), funcs), max_index)
    notes.extend(sec.notes)
    fallbacks.update({name: frozenset() for name in sec.optional})
    return Plan(backend, frozenset(chosen | net.programs | sec.programs),
                {**rodata, **net.rodata, **sec.rodata}, tuple(notes), fallbacks,
                net_via_syscalls=net.note is not None, sec_unseen=sec.unseen)


def kernel_btf_path(custom: str | None) -> tuple[Path | None, bool]:
    """(the BTF to read prototypes from, whether it is the running kernel's own)."""
    if custom:
        return Path(custom), False
    own = Path("/sys/kernel/btf/vmlinux")
    return (own, True) if own.is_file() else (None, False)
