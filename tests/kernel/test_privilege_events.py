"""Privilege changes and tampering from the real kernel: a setuid-root helper built here and
run by the unprivileged test user, real ptrace and process_vm_writev between real processes,
real mounts, bpf() loads by a child, and signals sent to the agent. Every event is checked for
its acting process (pid, executable, user) and its own fields; the pack's rules fire on the
real thing and stay quiet for the look-alike.

One agent for the module, with the built-in rule pack (the default configuration's rules).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmod
import pytest
from agent_proc import (
    CHILD_PY,
    VIGIL,
    AgentProc,
    Child,
    Event,
    UserIds,
    get,
    run_child,
    write_config,
)

from vigil.kernel import sec_hooks

pytestmark = [pytest.mark.root]
MATRIX = pytest.mark.matrix   # every test runs on every kernel x backend too

HELPER_C = r"""
#define _GNU_SOURCE
#include <linux/capability.h>
#include <stdio.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Installed setuid root: run by a user, it takes root for good, drops one capability and
 * changes its filesystem uid, each with the call a real program would use. */
int main(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	if (setresuid(0, 0, 0))
		return 10;
	if (setgid(0))
		return 11;
	if (syscall(SYS_capget, &h, d))
		return 12;
	d[0].effective &= ~(1u << CAP_NET_RAW);
	d[0].permitted &= ~(1u << CAP_NET_RAW);
	if (syscall(SYS_capset, &h, d))
		return 13;
	setfsuid(65534);
	printf("%d\n", getpid());
	return 0;
}
"""

WAIT = 15


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-priv-", dir="/var/tmp")).resolve()
    d.chmod(0o755)
    (d / "w").mkdir()
    try:
        yield d
    finally:
        subprocess.run(["umount", "-q", str(d / "mnt")], check=False)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(scratch: Path) -> Iterator[AgentProc]:
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(scratch / "w")}])
    proc = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db").start()
    try:
        proc.probe(scratch / "w", timeout=60)
        yield proc
    finally:
        rc, _ = proc.stop()
    assert rc == 0, "\n".join(proc.stderr_lines[-20:])


@pytest.fixture(scope="module")
def helper(scratch: Path) -> Path:
    """The setuid-root helper, built with the system's compiler."""
    src, exe = scratch / "setid.c", scratch / "setid"
    src.write_text(HELPER_C)
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    exe.chmod(0o4755)
    return exe


def events_of(agent: AgentProc, pid: int, dataset: str, count: int) -> list[Event]:
    """The events of ``pid`` in ``dataset``, once ``count`` have come; then after a barrier
    all of them, so that a test sees an extra one."""
    def pred(e: Event) -> bool:
        return get(e, "event.dataset") == dataset and get(e, "process.pid") == pid
    agent.wait_for(pred, count=count, timeout=WAIT)
    agent.probe(agent.db.parent.parent / "w")
    time.sleep(0.1)
    return agent.matching(pred)


def alerts_of(agent: AgentProc, title: str, pid: int) -> list[Event]:
    return [a for a in agent.alerts if get(a, "rule.name") == title
            and get(a, "process.pid") == pid]


def child_json(code: str, user: UserIds | None = None, **kw: Any) -> tuple[Child, Any]:
    """Python ``code`` run as ``user`` (root when None); it prints one JSON value last."""
    c = run_child([CHILD_PY, "-c", "import ctypes, json, os, signal, time\n" + code],
                  user=user.ids if user else None, **kw)
    return c, json.loads(c.stdout.strip().splitlines()[-1])


