"""Argument positions from BTF prototypes, and each backend's program choice.

The prototypes below are the shapes real kernels have had (Debian's 5.10.0-30 and 5.10.0-32
differ: the later one backported vfs_rename's struct renamedata); a prototype of an unknown
shape must make the backend unsupported, never produce a guess. The running kernel's own BTF is
checked too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.kernel import hooks
from vigil.kernel.btf import Btf
from vigil.kernel.hooks import HookUnsupported, Program

D, INO, INODE = "struct dentry *", "struct inode *", "struct inode **"

# vfs_* before 5.12: no namespace argument; vfs_rename with six arguments.
PROTOS_5_10 = {
    "vfs_unlink": [("dir", INO), ("dentry", D), ("delegated_inode", INODE)],
    "vfs_rmdir": [("dir", INO), ("dentry", D)],
    "vfs_mkdir": [("dir", INO), ("dentry", D), ("mode", "umode_t")],
    "vfs_mknod": [("dir", INO), ("dentry", D), ("mode", "umode_t"), ("dev", "dev_t")],
    "vfs_symlink": [("dir", INO), ("dentry", D), ("oldname", "const char *")],
    "vfs_link": [("old_dentry", D), ("dir", INO), ("new_dentry", D), ("delegated_inode", INODE)],
    "notify_change": [("dentry", D), ("attr", "struct iattr *"), ("delegated_inode", INODE)],
    "do_truncate": [("dentry", D), ("length", "loff_t"), ("time_attrs", "unsigned int"),
                    ("filp", "struct file *")],
    "vfs_rename": [("old_dir", INO), ("old_dentry", D), ("new_dir", INO), ("new_dentry", D),
                   ("delegated_inode", INODE), ("flags", "unsigned int")],
}


def _with_ns(protos: dict[str, list[tuple[str, str]]], ns: str) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for func, params in protos.items():
        if func == "vfs_rename":
            out[func] = [("rd", "struct renamedata *")]
        elif func == "vfs_link":
            out[func] = [params[0], ("idmap", ns), *params[1:]]
        else:
            out[func] = [("idmap", ns), *params]
    return out


PROTOS_6_3 = _with_ns(PROTOS_5_10, "struct mnt_idmap *")


class FakeBtf:
    """Only the two queries hooks.py makes: a pure-logic stand-in for a kernel's BTF."""

    source = "fake"

    def __init__(self, protos: dict[str, list[tuple[str, str]]],
                 returns: dict[str, str] | None = None) -> None:
        self.protos = protos
        self.returns = returns or {}

    def func_proto(self, name: str) -> list[tuple[str, str]]:
        if name not in self.protos:
            raise KeyError(name)
        return self.protos[name]

    def func_return(self, name: str) -> str:
        self.func_proto(name)
        return self.returns.get(name, "int")


def positions(protos: dict[str, list[tuple[str, str]]], **returns: str) -> dict[str, int]:
    return hooks.argument_positions(FakeBtf(protos, returns), 5, ret_in_ctx=True)  # type: ignore[arg-type]


def test_positions_before_5_12() -> None:
    p = positions(PROTOS_5_10)
    assert (p["pos_unlink"], p["ret_unlink"]) == (1, 3)
    assert (p["pos_rename"], p["ret_rename"], p["rename_takes_struct"]) == (1, 6, 0)
    assert (p["pos_link"], p["pos_setattr"]) == (0, 0)
    assert (p["pos_truncate"], p["pos_truncate_attrs"], p["ret_truncate"]) == (0, 2, 4)


def test_positions_with_a_namespace_argument() -> None:
    p = positions(PROTOS_6_3)
    assert (p["pos_unlink"], p["ret_unlink"]) == (2, 4)
    assert (p["pos_rename"], p["ret_rename"], p["rename_takes_struct"]) == (0, 1, 1)
    assert p["pos_link"] == 0 and p["pos_setattr"] == 1
    assert p["ret_ptr_mkdir"] == 0


def test_backported_rename_struct_on_an_old_kernel() -> None:
    # Debian 5.10.0-32: old vfs_unlink, new vfs_rename. A version check would get this wrong.
    protos = dict(PROTOS_5_10, vfs_rename=[("rd", "struct renamedata *")])
    p = positions(protos)
    assert (p["pos_unlink"], p["rename_takes_struct"], p["ret_rename"]) == (1, 1, 1)


