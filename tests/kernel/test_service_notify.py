"""The real agent as systemd runs it: the notification protocol against a socket the test
creates (READY=1 only once events are watched, WATCHDOG=1 from the run loop, RELOADING=1 and
READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM, each from the agent's own pid as
NotifyAccess=main requires), and the agent working under the sandbox the shipped unit asks for
(its capability bounding set and the seccomp filters systemd installs for
MemoryDenyWriteExecute=, SystemCallFilter=, RestrictAddressFamilies=, RestrictNamespaces=,
RestrictSUIDSGID=; PID 1 here is not systemd, so the unit itself cannot be started).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from agent_proc import BACKEND_LINE_RE, VIGIL, get, scaled, write_config

pytestmark = [pytest.mark.root]

START_TIMEOUT = float(os.environ.get("VIGIL_TEST_START_TIMEOUT", "60"))
_UCRED = struct.Struct("iII")
Msg = dict[str, str]


class NotifySocket:
    """A socket like systemd's notify socket (SOCK_DGRAM, SO_PASSCRED); every message kept
    with its sender's pid, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[Msg, int]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data, anc, _f, _a = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(payload[:_UCRED.size])[0]
            msg = dict(ln.split("=", 1) for ln in data.decode().splitlines() if "=" in ln)
            with self._cond:
                self.messages.append((msg, pid))
                self._cond.notify_all()

    def wait(self, pred: Callable[[Msg], bool], after: int = 0, timeout: float = 30,
             alive: Callable[[], None] | None = None) -> int:
        """The index of the first message from index ``after`` on that matches ``pred``."""
        deadline = time.monotonic() + scaled(timeout)
        with self._cond:
            while True:
                for i in range(after, len(self.messages)):
                    if pred(self.messages[i][0]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such notification after {timeout}s; got "
                                         f"{[m for m, _ in self.messages[after:]][-10:]}")
                if alive is not None:
                    alive()
                self._cond.wait(min(left, 0.2))

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()


class ServiceAgent:
    """``vigil run`` started the way systemd starts it: $NOTIFY_SOCKET and $WATCHDOG_USEC
    set, stderr to a file (so what it wrote before a notification is there when the
    notification arrives), JSON events read from stdout."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], stderr: Path) -> None:
        self.stderr_path = stderr
        self._err = open(stderr, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=self._err,
                                     env=env, cwd="/")
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()

    def stderr(self) -> list[str]:
        return self.stderr_path.read_text(errors="replace").splitlines()

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"vigil exited ({self.proc.returncode}):\n"
                                 + "\n".join(self.stderr()[-60:]))

    def wait_file(self, path: Path, action: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + scaled(timeout)
        with self._cond:
            while True:
                for ev in self.events:
                    if get(ev, "file.path") == str(path) and get(ev, "event.action") == action:
                        return ev
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {action} event for {path} within {timeout}s")
                self.alive()
                self._cond.wait(0.2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(scaled(60))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._thread.join(10)
        self._err.close()
        return rc


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-svc-", dir="/var/tmp")).resolve()
    (d / "w").mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _start(scratch: Path, wrap: Sequence[str] = (), settings: dict[str, object] | None = None,
           **env: str) -> tuple[ServiceAgent, NotifySocket]:
    """The agent watching ``scratch/w``; ``settings``: top-level configuration keys (default:
    no rules, metrics nor health check)."""
    if settings is None:
        settings = {"rules": {"enabled": False}, "metrics": False, "health": False}
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(scratch / "w")}],
                       **settings)
    notify = NotifySocket(scratch / "notify")
    full_env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), **env}
    full_env.pop("WATCHDOG_PID", None)
    agent = ServiceAgent([*wrap, str(VIGIL), "run", "--config", str(cfg), "-o", "json",
                          "--no-exec", "--no-network", "--no-shell"],
                         full_env, scratch / "stderr.txt")
    return agent, notify


def _ready(m: Msg) -> bool:
    return m.get("READY") == "1"


def _touch_and_check(agent: ServiceAgent, path: Path) -> None:
    """A file created and removed right now is reported: the agent is watching."""
    path.write_text("x")
    path.unlink()
    agent.wait_file(path, "created")
    agent.wait_file(path, "deleted")


def test_ready_watchdog_reload_and_stop(scratch: Path) -> None:
    agent, notify = _start(scratch, WATCHDOG_USEC="2000000")
    try:
        i_ready = notify.wait(_ready, timeout=START_TIMEOUT, alive=agent.alive)
        # stderr is a file: the backend line, written before READY=1 was sent, is in it now
        backend = [ln for ln in agent.stderr() if BACKEND_LINE_RE.match(ln)]
        assert backend, "READY=1 came before the agent said which backend it attached:\n" \
            + "\n".join(agent.stderr())
        _touch_and_check(agent, scratch / "w" / "right-after-ready")
        msg, pid = notify.messages[i_ready]
        assert pid == agent.proc.pid, "READY=1 not from the main pid (NotifyAccess=main)"
        assert "backend" in msg.get("STATUS", ""), msg

        # WATCHDOG=1 from the run loop, repeatedly (WATCHDOG_USEC=2 s: every ~1 s)
        first = notify.wait(lambda m: m.get("WATCHDOG") == "1", after=i_ready,
                            alive=agent.alive)
        notify.wait(lambda m: m.get("WATCHDOG") == "1", after=first + 1, alive=agent.alive)
        assert all(pid == agent.proc.pid for m, pid in notify.messages
                   if m.get("WATCHDOG") == "1")

        # SIGHUP: RELOADING=1 (with the monotonic time systemd 253+ wants), then READY=1
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        mark = len(notify.messages)
        agent.proc.send_signal(signal.SIGHUP)
        i_rel = notify.wait(lambda m: m.get("RELOADING") == "1", after=mark,
                            alive=agent.alive)
        assert int(notify.messages[i_rel][0]["MONOTONIC_USEC"]) >= before
        notify.wait(_ready, after=i_rel + 1, alive=agent.alive)
        _touch_and_check(agent, scratch / "w" / "after-reload")

        # SIGTERM: STOPPING=1, then a clean exit with the summary line
        mark = len(notify.messages)
        agent.proc.send_signal(signal.SIGTERM)
        notify.wait(lambda m: m.get("STOPPING") == "1", after=mark, timeout=60)
        rc = agent.stop()
        assert rc == 0, "\n".join(agent.stderr()[-20:])
        assert any(re.match(r"^vigil: \d+ events delivered", ln) for ln in agent.stderr())
        readies = [i for i, (m, _) in enumerate(notify.messages) if _ready(m)]
        assert len(readies) == 2, notify.messages  # at start, after the reload; no other
    finally:
        agent.stop()
        notify.close()


# -- the unit's sandbox, without systemd ------------------------------------------------------

# linux/capability.h
_CAP_NAMES = ("chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap "
              "linux_immutable net_bind_service net_broadcast net_admin net_raw ipc_lock "
              "ipc_owner sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin "
              "sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease audit_write "
              "audit_control setfcap mac_override mac_admin syslog wake_alarm block_suspend "
              "audit_read perfmon bpf checkpoint_restore")
CAPS = _CAP_NAMES.split()

# Run by the system Python (python3-seccomp): the capability bounding set reduced, then the
# filters systemd installs for the unit's options (src/shared/seccomp-util.c: mmap W+X,
# mprotect/pkey_mprotect +X and shmat SHM_EXEC refused; socket() of other families refused
# with EAFNOSUPPORT; clone/unshare with namespace flags and setns refused, clone3 ENOSYS;
# chmod with S_ISUID/S_ISGID refused; the denied groups' calls EPERM; non-native ABIs
# killed), then exec of the agent, which inherits all of it.
SANDBOX = r"""
import ctypes, json, os, resource, sys
import seccomp
spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
try:
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY,) * 2)
except ValueError:
    pass  # no CAP_SYS_RESOURCE here; kernels >= 5.11 do not charge BPF to it
