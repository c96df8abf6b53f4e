"""Privilege and tampering events in pure logic: which programs each backend loads and the
argument positions from BTF prototypes (the real kernels' shapes), the escalation inferred
from credentials seen per thread, the records decoded, and their ECS documents."""

from __future__ import annotations

import struct

from test_hooks import FakeBtf

from vigil.enrich.process import ProcessTable
from vigil.events import layout
from vigil.events.creds import PrivilegeTracker
from vigil.events.model import ExecEvent, ExitEvent, Process
from vigil.events.security import CredEvent, CredOp, Creds, SecEvent, SecOp, Target
from vigil.kernel import hooks, sec_hooks
from vigil.outputs.ecs import to_ecs
from vigil.outputs.ecs_sec import cap_names

CRED, CCRED, PATH = "struct cred *", "const struct cred *", "struct path *"
# 6.12's prototypes (5.10 differs only in const on path_mount's path and security_bpf's
# fourth argument, which 6.18 added)
PROTOS = {
    "security_task_fix_setuid": [("new", CRED), ("old", CCRED), ("flags", "int")],
    "security_task_fix_setgid": [("new", CRED), ("old", CCRED), ("flags", "int")],
    "security_capset": [("new", CRED), ("old", CCRED), ("effective", "const kernel_cap_t *"),
                        ("inheritable", "const kernel_cap_t *"),
                        ("permitted", "const kernel_cap_t *")],
    "security_bprm_committing_creds": [("bprm", "const struct linux_binprm *")],
    "commit_creds": [("new", CRED)],
    "ptrace_attach": [("task", "struct task_struct *"), ("request", "long int"),
                      ("addr", "long unsigned int"), ("flags", "long unsigned int")],
    "process_vm_rw": [("pid", "pid_t"), ("lvec", "const struct iovec *"),
                      ("liovcnt", "long unsigned int"), ("rvec", "const struct iovec *"),
                      ("riovcnt", "long unsigned int"), ("flags", "long unsigned int"),
                      ("vm_write", "int")],
    "path_mount": [("dev_name", "const char *"), ("path", PATH), ("type_page", "const char *"),
                   ("flags", "long unsigned int"), ("data_page", "void *")],
    "path_umount": [("path", PATH), ("flags", "int")],
    "security_sb_pivotroot": [("old_path", "const struct path *"),
                              ("new_path", "const struct path *")],
    "security_bpf": [("cmd", "int"), ("attr", "union bpf_attr *"), ("size", "unsigned int"),
                     ("kernel", "bool")],
    "load_module": [("info", "struct load_info *"), ("uargs", "const char *"),
                    ("flags", "int")],
}
PROGRAMS = [
    ("cred_fx_fix_setuid", "fexit/security_task_fix_setuid"),
    ("cred_kp_fix_setuid", "kprobe/security_task_fix_setuid"),
    ("cred_fe_commit", "fentry/commit_creds"),
    ("cred_kp_commit", "kprobe/commit_creds"),
    ("cred_enter_setuid", "tracepoint/syscalls/sys_enter_setuid"),
    ("cred_exit_setuid", "tracepoint/syscalls/sys_exit_setuid"),
    ("cred_exec_tp", "tracepoint/sched/sched_process_exec"),
    ("sec_fe_pivot", "fentry/security_sb_pivotroot"),
    ("sec_fx_vm_rw", "fexit/process_vm_rw"),
    ("sec_kp_mount", "kprobe/path_mount"),
    ("sec_kr_mount", "kretprobe/path_mount"),
    ("sec_fx_mount", "fexit/path_mount"),
    ("sec_module_load", "tracepoint/module/module_load"),
    ("sec_signal", "tracepoint/signal/signal_generate"),
    ("net_state", "tracepoint/sock/inet_sock_set_state"),
]


def plan(backend: str, protos: dict[str, list[tuple[str, str]]] = PROTOS,
         split: dict[str, set[str]] | None = None, max_index: int = 6
         ) -> sec_hooks.SecPlan:
    return sec_hooks.plan(backend, PROGRAMS, FakeBtf(protos),  # type: ignore[arg-type]
                          lambda f: f in protos, lambda fs: split or {}, max_index)