def test_mkdir_returning_a_dentry() -> None:
    assert positions(PROTOS_6_3, vfs_mkdir=D)["ret_ptr_mkdir"] == 1


@pytest.mark.parametrize(("func", "params", "why"), [
    ("vfs_unlink", [("idmap", "struct mnt_idmap *"), ("dir", INO), ("victim", D)], "no struct"),
    ("vfs_unlink", [("dir", INO), ("dentry", "struct path *")], "no struct"),
    ("vfs_rename", [("old", "struct rename_args *")], "neither"),
    ("do_truncate", [("dentry", D), ("length", "loff_t")], "time_attrs"),
])
def test_unknown_prototype_is_unsupported(func: str, params: list[tuple[str, str]],
                                          why: str) -> None:
    protos = dict(PROTOS_6_3, **{func: params})
    with pytest.raises(HookUnsupported, match=why) as e:
        positions(protos)
    assert func in str(e.value)


def test_unknown_return_type_is_unsupported() -> None:
    with pytest.raises(HookUnsupported, match="returns"):
        positions(PROTOS_6_3, vfs_unlink="void")


def test_missing_function_is_unsupported() -> None:
    protos = {k: v for k, v in PROTOS_6_3.items() if k != "notify_change"}
    with pytest.raises(HookUnsupported, match="notify_change"):
        positions(protos)


def test_positions_past_what_a_kprobe_reads_are_refused() -> None:
    protos = dict(PROTOS_6_3, vfs_unlink=[(f"a{i}", INO) for i in range(5)] + [("dentry", D)])
    with pytest.raises(HookUnsupported, match="pos_unlink=5"):
        hooks.argument_positions(FakeBtf(protos), 4, ret_in_ctx=False)  # type: ignore[arg-type]


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").is_file(), reason="no kernel BTF")
def test_running_kernel_prototypes_are_known() -> None:
    with Btf.parse("/sys/kernel/btf/vmlinux") as btf:
        p = hooks.argument_positions(btf, 5, ret_in_ctx=True)
        unlink = btf.func_proto("vfs_unlink")
    assert unlink[p["pos_unlink"]] == ("dentry", D)
    assert p["ret_unlink"] == len(unlink)


PROGRAMS = [
    Program("enter_unlink", "tracepoint/syscalls/sys_enter_unlink"),
    Program("enter_setxattr", "tracepoint/syscalls/sys_enter_setxattr"),
    Program("handle_exec", "tracepoint/sched/sched_process_exec"),
    Program("handle_sys_exit", "tracepoint"),
    Program("uring_submit_req", "tracepoint/io_uring/io_uring_submit_req"),
    Program("uring_complete", "tracepoint/io_uring/io_uring_complete"),
    Program("lsm_path_unlink", "lsm/path_unlink"),
    Program("lsm_file_release", "lsm/file_release"),
    Program("fe_path_unlink", "fentry/security_path_unlink"),
    Program("fe_fput", "fentry/__fput"),
    Program("fx_vfs_unlink", "fexit/vfs_unlink"),
    Program("kp_path_unlink", "kprobe/security_path_unlink"),
    Program("kr_vfs_unlink", "kretprobe/vfs_unlink"),
]


class PlanBtf(FakeBtf):
    def __init__(self, extra: set[str]) -> None:
        funcs = {f: [("x", D)] for f in extra}
        super().__init__({**PROTOS_6_3, **funcs})


def test_tracepoint_plan_is_the_syscall_and_io_uring_programs() -> None:
    plan = hooks.plan("tracepoint", PROGRAMS, btf=None)
    assert plan.programs == {"enter_unlink", "enter_setxattr", "handle_exec", "handle_sys_exit",
                             "uring_submit_req", "uring_complete"}


def test_fentry_plan_keeps_xattr_tracepoints_and_drops_the_others() -> None:
    btf = PlanBtf({"security_path_unlink", "__fput"})
    plan = hooks.plan("fentry", PROGRAMS, btf=btf)  # type: ignore[arg-type]
    assert plan.programs == {"enter_setxattr", "handle_exec", "handle_sys_exit",
                             "fe_path_unlink", "fe_fput", "fx_vfs_unlink"}
    assert plan.rodata["cfg_close_at_fput"] == 1


def test_lsm_without_file_release_uses_fput() -> None:
    btf = PlanBtf({"bpf_lsm_path_unlink", "__fput"})
    plan = hooks.plan("lsm", PROGRAMS, btf=btf)  # type: ignore[arg-type]
    assert "fe_fput" in plan.programs and "lsm_file_release" not in plan.programs
    assert any("file_release" in n for n in plan.notes)