os.umask(int(spec["umask"], 8))
# ProtectSystem=strict, ProtectHome=read-only, ProtectKernelTunables=,
# ProtectControlGroups=: a mount namespace where every mount is read-only (stricter than
# systemd: /dev and /proc too) but the ReadWritePaths= (StateDirectory=, RuntimeDirectory=)
if spec["writable"]:
    def check(r, what):
        if r != 0:
            sys.exit(f"{what}: errno {ctypes.get_errno()}")
    check(libc.unshare(0x20000), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, 0x4000 | 0x80000, None), "mount --make-rslave /")
    for path in spec["writable"]:
        check(libc.mount(path.encode(), path.encode(), None, 0x1000 | 0x4000, None),
              f"bind {path}")
    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]
    def setattr_(path, flags, attr_set, attr_clr):
        a = MountAttr(attr_set, attr_clr, 0, 0)
        check(libc.syscall(442, -100, path.encode(), flags, ctypes.byref(a),  # mount_setattr
                           ctypes.sizeof(a)), f"mount_setattr {path}")
    setattr_("/", 0x8000, 1, 0)                      # AT_RECURSIVE, MOUNT_ATTR_RDONLY
    for path in spec["writable"]:
        setattr_(path, 0, 0, 1)
last = int(open("/proc/sys/kernel/cap_last_cap").read())
for cap in range(last + 1):
    if cap not in spec["caps"] and libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit(f"PR_CAPBSET_DROP {cap}: errno {ctypes.get_errno()}")
f = seccomp.SyscallFilter(seccomp.ALLOW)
EPERM, A, MEQ = seccomp.ERRNO(1), seccomp.Arg, seccomp.MASKED_EQ
if spec["mdwe"]:
    f.add_rule(EPERM, "mmap", A(2, MEQ, 6, 6))
    f.add_rule(EPERM, "mprotect", A(2, MEQ, 4, 4))
    f.add_rule(EPERM, "pkey_mprotect", A(2, MEQ, 4, 4))
    f.add_rule(EPERM, "shmat", A(2, MEQ, 0o100000, 0o100000))
