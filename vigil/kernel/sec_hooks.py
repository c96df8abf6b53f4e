"""Which privilege and tampering programs a backend loads (bpf/cred.bpf.h, bpf/sec.bpf.h), and
the argument positions of the kernel functions they hook, read from BTF.

Every backend loads the ``module:module_load`` and ``signal:signal_generate`` tracepoints'
programs. The tracepoint backend takes the rest from the syscalls' tracepoints (and exec's).
The lsm and fentry backends hook the kernel functions with fentry/fexit, the kprobe backend
with kprobes/kretprobes. Each function stands alone: one that is missing here, split by the
compiler, or whose prototype this module does not know is not hooked, and a note names it and
what goes unseen; the rest still load.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vigil.kernel.btf import Btf

_CRED = ("struct cred *", "const struct cred *")
_PATH = ("struct path *", "const struct path *")
_STR = ("const char *", "char *")
_INT = ("int",)
_LONG = ("long int", "long unsigned int", "unsigned long", "long")


@dataclass(frozen=True)
class Arg:
    suffix: str                 # the setting is pos_<stem>_<suffix>
    types: tuple[str, ...]      # accepted C types
    name: str | None = None     # the parameter's name, where two share a type


@dataclass(frozen=True)
class Func:
    func: str
    stem: str                   # cred_fix_setuid -> pos_cred_fix_setuid_*, ret_cred_*
    args: tuple[Arg, ...]
    result: bool = False        # its return value is read (fexit)
    unseen: str = ""            # what is not reported when it is not hooked


FUNCS: tuple[Func, ...] = (
    Func("security_task_fix_setuid", "cred_fix_setuid",
         (Arg("new", _CRED, "new"), Arg("old", _CRED, "old"), Arg("flags", _INT)),
         result=True, unseen="setuid, setreuid, setresuid and setfsuid"),
    Func("security_task_fix_setgid", "cred_fix_setgid",
         (Arg("new", _CRED, "new"), Arg("old", _CRED, "old"), Arg("flags", _INT)),
         result=True, unseen="setgid, setregid, setresgid and setfsgid"),
    Func("security_capset", "cred_capset",
         (Arg("new", _CRED, "new"), Arg("old", _CRED, "old")), result=True,
         unseen="capset"),
    Func("security_bprm_committing_creds", "cred_bprm",
         (Arg("bprm", ("struct linux_binprm *", "const struct linux_binprm *")),),
         unseen="privilege gained by exec (setuid, setgid and file-capability programs)"),
    Func("commit_creds", "cred_commit", (Arg("new", ("struct cred *",)),),
         unseen="escalations that no set*id call or exec explains"),
    Func("ptrace_attach", "sec_ptrace",
         (Arg("task", ("struct task_struct *",)), Arg("request", _LONG, "request")),
         result=True, unseen="ptrace attach and seize"),
    Func("process_vm_rw", "sec_vm_rw",
         (Arg("pid", ("pid_t", "int")), Arg("write", _INT, "vm_write")), result=True,
         unseen="process_vm_writev"),
    Func("path_mount", "sec_mount",
         (Arg("dev", _STR, "dev_name"), Arg("path", _PATH), Arg("type", _STR, "type_page"),
          Arg("flags", _LONG, "flags")), result=True, unseen="mount"),
    Func("path_umount", "sec_umount", (Arg("path", _PATH), Arg("flags", _INT)),
         unseen="umount"),
    Func("security_sb_pivotroot", "sec_pivot",
         (Arg("old", _PATH, "old_path"), Arg("new", _PATH, "new_path")), unseen="pivot_root"),
    Func("security_bpf", "sec_bpf",
         (Arg("cmd", _INT, "cmd"), Arg("attr", ("union bpf_attr *",))),
         unseen="bpf() program loads and attaches"),
    Func("load_module", "sec_module", (), result=True, unseen="kernel module loads that fail"),
)
BY_FUNC = {f.func: f for f in FUNCS}


class Unhookable(Exception):
    """One function cannot be hooked here; the message says why."""


def positions(btf: Btf, f: Func, max_index: int, ret_in_ctx: bool) -> dict[str, int]:
    """``f``'s pos_*/ret_* settings from its prototype in ``btf``."""
    try:
        params = btf.func_proto(f.func)
    except KeyError:
        raise Unhookable(f"{f.func} is not in the BTF in use ({btf.source})") from None
    proto = ", ".join(f"{t} {n}" for n, t in params) or "void"
    out: dict[str, int] = {}
    for a in f.args:
        pos = next((i for i, (n, t) in enumerate(params)
                    if t in a.types and (a.name is None or n == a.name)), None)
        if pos is None:
            raise Unhookable(f"{f.func}({proto}): no {' or '.join(a.types)} "
                             f"{a.name or a.suffix} argument")
        if pos > max_index:
            raise Unhookable(f"{f.func}({proto}): its {a.suffix} argument is beyond what the "
                             "hook can read")
        out[f"pos_{f.stem}_{a.suffix}"] = pos
    if f.result:
        if ret_in_ctx and len(params) > max_index + 1:
            raise Unhookable(f"{f.func}({proto}): its result is beyond what the hook can read")
        out[f"ret_{f.stem}"] = len(params)
    return out