@MATRIX
def test_setuid_program_and_its_calls(agent: AgentProc, helper: Path,
                                      test_user: UserIds) -> None:
    c = run_child([str(helper)], user=test_user.ids)
    assert int(c.stdout) == c.pid
    events = events_of(agent, c.pid, "vigil.privilege", 6)
    actions = [get(e, "event.action") for e in events]
    # the child's own drop from root to the test user (subprocess's user=) comes first
    start = actions.index("setid-exec")
    assert actions[start:] == ["setid-exec", "setresuid", "setgid", "capset", "setfsuid"]
    assert start >= 1 and all(a.startswith(("set", "capset")) for a in actions[:start]), actions
    dropped = events[start - 1]
    assert get(dropped, "vigil.privilege.after.euid") == test_user.uid
    assert get(dropped, "vigil.privilege.gained") is False

    exe, setres, setgid, capset, fsuid = events[start:]
    me = test_user.uid
    # exec: who called it (the test user, before), what the program gave
    assert get(exe, "user.id") == str(me)
    assert get(exe, "vigil.privilege.program") == str(helper)
    assert get(exe, "vigil.privilege.before.euid") == me
    assert get(exe, "vigil.privilege.after.euid") == 0
    assert get(exe, "vigil.privilege.after.uid") == me
    assert get(exe, "vigil.privilege.gained") is True
    assert "CAP_SYS_ADMIN" in get(exe, "vigil.privilege.after.capabilities.effective")
    for e in (setres, setgid, capset, fsuid):
        assert get(e, "process.executable") == str(helper)
        assert get(e, "event.dataset") == "vigil.privilege"
        assert get(e, "event.category") == ["process"]
        assert get(e, "event.type") == ["change"]
    assert (get(setres, "vigil.privilege.before.uid"), get(setres, "vigil.privilege.after.uid"),
            get(setres, "vigil.privilege.after.suid")) == (me, 0, 0)
    assert get(setres, "user.changes.id") == "0"
    assert (get(setgid, "vigil.privilege.before.gid"),
            get(setgid, "vigil.privilege.after.gid")) == (test_user.gid, 0)
    before = get(capset, "vigil.privilege.before.capabilities.effective")
    after = get(capset, "vigil.privilege.after.capabilities.effective")
    assert set(before) - set(after) == {"CAP_NET_RAW"}
    assert (get(fsuid, "vigil.privilege.before.fsuid"),
            get(fsuid, "vigil.privilege.after.fsuid")) == (0, 65534)
    # every change is explained: no escalation, no alert
    assert not [e for e in events if get(e, "event.action") == "privilege-escalation"]
    assert not alerts_of(agent, "Privilege Escalation to Root Without a Set-ID Call or "
                                "Setuid Program", c.pid)


@MATRIX
def test_unchanged_credentials_are_not_reported(agent: AgentProc) -> None:
    """setuid(0) by root changes nothing; an exec by root gains nothing."""
    c, _ = child_json("os.setuid(0); os.setgid(0)\nprint(json.dumps(os.getpid()))")
    assert events_of(agent, c.pid, "vigil.privilege", 0) == []


@MATRIX
def test_ptrace_attach_and_process_vm_write(agent: AgentProc, test_user: UserIds) -> None:
    """A root tracer attaches to the test user's process (an alert: another user), and a
    process writes into its own child's memory."""
    sleeper = subprocess.Popen(["/usr/bin/sleep", "30"], user=test_user.uid,
                               group=test_user.gid, extra_groups=[])
    try:
        c, rc = child_json(f"""
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(0x4206, {sleeper.pid}, 0, 0)   # PTRACE_SEIZE
print(json.dumps(r))""")
        assert rc == 0
        # the target still runs while the event is completed (its program, its user)
        (e,) = events_of(agent, c.pid, "vigil.tampering", 1)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert get(e, "event.action") == "ptrace-attach"
    assert get(e, "event.outcome") == "success"
    assert get(e, "vigil.ptrace.request") == "PTRACE_SEIZE"
    assert get(e, "vigil.target.process.pid") == sleeper.pid
    assert get(e, "vigil.target.process.executable") == "/usr/bin/sleep"
    assert get(e, "vigil.target.process.user.id") == str(test_user.uid)
    assert get(e, "user.id") == "0"
    assert get(e, "process.executable") == os.path.realpath(CHILD_PY)
    (a,) = alerts_of(agent, "Ptrace Attach to a Process of Another User", c.pid)
    assert get(a, "vigil.target.process.pid") == sleeper.pid

    # the same user's own child: reported, no alert; then process_vm_writev into it
    c2, out = child_json("""
import subprocess, sys
kid = subprocess.Popen([sys.executable, "-c", "import ctypes, sys, time\\n"
    "b = ctypes.create_string_buffer(b'before', 16)\\n"
    "print(ctypes.addressof(b), flush=True)\\n"
    "sys.stdin.readline(); print(b.value.decode(), flush=True)"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
addr = int(kid.stdout.readline())
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
data = ctypes.create_string_buffer(b"written", 16)
local, remote = iovec(ctypes.addressof(data), 8), iovec(addr, 8)
n = libc.process_vm_writev(kid.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
kid.stdin.write("\\n"); kid.stdin.flush()
seen = kid.stdout.readline().strip()
kid.wait()
print(json.dumps({"n": n, "seen": seen, "kid": kid.pid}))""", test_user)
    assert out["n"] == 8 and out["seen"] == "written"
    # beyond a kprobe's reach, and refused by trampolines of six arguments (5.10): said by
    # vigil doctor, and by the agent when it starts
    refused = any("sec_fx_vm_rw cannot attach on this kernel" in line
                  for line in agent.stderr_lines)
    if agent.running_backend() == "kprobe" or refused:
        assert events_of(agent, c2.pid, "vigil.tampering", 0) == []
        return
    (w,) = events_of(agent, c2.pid, "vigil.tampering", 1)
    assert get(w, "event.action") == "process-vm-write"
    assert get(w, "vigil.target.process.pid") == out["kid"]
    assert get(w, "vigil.process_vm_write.bytes") == 8
    assert get(w, "user.id") == str(test_user.uid)
    (a,) = alerts_of(agent, "Ptrace Attach to a Process of Another User", c2.pid)
    assert get(a, "event.action") == "process-vm-write"