denied = 0
for name in spec["deny"]:
    try:
        f.add_rule(EPERM, name)
        denied += 1
    except Exception:
        pass  # not a system call of this architecture
assert denied, spec["deny"]
for af in range(64):
    if af not in spec["families"]:
        f.add_rule(seccomp.ERRNO(97), "socket", A(0, seccomp.EQ, af))
f.add_rule(seccomp.ERRNO(97), "socket", A(0, seccomp.GE, 64))
if spec["no_namespaces"]:
    f.add_rule(seccomp.ERRNO(38), "clone3")
    f.add_rule(EPERM, "setns")
    for flag in (0x80, 0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000,
                 0x40000000):
        f.add_rule(EPERM, "clone", A(0, MEQ, flag, flag))
        f.add_rule(EPERM, "unshare", A(0, MEQ, flag, flag))
if spec["no_suid"]:
    for name, pos in (("chmod", 1), ("fchmod", 1), ("fchmodat", 2)):
        for bit in (0o4000, 0o2000):
            f.add_rule(EPERM, name, A(pos, MEQ, bit, bit))
f.load()  # sets no_new_privs too (NoNewPrivileges=yes)
os.execv(sys.argv[2], sys.argv[2:])
"""


def unit_settings(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def sandbox_spec(settings: dict[str, str]) -> dict[str, Any]:
    """What the wrapper above enforces, read from the unit's settings."""
    caps = [CAPS.index(c.lower().removeprefix("cap_"))
            for c in settings["CapabilityBoundingSet"].split()]
    deny: list[str] = []
    value = settings["SystemCallFilter"]
    assert value.startswith("~"), value
    for group in value[1:].split():
        out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", group],
                             capture_output=True, text=True, check=True).stdout
        deny += [ln.strip() for ln in out.splitlines()
                 if ln.strip() and not ln.strip().startswith(("#", "@"))]
    families = [int(getattr(socket, f)) for f in settings["RestrictAddressFamilies"].split()]
    assert settings["NoNewPrivileges"] == "yes" and settings["ProtectSystem"] == "strict"
    return {"caps": caps, "deny": deny, "families": families, "umask": settings["UMask"],
            "mdwe": settings.get("MemoryDenyWriteExecute") == "yes",
            "no_namespaces": settings.get("RestrictNamespaces") == "yes",
            "no_suid": settings.get("RestrictSUIDSGID") == "yes"}


def test_agent_runs_under_the_units_sandbox(scratch: Path) -> None:
    from vigil.service import shipped_unit

    probe = subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], capture_output=True,
                           check=False)
    assert probe.returncode == 0, "the system Python lacks seccomp: apt-get install " \
        "python3-seccomp (./do setup installs it)"
    spec = sandbox_spec(unit_settings(shipped_unit()))
    # the state directory and the runtime directory (TMPDIR) systemd would create
    state, runtime = scratch / "state", scratch / "run"
    for d in (state, runtime):
        d.mkdir(mode=0o700)
    spec["writable"] = [str(state), str(runtime)]
    wrap = ["/usr/bin/python3", "-c", SANDBOX, json.dumps(spec)]
    # the service's default work: rules, metrics over TCP, the health check in the state dir
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent, notify = _start(scratch, wrap, {"metrics": {"port": port},
                                           "health": {"interval": 0}}, TMPDIR=str(runtime))
    try:
        notify.wait(_ready, timeout=START_TIMEOUT, alive=agent.alive)
        status = Path(f"/proc/{agent.proc.pid}/status").read_text()
        bounding = int(re.search(r"^CapBnd:\s*([0-9a-f]+)", status, re.M)[1], 16)  # type: ignore[index]
        assert bounding == sum(1 << c for c in spec["caps"]), status
        assert re.search(r"^NoNewPrivs:\s*1", status, re.M), status
        assert re.search(r"^Seccomp:\s*2", status, re.M), status
        mounts = Path(f"/proc/{agent.proc.pid}/mounts").read_text().splitlines()
        ro = {ln.split()[1]: "ro" in ln.split()[3].split(",") for ln in mounts}
        assert ro["/"] and not ro[str(state)], mounts
        _touch_and_check(agent, scratch / "w" / "sandboxed")
        # the health check (create, modify, chmod, delete in state/health) passed: the
        # metrics endpoint says so
        deadline = time.monotonic() + scaled(30)
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            if re.search(r"^vigil_health_check_ok 1(\.0)?$", text, re.M):
                break
            assert time.monotonic() < deadline, "the health check did not pass in the " \
                "sandbox:\n" + "\n".join(ln for ln in text.splitlines() if "health" in ln) \
                + "\n" + "\n".join(agent.stderr()[-20:])
            agent.alive()
            time.sleep(0.5)
        rc = agent.stop()
        assert rc == 0, "\n".join(agent.stderr()[-20:])
        assert any(re.match(r"^vigil: \d+ events delivered", ln) for ln in agent.stderr())
    finally:
        agent.stop()
        notify.close()