def test_positions_by_name_where_two_arguments_share_a_type() -> None:
    p = sec_hooks.positions(FakeBtf(PROTOS), sec_hooks.BY_FUNC["security_sb_pivotroot"],  # type: ignore[arg-type]
                            6, ret_in_ctx=True)
    assert p == {"pos_sec_pivot_old": 0, "pos_sec_pivot_new": 1}
    swapped = {"security_sb_pivotroot": list(reversed(PROTOS["security_sb_pivotroot"]))}
    p = sec_hooks.positions(FakeBtf(swapped), sec_hooks.BY_FUNC["security_sb_pivotroot"],  # type: ignore[arg-type]
                            6, ret_in_ctx=True)
    assert p == {"pos_sec_pivot_old": 1, "pos_sec_pivot_new": 0}
    m = sec_hooks.positions(FakeBtf(PROTOS), sec_hooks.BY_FUNC["path_mount"], 6,  # type: ignore[arg-type]
                            ret_in_ctx=True)
    assert (m["pos_sec_mount_path"], m["pos_sec_mount_flags"], m["ret_sec_mount"]) == (1, 3, 5)


def test_tracepoint_backend_takes_the_syscalls_and_every_backend_part() -> None:
    p = plan("tracepoint")
    assert p.programs == {"cred_enter_setuid", "cred_exit_setuid", "cred_exec_tp",
                          "sec_module_load", "sec_signal"}
    assert p.rodata == {} and p.notes == ()


def test_fentry_and_kprobe_backends_hook_the_functions() -> None:
    fe = plan("fentry")
    assert fe.programs == {"cred_fx_fix_setuid", "cred_fe_commit", "sec_fe_pivot",
                           "sec_fx_vm_rw", "sec_fx_mount", "sec_module_load", "sec_signal"}
    assert fe.rodata["pos_cred_fix_setuid_old"] == 1
    assert fe.rodata["ret_sec_vm_rw"] == 7
    assert fe.optional == {"sec_fx_vm_rw"}   # seven arguments: older trampolines refuse it
    kp = plan("kprobe", max_index=4)
    assert kp.programs == {"cred_kp_fix_setuid", "cred_kp_commit", "sec_kp_mount",
                           "sec_kr_mount", "sec_module_load", "sec_signal"}
    assert kp.unseen == ()   # no kprobe on process_vm_rw: its blind spot is the backend's
    assert "process_vm_writev" in " ".join(hooks.SEC_BLIND_SPOTS["kprobe"])


def test_a_missing_or_split_function_costs_only_its_own_events() -> None:
    protos = {k: v for k, v in PROTOS.items() if k != "commit_creds"}
    p = plan("lsm", protos)
    assert "cred_fe_commit" not in p.programs and "cred_fx_fix_setuid" in p.programs
    assert p.unseen == ("escalations that no set*id call or exec explains",)
    s = plan("fentry", split={"path_mount": {"path_mount.part.0"}})
    assert "sec_fx_mount" not in s.programs and "sec_fe_pivot" in s.programs
    assert any("partly inlined" in n and "path_mount.part.0" in n for n in s.notes)


def proc(uid: int, euid: int, tid: int = 10) -> Process:
    return Process(pid=10, tid=tid, ppid=1, start_time=5, parent_start_time=1, uid=uid,
                   gid=uid, euid=euid, egid=uid, auid=0xFFFFFFFF, session_id=1, comm=b"x",
                   cgroup_id=1, mnt_ns=1)


def creds(uid: int, euid: int, caps: int = 0, ns: int = 1) -> Creds:
    return Creds(uid, uid, uid, uid, euid, uid, euid, uid, caps, caps, 0, ns)


def test_escalation_inferred_from_a_later_event_of_the_thread() -> None:
    t = PrivilegeTracker(ProcessTable())
    assert t.inspect([ExecEvent(1, proc(1000, 1000))]) != []          # first sight: baseline
    out = t.inspect([ExitEvent(2, proc(0, 0), 0)])
    assert [type(e).__name__ for e in out] == ["CredEvent", "ExitEvent"]
    esc = out[0]
    assert isinstance(esc, CredEvent) and esc.op is CredOp.ESCALATION and esc.inferred
    assert (esc.old.uid, esc.new.uid, esc.new.euid) == (1000, 0, 0)
    assert t.inferred == 1
    # other threads keep their own baseline; a drop is never an escalation
    assert len(t.inspect([ExitEvent(3, proc(1000, 1000, tid=11), 0)])) == 1
    assert len(t.inspect([ExitEvent(4, proc(1000, 1000), 0)])) == 1


def test_a_reported_change_explains_the_new_credentials_in_either_order() -> None:
    t = PrivilegeTracker(ProcessTable())
    t.inspect([ExecEvent(1, proc(1000, 1000))])
    p = proc(1000, 0)
    change = CredEvent(2, CredOp.EXEC, proc(1000, 1000), creds(1000, 1000), creds(1000, 0))
    out = t.inspect([ExecEvent(3, p), change,
                     CredEvent(4, CredOp.SETRESUID, p, creds(1000, 0), creds(0, 0))])
    assert not any(isinstance(e, CredEvent) and e.inferred for e in out)
    assert len(t.inspect([ExitEvent(5, proc(0, 0), 0)])) == 1