def test_kprobe_needs_the_symbols() -> None:
    btf = PlanBtf(set())
    with pytest.raises(HookUnsupported, match="security_path_unlink"):
        hooks.plan("kprobe", PROGRAMS, btf=btf,  # type: ignore[arg-type]
                   symbols=lambda: frozenset({"vfs_unlink"}))
    plan = hooks.plan("kprobe", PROGRAMS, btf=btf,  # type: ignore[arg-type]
                      symbols=lambda: frozenset({"vfs_unlink", "security_path_unlink"}))
    assert {"kp_path_unlink", "kr_vfs_unlink"} <= plan.programs


def test_kprobe_is_refused_where_the_kernel_passes_three_register_arguments() -> None:
    btf = PlanBtf(set())
    found = lambda: frozenset({"vfs_unlink", "security_path_unlink"})  # noqa: E731
    with pytest.raises(HookUnsupported, match=r"regparm\(3\)"):
        hooks.plan("kprobe", PROGRAMS, btf=btf, symbols=found,  # type: ignore[arg-type]
                   machine="i686")
    plan = hooks.plan("kprobe", PROGRAMS, btf=btf, symbols=found,  # type: ignore[arg-type]
                      machine="armv7l")
    assert "kp_path_unlink" in plan.programs


def test_tailored_btf_rules_out_attach_by_btf() -> None:
    btf = PlanBtf({"bpf_lsm_path_unlink", "__fput", "security_path_unlink"})
    for backend in ("lsm", "fentry"):
        with pytest.raises(HookUnsupported, match="kernel's own BTF"):
            hooks.plan(backend, PROGRAMS, btf=btf, kernel_btf=False)  # type: ignore[arg-type]


def test_chown_capture_falls_back_to_the_chown_syscalls() -> None:
    progs = [*PROGRAMS, Program("fe_path_chown", "fentry/security_path_chown"),
             Program("enter_fchown", "tracepoint/syscalls/sys_enter_fchown"),
             Program("exit_fchown", "tracepoint/syscalls/sys_exit_fchown")]
    btf = PlanBtf({"security_path_unlink", "__fput", "security_path_chown"})
    plan = hooks.plan("fentry", progs, btf=btf)  # type: ignore[arg-type]
    assert "fe_path_chown" in plan.programs and "enter_fchown" not in plan.programs
    after = plan.without("fe_path_chown", "arg1 type STRUCT is unsupported")
    assert "fe_path_chown" not in after.programs
    assert {"enter_fchown", "exit_fchown"} <= after.programs
    assert "STRUCT" in after.notes[-1] and not after.fallbacks


RMDIR_PROGRAMS = [*PROGRAMS, Program("fx_vfs_rmdir", "fexit/vfs_rmdir"),
                  Program("fx_do_rmdir", "fexit/do_rmdir"),
                  Program("kr_vfs_rmdir", "kretprobe/vfs_rmdir"),
                  Program("kr_do_rmdir", "kretprobe/do_rmdir")]
DO_RMDIR = {"do_rmdir": [("dfd", "int"), ("name", "struct filename *")]}


def test_unsplit_rmdir_commits_at_vfs_rmdir() -> None:
    btf = PlanBtf({"security_path_unlink", "__fput"})
    btf.protos.update(DO_RMDIR)
    plan = hooks.plan("fentry", RMDIR_PROGRAMS, btf=btf,  # type: ignore[arg-type]
                      symbols=lambda: frozenset({"vfs_rmdir", "do_rmdir"}))
    assert "fx_vfs_rmdir" in plan.programs and "fx_do_rmdir" not in plan.programs


def test_split_rmdir_commits_at_the_exit_of_do_rmdir() -> None:
    # Debian 5.10: do_rmdir() calls vfs_rmdir.part.0, never entering vfs_rmdir itself.
    syms = frozenset({"vfs_unlink", "vfs_rmdir", "vfs_rmdir.part.0", "do_rmdir",
                      "security_path_unlink", "__fput", "vfs_rename.cold"})
    btf = PlanBtf({"security_path_unlink", "__fput"})
    btf.protos.update(DO_RMDIR)
    btf.returns["do_rmdir"] = "long int"  # as BTF names it
    for backend, moved, kept in (("fentry", "fx_vfs_rmdir", "fx_do_rmdir"),
                                 ("kprobe", "kr_vfs_rmdir", "kr_do_rmdir")):
        plan = hooks.plan(backend, RMDIR_PROGRAMS, btf=btf,  # type: ignore[arg-type]
                          symbols=lambda: syms)
        assert kept in plan.programs and moved not in plan.programs, backend
        assert plan.rodata["ret_do_rmdir"] == 2
        assert any("vfs_rmdir.part.0" in n and "do_rmdir" in n for n in plan.notes)


