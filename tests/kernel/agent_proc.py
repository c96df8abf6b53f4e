"""The real ``vigil run`` as a subprocess for kernel tests, and the children that act under it.

Owns starting the agent, collecting its ECS JSON lines on a reader thread, waiting for events,
readiness and settling probes, stopping it and parsing its summary line; and running child
processes (optionally as an unprivileged user) whose pid, comm and executable are known exactly.
Does not own what the tests assert.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
VIGIL = ROOT / ".venv" / "bin" / "vigil"
# Children run the system interpreter: the venv's python lives under /root (mode 0700), which
# the unprivileged test user cannot reach.
CHILD_PY = "/usr/bin/python3"

Event = dict[str, Any]
# How many times slower than a usual machine this one runs the tests: the kernel matrix's
# software-emulated VMs set it (tests/vm/guest.py). Waits whose length depends on the machine's
# speed rather than on what a test checks (events to arrive, a child to finish, the agent to
# drain its buffer and stop) are multiplied by it.
TIME_SCALE = float(os.environ.get("VIGIL_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIME_SCALE

Pred = Callable[[Event], bool]

SUMMARY_RE = re.compile(
    r"^vigil: (?P<delivered>\d+) events delivered \((?P<kinds>[^)]*)\) in (?P<secs>[\d.]+)s; "
    r"(?P<dropped>\d+) dropped by the kernel side \((?P<kernel>file \d+, exec \d+, exit \d+"
    r"[^)]*)\)(?:; (?P<user>\d+) lost in user space \((?P<userkinds>[^)]*)\))?"
    r"(?:; incomplete \((?P<partial>[^)]*)\))?(?:; baseline \((?P<baseline>[^)]*)\))?"
    r"(?:; rules \((?P<rules>[^)]*)\))?$")
_COUNT_RE = re.compile(r"(\w+) (\d+)")


def get(ev: Event, dotted: str, default: Any = None) -> Any:
    """``get(ev, "process.parent.pid")``: a nested field, or ``default`` when absent."""
    cur: Any = ev
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def is_file_event(ev: Event) -> bool:
    return get(ev, "event.dataset") == "vigil.file"


def under(prefix: str | Path) -> Pred:
    """File events whose path (or, for renames and links, old path) is at or below ``prefix``."""
    p = str(prefix).rstrip("/")

    def pred(ev: Event) -> bool:
        if not is_file_event(ev):
            return False
        for key in ("file.path", "vigil.file.original_path"):
            v = get(ev, key)
            if isinstance(v, str) and (v == p or v.startswith(p + "/")):
                return True
        return False

    return pred


# The kernel matrix's tailored-BTF cells (tests/vm, ./do test-kernels --btf tailored) set this to
# the archive key every agent must relocate against (the kernel's own BTF hidden): each agent's
# start-up log is checked for it, so the suite cannot pass on the kernel's own BTF unnoticed.
EXPECT_BTF_ENV = "VIGIL_TEST_EXPECT_BTF"
BACKEND_ENV = "VIGIL_TEST_BACKEND"
BACKEND_LINE_RE = re.compile(r"^vigil: (?P<backend>[a-z]+) backend\b")


class WrongBtfError(Exception):
    """An agent of a tailored-BTF cell did not run on that BTF (not an AssertionError, which
    the callers of ``probe`` take for "not ready yet")."""


def tailored_btf_problem(stderr_lines: Sequence[str], key: str) -> str | None:
    """None when an agent's stderr says it used the tailored BTF of archive key ``key`` and
    started a backend that works on such a BTF (kprobe or tracepoint); otherwise what is wrong.
    """
    using = [ln for ln in stderr_lines if ln.startswith("vigil: using ")]
    if not any(ln.startswith("vigil: using tailored BTF ") and ln.endswith(f"key {key})")
               for ln in using):
        return (f"the agent did not say it used the tailored BTF {key}: "
                + ("; ".join(using) or "no 'vigil: using ... BTF' line"))
    backends = [m["backend"] for ln in stderr_lines if (m := BACKEND_LINE_RE.match(ln))]
    if not backends:
        return "the agent named no backend"
    if backends[0] not in ("kprobe", "tracepoint"):
        return f"the {backends[0]} backend started on a tailored BTF"
    return None


@dataclass
class Summary:
    delivered: int
    dropped: int
    file: int
    exec: int
    exit: int
    inflight: int
    unknown: int  # perf event buffer: samples perf lost that the BPF side could not count
    line: str
    # every "name N" of the line: kernel kinds (wfiles, wfiles_evicted, ...), user space's
    # (malformed, open_files_evicted) and the incomplete work (path_truncated, ...)
    counts: dict[str, int] = field(default_factory=dict)
    lost_in_user_space: int = 0


# Runs a command in a mount namespace of its own where /sys/kernel/btf is empty: to Vigil and
# to libbpf the kernel has no BTF, as on a kernel built without CONFIG_DEBUG_INFO_BTF.
WITHOUT_KERNEL_BTF = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                      'mount -t tmpfs none /sys/kernel/btf && exec "$@"', "sh")


def write_config(path: Path, scratch: Path, directories: list[dict[str, object]],
                 **extra: object) -> Path:
    """A ``vigil run`` config at ``path``: the baseline and state under ``scratch/state``,
    no scheduled scans, ``directories`` watched, ``extra`` top-level keys (``rules``...)."""
    path.write_text(yaml.safe_dump({
        "database": str(scratch / "state" / "baseline.db"),
        "state_dir": str(scratch / "state"),
        "scan": {"interval": 0},
        "directories": directories,
        **extra,
    }))
    return path


@dataclass
class AgentProc:
    """One running ``vigil run ... -o json``; events accumulate in ``self.events``, alerts
    (``event.kind: alert``, from the rules) apart in ``self.alerts``."""

    args: Sequence[str]
    db: Path
    events: list[Event] = field(default_factory=list)
    alerts: list[Event] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)
    bad_lines: list[bytes] = field(default_factory=list)
    keep: Pred | None = None  # when set, only matching events are kept (cheap for bursts)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _proc: subprocess.Popen[bytes] | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _seq: int = 0
    _btf_checked: bool = False

    verbose: bool = False  # `vigil -v run`: scan completions and the like logged on stderr
    wrap: Sequence[str] = ()  # argv that execs the agent (same pid), e.g. WITHOUT_KERNEL_BTF
    # `vigil run --backend`: None takes VIGIL_TEST_BACKEND (the kernel matrix runs the suite
    # once per backend, tests/vm) and, without it, the agent's own choice; "auto" is always the
    # agent's choice (a test whose setting allows one backend only, e.g. a tailored BTF).
    backend: str | None = None
    # The Prometheus endpoint (127.0.0.1:9108 by default): off unless a test is about it, as
    # several agents run at once and only one could serve the port.
    metrics: bool = False

    def start(self) -> AgentProc:
        # VIGIL_TEST_EVENT_BUFFER=perf: through the perf event array kernels < 5.8 use.
        backend = self.backend or os.environ.get(BACKEND_ENV)
        buffer = os.environ.get("VIGIL_TEST_EVENT_BUFFER")
        cmd = [str(VIGIL), *(["-v"] if self.verbose else []), "run", *self.args, "-o", "json",
               "--db", str(self.db), *(["--backend", backend] if backend else []),
               *(["--event-buffer", buffer] if buffer and "--event-buffer" not in self.args
                 else []), *([] if self.metrics else ["--no-metrics"])]
        self._proc = subprocess.Popen([*self.wrap, *cmd], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, cwd="/")
        for target in (self._read_stdout, self._read_stderr):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                # keep reading (a dead reader would block the agent on a full pipe) and let
                # stop() fail the test with the line
                with self._cond:
                    self.bad_lines.append(line)
                continue
            is_alert = get(ev, "event.kind") == "alert"
            if not is_alert and self.keep is not None and not self.keep(ev):
                continue
            with self._cond:
                (self.alerts if is_alert else self.events).append(ev)
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            with self._cond:
                self.stderr_lines.append(line.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()

    def running_backend(self, timeout: float = 10) -> str:
        """The backend the agent says it started (its "vigil: NAME backend ..." line)."""
        deadline = time.monotonic() + scaled(timeout)
        with self._cond:
            while True:
                for line in self.stderr_lines:
                    if m := BACKEND_LINE_RE.match(line):
                        return m["backend"]
                if time.monotonic() > deadline:
                    raise AssertionError("the agent did not say which backend runs:\n"
                                         + "\n".join(self.stderr_lines[-20:]))
                self._cond.wait(0.2)

    def _alive_check(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise AssertionError(f"vigil exited early ({self._proc.returncode}): "
                                 + "\n".join(self.stderr_lines[-20:]))

    def matching(self, pred: Pred) -> list[Event]:
        with self._cond:
            return [e for e in self.events if pred(e)]

    def wait_log(self, prefix: str, timeout: float = 60, count: int = 1) -> list[str]:
        """Stderr lines starting with ``vigil: <prefix>`` once ``count`` have been written."""
        deadline = time.monotonic() + scaled(timeout)
        with self._cond:
            while True:
                found = [ln for ln in self.stderr_lines if ln.startswith(f"vigil: {prefix}")]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {prefix!r} log line after {timeout}s; stderr:\n"
                                         + "\n".join(self.stderr_lines[-20:]))
                self._alive_check()
                self._cond.wait(min(left, 0.2))

    def wait_for(self, pred: Pred, timeout: float = 10, count: int = 1,
                 scale: bool = True, alerts: bool = False) -> list[Event]:
        """Every event (with ``alerts``: alert) matching ``pred`` once at least ``count`` have
        arrived; fails after ``timeout`` seconds (``scaled`` unless ``scale`` is false)."""
        timeout = scaled(timeout) if scale else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in (self.alerts if alerts else self.events) if pred(e)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {count} "
                                         f"event(s); have {len(found)}")
                self._alive_check()
                self._cond.wait(min(left, 0.2))

    def probe(self, directory: Path, timeout: float = 15, tries: float = 0.2,
              scale: bool = True) -> None:
        """Create and delete a sentinel in ``directory`` until the agent reports it: both the
        readiness check at start and the "everything before this was processed" barrier.
        ``timeout`` is ``scaled`` unless ``scale`` is false (a limit already set for this
        machine, VIGIL_TEST_START_TIMEOUT)."""
        self._seq += 1
        sentinel = str(directory / f".vigil-probe-{os.getpid()}-{self._seq}")

        def seen(ev: Event) -> bool:
            return (is_file_event(ev) and get(ev, "event.action") == "deleted"
                    and get(ev, "file.path") == sentinel)

        deadline = time.monotonic() + (scaled(timeout) if scale else timeout)
        while True:
            with open(sentinel, "w"):
                pass
            os.unlink(sentinel)
            try:
                self.wait_for(seen, timeout=tries, scale=False)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        self._check_btf()

    def _check_btf(self) -> None:
        """Once the agent is ready (its BTF and backend lines are out): in the matrix's
        tailored-BTF cells, that it runs on the expected tailored BTF."""
        key = os.environ.get(EXPECT_BTF_ENV)
        if self._btf_checked or not key:
            return
        self._btf_checked = True
        deadline = time.monotonic() + 10  # stderr has its own reader thread
        with self._cond:
            while (problem := tailored_btf_problem(self.stderr_lines, key)) is not None \
                    and time.monotonic() < deadline:
                self._cond.wait(0.2)
        if problem is not None:
            raise WrongBtfError(problem + "; its stderr:\n" + "\n".join(self.stderr_lines[-20:]))

    def settle(self, directory: Path, pred: Pred | None = None) -> list[Event]:
        """After a barrier probe in ``directory``: every event matching ``pred`` (default: file
        events under ``directory``), without the probe's own."""
        self.probe(directory)
        time.sleep(0.05)  # events of other CPUs submitted just before the probe
        pred = pred or under(directory)
        return [e for e in self.matching(pred)
                if ".vigil-probe-" not in str(get(e, "file.path", ""))]

    def stop(self, timeout: float = 60) -> tuple[int, Summary | None]:
        """SIGTERM, wait, and the exit code with the parsed summary line."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        try:
            rc = self._proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self._proc.kill()
            rc = self._proc.wait()
        for t in self._threads:
            t.join(30)
        assert not self.bad_lines, f"vigil wrote {len(self.bad_lines)} line(s) that are not " \
            f"JSON, the first: {self.bad_lines[0][:2000]!r}"
        summary = None
        for line in self.stderr_lines:
            m = SUMMARY_RE.match(line)
            if m:
                counts = {k: int(v) for part in ("kernel", "userkinds", "partial", "baseline",
                                                 "rules")
                          for k, v in _COUNT_RE.findall(m[part] or "")}
                summary = Summary(int(m["delivered"]), int(m["dropped"]), counts["file"],
                                  counts["exec"], counts["exit"], counts.get("inflight", 0),
                                  counts.get("unknown", 0), line, counts, int(m["user"] or 0))
        return rc, summary


# ---------------------------------------------------------------------------------------------
# The test user and the scratch area


@dataclass(frozen=True)
class UserIds:
    name: str
    uid: int
    gid: int

    @property
    def ids(self) -> tuple[int, int]:
        return (self.uid, self.gid)


@dataclass(frozen=True)
class Area:
    root: Path
    watched: Path  # <root>/w: what the session agent watches
    outside: Path  # <root>/o: an unwatched sibling

    def new_dirs(self, name: str, owner: UserIds | None) -> tuple[Path, Path]:
        """A fresh pair (watched subdir, unwatched subdir) for one test, owned by ``owner``."""
        pair = (self.watched / name, self.outside / name)
        for d in pair:
            d.mkdir()
            if owner is not None:
                os.chown(d, owner.uid, owner.gid)
        return pair


# ---------------------------------------------------------------------------------------------
# Children


# Prepended to every Python child: raw syscalls by number (x86_64), so the test knows exactly
# which syscall ran instead of guessing what glibc picks.
PRELUDE = r"""
import ctypes, os, sys
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
NR = dict(open=2, ftruncate=77, truncate=76, rename=82, mkdir=83, rmdir=84, creat=85, link=86,
          unlink=87, symlink=88, chmod=90, fchmod=91, chown=92, fchown=93, lchown=94,
          setxattr=188, lsetxattr=189, fsetxattr=190, removexattr=197, lremovexattr=198,
          fremovexattr=199, openat=257, mkdirat=258, fchownat=260, unlinkat=263, renameat=264,
          linkat=265, symlinkat=266, fchmodat=268, renameat2=316, openat2=437, fchmodat2=452)