def test_gains_over() -> None:
    assert creds(0, 0).gains_over(creds(1000, 1000))
    assert not creds(1000, 1000).gains_over(creds(0, 0))
    assert creds(1000, 1000, caps=1 << 21).gains_over(creds(1000, 1000))
    # a new user namespace's full set counts there only
    assert not creds(1000, 1000, caps=(1 << 41) - 1, ns=2).gains_over(creds(1000, 1000))


def _hdr(kind: int, size: int) -> bytes:
    return layout.HDR.pack(kind, 0, size, 1_000)


def _proc_block() -> bytes:
    return layout.PROC.pack(500, 100, 7, 42, 42, 1, 1000, 1000, 1000, 1000, 1000, 3, 4, b"su")


def test_decode_cred_and_sec_records() -> None:
    d = layout.Decoder(layout.Clock(0, 100))
    old, new = (1000,) * 8 + (0, 0, 0, 9), (1000, 1000, 0, 1000, 0, 1000, 0, 1000, 3, 3, 0, 9)
    body = layout.CRED_HEAD.pack(CredOp.EXEC, 8) + layout.CREDS.pack(*old) \
        + layout.CREDS.pack(*new) + b"/bin/su\0"[:8]
    rec = _hdr(layout.Kind.CRED, 0) + _proc_block() + body
    ev = d.decode(rec)
    assert isinstance(ev, CredEvent) and ev.op is CredOp.EXEC
    assert (ev.old.euid, ev.new.euid, ev.new.cap_effective, ev.path) == (1000, 0, 3, b"/bin/su\0")
    sec = layout.SEC_TAIL.pack(SecOp.PTRACE, -1, 77, 16, 0, 0, 30_000_000, b"sleep", b"", 0, 0, 0)
    ev2 = d.decode(_hdr(layout.Kind.SEC, 0) + _proc_block() + sec)
    assert isinstance(ev2, SecEvent) and ev2.op is SecOp.PTRACE and ev2.errno == 1
    assert ev2.target == Target(77, 3, b"sleep")
    # a path length past the record's end is damage, counted
    bad = layout.SEC_TAIL.pack(SecOp.MOUNT, 0, 0, 0, 0, 0, 0, b"", b"tmpfs", 50, 0, 0)
    assert d.decode(_hdr(layout.Kind.SEC, 0) + _proc_block() + bad) is None
    unknown = layout.CRED_HEAD.pack(99, 0) + layout.CREDS.pack(*old) * 2
    assert d.decode(_hdr(layout.Kind.CRED, 0) + _proc_block() + unknown) is None
    assert d.malformed == {"bad-length": 1, "unknown-op": 1}
    assert struct.calcsize("=" + layout.SEC_TAIL.format.lstrip("=")) == 128


HOST = {"name": "h"}


def test_ecs_of_a_credential_change_and_of_tampering() -> None:
    ev = CredEvent(1_000_000_000, CredOp.SETRESUID, proc(1000, 0),
                   creds(1000, 0, caps=(1 << 7) | (1 << 21)), creds(0, 0, caps=(1 << 41) - 1))
    doc = to_ecs(ev, HOST)
    assert doc["event"]["action"] == "setresuid" and doc["event"]["type"] == ["change"]
    priv = doc["vigil"]["privilege"]
    assert (priv["before"]["uid"], priv["after"]["uid"], priv["gained"]) == (1000, 0, True)
    assert priv["before"]["capabilities"]["effective"] == ["CAP_SETUID", "CAP_SYS_ADMIN"]
    assert "CAP_CHECKPOINT_RESTORE" in priv["capabilities_gained"]
    assert doc["user"]["changes"] == {"id": "0"}
    assert doc["process"]["pid"] == 10
    sig = to_ecs(SecEvent(1, SecOp.SIGNAL, proc(0, 0), target=Target(99), arg1=15), HOST)
    assert sig["vigil"]["signal"] == {"number": 15, "name": "SIGTERM", "result": 0}
    assert sig["vigil"]["target"]["process"] == {"pid": 99}
    m = to_ecs(SecEvent(1, SecOp.MOUNT, proc(0, 0), errno=1, name=b"tmpfs", path=b"/mnt",
                        path2=b"none", arg2=1), HOST)
    assert m["event"]["outcome"] == "failure" and m["error"]["code"] == "EPERM"
    assert m["vigil"]["mount"] == {"mount_point": "/mnt", "source": "none", "fstype": "tmpfs",
                                   "flags": 1}
    assert cap_names(1 << 63) == ["CAP_63"]