def test_partly_inlined_commit_function_without_a_caller_is_unsupported() -> None:
    syms = frozenset({"vfs_unlink", "vfs_unlink.part.0", "vfs_rmdir", "vfs_rmdir.part.0",
                      "security_path_unlink", "__fput", "vfs_rename.cold"})
    btf = PlanBtf({"security_path_unlink", "__fput"})
    # vfs_unlink has no caller Vigil could commit at; vfs_rmdir's caller is not in the BTF.
    with pytest.raises(HookUnsupported, match=r"vfs_rmdir \(the kernel calls vfs_rmdir.part.0\)"
                                              r", vfs_unlink \(the kernel calls vfs_unlink.part"):
        hooks.plan("fentry", RMDIR_PROGRAMS, btf=btf,  # type: ignore[arg-type]
                   symbols=lambda: syms)
    assert hooks.partial_clones(syms, {"vfs_rename"}) == {}


def test_a_32bit_kernel_with_its_jit_on_is_refused_with_the_fix() -> None:
    from vigil.kernel.choose import jit_problem

    for machine in ("armv7l", "i686", "i386"):
        problem = jit_problem(machine, jit_on=True)
        assert problem and "net.core.bpf_jit_enable=0" in problem, machine
        assert jit_problem(machine, jit_on=False) is None
    assert jit_problem("x86_64", jit_on=True) is None
    assert jit_problem("aarch64", jit_on=True) is None
    assert jit_problem("mips", jit_on=True) is None


def test_tail_call_slots_are_the_c_enum_and_the_objects_handlers() -> None:
    """hooks.TAIL_CALLS and bpf/syscalls_file.bpf.h's H_* enum name the same slots, and the
    built object's tail-call targets (section "tracepoint") are exactly the table's handlers:
    a handler added in C without its slot here would never be reached."""
    import re

    from vigil.kernel.backend import OBJECT_NAME
    from vigil.kernel.loader import BpfObjectSpec, bundled_object

    root = Path(__file__).resolve().parents[2]
    text = (root / "bpf" / "syscalls_file.bpf.h").read_text()
    enum = re.search(r"enum \{ (H_SYS_EXIT.*?) \};", text, re.S)
    assert enum is not None
    slots = {name: int(v) for name, v in re.findall(r"(H_\w+) = (\d+)", enum.group(1))}
    assert sorted(slots.values()) == sorted(slot for slot, _ in hooks.TAIL_CALLS.values())
    assert slots == {"H_" + h.removeprefix("handle_").upper(): slot
                     for h, (slot, _) in hooks.TAIL_CALLS.items()}
    with BpfObjectSpec.open(bundled_object(OBJECT_NAME)) as spec:
        targets = {p.name for p in spec.programs if p.section == "tracepoint"}
        names = {p.name for p in spec.programs}
    assert targets == set(hooks.TAIL_CALLS)
    assert not hooks.PATH_ENTERS - names, hooks.PATH_ENTERS - names   # no name misspelt
    for handler, (_, calls) in hooks.TAIL_CALLS.items():
        assert any(calls(n) for n in names - targets), f"nothing in the object calls {handler}"


def test_handlers_are_loaded_only_with_a_caller() -> None:
    assert hooks.tail_call_targets(["exit_openat", "enter_openat"]) == {"handle_sys_exit"}
    assert hooks.tail_call_targets(["enter_unlink", "exit_unlink"]) == {"handle_enter_path",
                                                                       "handle_sys_exit"}
    assert hooks.tail_call_targets(["uring_submit_sqe"]) == {"handle_uring_submit",
                                                             "handle_close"}
    assert hooks.tail_call_targets(["sec_exit_pivot_root", "cred_exit_setuid"]) == {
        "handle_sec_exit", "handle_cred_exit"}
    assert hooks.tail_call_targets(["fe_path_unlink", "lsm_path_unlink", "handle_exec"]) == set()