NO_MODULES: str = ("tampering: this kernel cannot load modules (built without module support: "
                   "no /proc/modules), so there is no module load to report")


def module_gap() -> tuple[str, ...]:
    """What vigil doctor says when the kernel has no module support at all."""
    return () if os.path.exists("/proc/modules") else (NO_MODULES,)


def is_sec(name: str) -> bool:
    return name.startswith(("cred_", "sec_"))


_EVERY_BACKEND = ("tracepoint/module/", "tracepoint/signal/")
_KINDS = {"lsm": ("fentry", "fexit"), "fentry": ("fentry", "fexit"),
          "kprobe": ("kprobe", "kretprobe")}


@dataclass(frozen=True)
class SecPlan:
    programs: frozenset[str]
    rodata: dict[str, int]
    notes: tuple[str, ...] = ()
    unseen: tuple[str, ...] = ()    # what this backend does not report here (vigil doctor)
    # programs the kernel may refuse at load (a trampoline with too many arguments): dropped
    optional: frozenset[str] = frozenset()


def plan(backend: str, programs: Iterable[tuple[str, str]], btf: Btf | None,
         exists: Callable[[str], bool], clones: Callable[[set[str]], dict[str, set[str]]],
         max_index: int) -> SecPlan:
    """The privilege and tampering programs of ``backend`` ((name, section) pairs in).
    ``exists`` and ``clones`` as for vigil.kernel.net_hooks.plan."""
    progs = [(n, s) for n, s in programs if is_sec(n)]
    every = {n for n, s in progs if s.startswith(_EVERY_BACKEND)}
    if backend == "tracepoint":
        return SecPlan(frozenset(every | {n for n, s in progs
                                          if s.startswith(("tracepoint/syscalls/",
                                                           "tracepoint/sched/"))}), {})
    kinds = _KINDS[backend]
    mine = [(n, s.partition("/")[2]) for n, s in progs if s.partition("/")[0] in kinds]
    split = clones({func for _, func in mine})
    chosen, rodata, notes, unseen, optional = set(every), {}, [], [], set()
    for f in FUNCS:
        names = [n for n, func in mine if func == f.func]
        if not names:
            continue
        try:
            if btf is None:
                raise Unhookable("no BTF to read its prototype from")
            if not exists(f.func):
                raise Unhookable(f"{f.func} cannot be hooked here")
            if f.func in split:
                raise Unhookable(f"{f.func} is partly inlined here "
                                 f"({', '.join(sorted(split[f.func]))})")
            rodata.update(positions(btf, f, max_index, ret_in_ctx=backend != "kprobe"))
        except Unhookable as e:
            notes.append(f"not hooked: {e}: {f.unseen} not reported")
            unseen.append(f.unseen)
            continue
        chosen.update(names)
        if f.result and backend != "kprobe" and len(btf.func_proto(f.func)) > 6:
            optional.update(names)  # trampolines of older kernels take six arguments
    return SecPlan(frozenset(chosen), rodata, tuple(notes), tuple(unseen), frozenset(optional))