@MATRIX
def test_mount_umount_and_a_refused_mount(agent: AgentProc, scratch: Path,
                                          test_user: UserIds) -> None:
    mnt = scratch / "mnt"
    mnt.mkdir(exist_ok=True)
    m = run_child(["/usr/bin/mount", "-t", "tmpfs", "-o", "size=1m", "vigiltest", str(mnt)])
    u = run_child(["/usr/bin/umount", str(mnt)])
    (em,) = events_of(agent, m.pid, "vigil.tampering", 1)
    assert get(em, "event.action") == "mount"
    assert get(em, "event.outcome") == "success"
    assert get(em, "vigil.mount.mount_point") == str(mnt)
    assert get(em, "vigil.mount.fstype") == "tmpfs"
    assert get(em, "vigil.mount.source") == "vigiltest"
    assert get(em, "process.executable") == "/usr/bin/mount"
    (eu,) = events_of(agent, u.pid, "vigil.tampering", 1)
    assert get(eu, "event.action") == "umount"
    assert get(eu, "vigil.mount.mount_point") == str(mnt)
    assert get(eu, "process.executable") == "/usr/bin/umount"
    c, err = child_json(f"""
libc = ctypes.CDLL(None, use_errno=True)
r = libc.mount(b"vigiltest", {str(mnt).encode()!r}, b"tmpfs", 0, None)
print(json.dumps(ctypes.get_errno() if r else 0))""", test_user)
    assert err == 1   # EPERM
    (ef,) = events_of(agent, c.pid, "vigil.tampering", 1)
    assert get(ef, "event.action") == "mount"
    assert get(ef, "event.outcome") == "failure"
    assert get(ef, "error.code") == "EPERM"
    assert get(ef, "user.id") == str(test_user.uid)


BPF_LOAD = """
import resource, struct
# before 5.11, BPF memory counts against the user's locked memory, which the agent (root too)
# already holds much of
try:
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY,) * 2)
except ValueError:   # a sandbox that keeps even root's hard limit: as high as allowed
    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_BPF = 321
def load(prog_type, name):
    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(struct.pack("=IIQQIIQII16s", prog_type, 2,
        ctypes.addressof(insns), ctypes.addressof(lic), 0, 0, 0, 0, 0, name), 128)
    return libc.syscall(SYS_BPF, 5, attr, 128)
sock = load(1, b"vigil_t_sock")     # BPF_PROG_TYPE_SOCKET_FILTER
raw = load(17, b"vigil_t_raw")      # BPF_PROG_TYPE_RAW_TRACEPOINT
tp = ctypes.create_string_buffer(b"sys_enter")
attr = ctypes.create_string_buffer(struct.pack("=QI", ctypes.addressof(tp), raw), 128)
link = libc.syscall(SYS_BPF, 17, attr, 128)   # BPF_RAW_TRACEPOINT_OPEN
for fd in (link, raw, sock):
    os.close(fd)
print(json.dumps([sock, raw, link]))
"""