AT_FDCWD = -100
AT_REMOVEDIR = 0x200
AT_SYMLINK_NOFOLLOW = 0x100
def _arg(a):
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, int):
        return ctypes.c_long(a)
    return a
def sc(name, *args):
    r = _libc.syscall(ctypes.c_long(NR[name]), *[_arg(a) for a in args])
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
def try_sc(name, *args):
    try:
        sc(name, *args)
        return 0
    except OSError as e:
        return e.errno
"""


@dataclass(frozen=True)
class Child:
    pid: int
    ppid: int
    uid: int
    comm: str
    exe: str
    stdout: str


def run_child(argv: Sequence[str], *, user: tuple[int, int] | None = None,
              cwd: str | Path | None = None, expect_rc: int | None = 0,
              timeout: float = 30) -> Child:
    """Run ``argv`` (argv[0] an absolute path) to completion as ``user`` (uid, gid; no
    supplementary groups) or as root. Its pid is known, its parent is this process."""
    kw: dict[str, Any] = {}
    if user is not None:
        kw = {"user": user[0], "group": user[1], "extra_groups": []}
    p = subprocess.Popen(list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         **kw)
    out, err = p.communicate(timeout=scaled(timeout))
    if expect_rc is not None:
        assert p.returncode == expect_rc, f"{argv!r} exited {p.returncode}: {err.decode()}"
    return Child(pid=p.pid, ppid=os.getpid(), uid=0 if user is None else user[0],
                 comm=os.path.basename(argv[0])[:15], exe=os.path.realpath(argv[0]),
                 stdout=out.decode())


def py_child(code: str, **kw: Any) -> Child:
    """A Python child running PRELUDE + ``code``."""
    return run_child([CHILD_PY, "-c", PRELUDE + code], **kw)


def of_pid(events: Iterable[Event], pid: int) -> list[Event]:
    return [e for e in events if get(e, "process.pid") == pid]


def actions(events: Iterable[Event]) -> list[str]:
    return [get(e, "event.action") for e in events]