@MATRIX
def test_bpf_programs_loaded_and_attached_by_another_process(agent: AgentProc) -> None:
    c, fds = child_json(BPF_LOAD)
    assert min(fds) >= 0, fds
    events = events_of(agent, c.pid, "vigil.tampering", 3)
    loads = [e for e in events if get(e, "event.action") == "bpf-program-load"]
    attach = [e for e in events if get(e, "event.action") == "bpf-attach"]
    assert sorted((get(e, "vigil.bpf.program.name"), get(e, "vigil.bpf.program.type"))
                  for e in loads) == [("vigil_t_raw", 17), ("vigil_t_sock", 1)]
    assert [(get(e, "vigil.bpf.command"), get(e, "vigil.bpf.tracepoint")) for e in attach] \
        == [("BPF_RAW_TRACEPOINT_OPEN", "sys_enter")]
    for e in events:
        assert get(e, "process.executable") == os.path.realpath(CHILD_PY)
        assert get(e, "user.id") == "0"
        assert get(e, "event.category") == ["configuration"]


@MATRIX
def test_signals_sent_to_the_agent(agent: AgentProc, test_user: UserIds) -> None:
    c, _ = child_json(f"os.kill({agent.pid}, signal.SIGCONT)\nprint(json.dumps(0))")
    (e,) = events_of(agent, c.pid, "vigil.tampering", 1)
    assert get(e, "event.action") == "signal-agent"
    assert get(e, "vigil.signal.name") == "SIGCONT"
    assert get(e, "vigil.target.process.pid") == agent.pid
    assert get(e, "user.id") == "0"
    # a user's signal the kernel refuses is not one the agent received
    c2, err = child_json(f"""
try:
    os.kill({agent.pid}, signal.SIGTERM)
    print(json.dumps(0))
except PermissionError:
    print(json.dumps(1))""", test_user)
    assert err == 1
    assert events_of(agent, c2.pid, "vigil.tampering", 0) == []


@MATRIX
def test_another_process_opening_the_agents_bpf_programs(agent: AgentProc) -> None:
    """bpftool lists every program by id and opens each (BPF_PROG_GET_FD_BY_ID): the agent's
    own are reported, no one else's."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], check=True, capture_output=True,
                         text=True).stdout
    names = {p["id"]: p.get("name", "") for p in json.loads(out)}
    c = run_child(["/usr/sbin/bpftool", "prog", "show"])
    events = events_of(agent, c.pid, "vigil.tampering", 1)
    assert {get(e, "event.action") for e in events} == {"bpf-vigil-object"}
    kinds = {"BPF_PROG_GET_FD_BY_ID": "program", "BPF_MAP_GET_FD_BY_ID": "map"}
    # bpftool opens each program, and each program's maps to read their metadata
    assert {(get(e, "vigil.bpf.command"), get(e, "vigil.bpf.vigil_object.kind"))
            for e in events} <= set(kinds.items())
    progs = [get(e, "vigil.bpf.vigil_object.id") for e in events
             if get(e, "vigil.bpf.vigil_object.kind") == "program"]
    # the agent's programs only: one handle_exec (other agents may run beside this one)
    assert [names.get(i) for i in progs].count("handle_exec") == 1
    assert {get(e, "process.executable") for e in events} == {"/usr/sbin/bpftool"}
    alerts = alerts_of(agent, "Vigil's BPF Programs, Maps or Links Opened by Another Process",
                       c.pid)
    assert alerts and get(alerts[0], "vigil.rule.level") == "medium"


ESCALATION = "Privilege Escalation to Root Without a Set-ID Call or Setuid Program"
MODULE_ALERT = "Kernel Module Loaded by a Program Other Than a Module Loader"
FINIT_MODULE = 313   # x86_64


def finit_module(path: Path) -> tuple[Child, int]:
    """finit_module(2) called by a Python child: a loader of its own, as a rootkit's is."""
    return child_json(f"""
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open({str(path)!r}, os.O_RDONLY)
r = libc.syscall({FINIT_MODULE}, fd, b"", 0)
print(json.dumps(ctypes.get_errno() if r else 0))""")


@MATRIX
def test_module_loads_and_an_escalation_no_call_explains(agent: AgentProc, scratch: Path,
                                                         test_user: UserIds) -> None:
    """The test module (tests/kmod): loaded by a program of its own (an alert) and by insmod
    (none); a load that fails; then a write to its /proc file makes the test user's process
    root through commit_creds, with no set*id call: an escalation on every backend (seen in
    commit_creds, or inferred from the process's next event on the tracepoint backend)."""
    if not kmod.module_support():
        # this machine's kernel loads no module at all: vigil doctor says so
        out = subprocess.run([str(VIGIL), "doctor"], capture_output=True, text=True).stdout
        assert sec_hooks.NO_MODULES in out
        return
    ko = kmod.escalate_module()
    assert ko is not None, "the VM matrix builds the test module for every kernel it boots"
    not_a_module = scratch / "not-a-module.ko"
    not_a_module.write_bytes(b"\x7fELF" + b"\0" * 60)
    c, err = finit_module(not_a_module)
    assert err != 0
    (failed,) = events_of(agent, c.pid, "vigil.tampering", 1)
    assert get(failed, "event.action") == "module-load"
    assert get(failed, "event.outcome") == "failure"
    assert get(failed, "error.code") == errno.errorcode[err]

    c, err = finit_module(ko)
    assert err == 0
    try:
        (loaded,) = events_of(agent, c.pid, "vigil.tampering", 1)
        assert get(loaded, "event.action") == "module-load"
        assert get(loaded, "event.outcome") == "success"
        assert get(loaded, "vigil.kernel_module.name") == kmod.NAME
        assert get(loaded, "process.executable") == os.path.realpath(CHILD_PY)
        assert alerts_of(agent, MODULE_ALERT, c.pid)

        esc, uid = child_json(f"""
with open({str(kmod.PROC_FILE)!r}, "w") as f:
    f.write("1")
print(json.dumps(os.getuid()))""", test_user)
        assert uid == 0
        (e,) = [x for x in events_of(agent, esc.pid, "vigil.privilege", 1)
                if get(x, "event.action") == "privilege-escalation"]
        assert get(e, "vigil.privilege.before.uid") == test_user.uid
        assert get(e, "vigil.privilege.after.uid") == 0
        assert get(e, "vigil.privilege.after.euid") == 0
        assert get(e, "vigil.privilege.gained") is True
        assert get(e, "vigil.privilege.inferred") is (agent.running_backend() == "tracepoint")
        assert get(e, "process.pid") == esc.pid
        assert get(e, "process.executable") == os.path.realpath(CHILD_PY)
        (a,) = alerts_of(agent, ESCALATION, esc.pid)
        assert get(a, "vigil.rule.level") == "high"
    finally:
        subprocess.run(["rmmod", kmod.NAME], check=True)

    # kmod's insmod: reported, not an alert
    i = run_child(["/usr/sbin/insmod", str(ko)])
    subprocess.run(["rmmod", kmod.NAME], check=True)
    (by_insmod,) = events_of(agent, i.pid, "vigil.tampering", 1)
    assert get(by_insmod, "vigil.kernel_module.name") == kmod.NAME
    assert get(by_insmod, "process.executable") == os.path.realpath("/usr/sbin/insmod")
    assert not alerts_of(agent, MODULE_ALERT, i.pid)


@MATRIX
def test_pivot_root_in_a_mount_namespace_of_its_own(agent: AgentProc, scratch: Path) -> None:
    """A child enters a new mount namespace, mounts a tmpfs and pivots its root into it (as a
    container runtime does); its namespace goes with it, the host's mounts are untouched."""
    new_root = scratch / "newroot"
    new_root.mkdir(exist_ok=True)
    c, r = child_json(f"""
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_REC, MS_PRIVATE, SYS_PIVOT_ROOT = 0x20000, 0x4000, 0x40000, 155
assert libc.unshare(CLONE_NEWNS) == 0
assert libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0
root = {str(new_root).encode()!r}
assert libc.mount(b"vigilroot", root, b"tmpfs", 0, None) == 0
os.mkdir(root + b"/old")
r = libc.syscall(SYS_PIVOT_ROOT, root, root + b"/old")
print(json.dumps(ctypes.get_errno() if r else 0))""")
    assert r == 0
    events = events_of(agent, c.pid, "vigil.tampering", 3)
    by = {get(e, "event.action"): e for e in events}
    assert sorted(by) == ["mount", "pivot-root"], [get(e, "event.action") for e in events]
    mounts = [e for e in events if get(e, "event.action") == "mount"]
    assert [get(m, "vigil.mount.fstype") for m in mounts].count("tmpfs") == 1
    p = by["pivot-root"]
    assert get(p, "event.outcome") == "success"
    assert get(p, "vigil.mount.new_root") == str(new_root)
    assert get(p, "vigil.mount.put_old") == f"{new_root}/old"
    assert get(p, "process.executable") == os.path.realpath(CHILD_PY)
    assert get(p, "user.id") == "0"
