"""The end-to-end self check: a known process makes four known changes in a directory the
agent watches, and all four must come back through the kernel, the ring and the pipeline.

Owns the check's steps and verdict. At start and then every ``health.interval`` seconds, a
forked child of the agent (the kernel side ignores the agent's own operations, so its child
acts for it) creates, modifies, chmods and deletes one file in the health directory. The
events must arrive, naming the child's pid, within ``health.timeout`` seconds (Wazuh's audit
health check does the same). A failure is an alert (rule ``vigil-health-check``) and a
metric; a success a log line and the metric. Events in the health directory, and the child's
exit, are the check's own: taken out of the stream before rules and outputs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from vigil.config.model import HealthConfig
from vigil.events.model import Event, ExitEvent, FileEvent, FileOp
from vigil.outputs.ecs import iso
from vigil.rules.alert import Alert, RuleInfo

log = logging.getLogger(__name__)

STEPS: Final = (FileOp.CREATE, FileOp.MODIFY, FileOp.CHMOD, FileOp.DELETE)
RULE: Final = RuleInfo(
    id="vigil-health-check", title="Vigil health check failed", level="high",
    description="Changes the agent made in its own health directory did not all come back "
                "through the kernel and the pipeline in time: events may be going unseen.",
    ruleset="vigil", kind="health")


@dataclass
class HealthResult:
    ok: bool
    started_ns: int                       # wall clock of the check's start
    latency: dict[str, float] = field(default_factory=dict)   # step -> seconds to arrive
    missing: tuple[str, ...] = ()
    error: str | None = None              # the child could not make the changes

    def describe(self) -> str:
        got = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.latency.items())
        if self.ok:
            return f"health check passed: {got}"
        why = self.error or f"missing {', '.join(self.missing)}" + (f" (got {got})" if got
                                                                       else "")
        return f"health check FAILED: {why}"


class HealthCheck:
    """One check at a time; ``start`` when ``due``, ``observe`` every batch, ``poll`` often."""

    def __init__(self, cfg: HealthConfig, directory: Path,
                 on_result: Callable[[HealthResult], None] | None = None) -> None:
        self.cfg = cfg
        self.directory = directory
        self.prefix = os.fsencode(directory).rstrip(b"/") + b"/"
        self._on_result = on_result
        self._next = 0.0                  # monotonic time of the next check (0: at once)
        self._child = 0                   # the pid acting, while a check runs
        self._unreaped: set[int] = set()
        self._exits: set[int] = set()     # the children whose exit is still to come
        self._t0 = 0.0
        self._started_ns = 0
        self._path = b""
        self._seen: dict[FileOp, float] = {}
        self._error: str | None = None
        self.last: HealthResult | None = None
        self.passed = 0
        self.failed = 0

    def prepare(self) -> None:
        """The directory, private to root, emptied of a previous run's leftovers."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        for entry in os.scandir(self.directory):
            if entry.name.startswith("check-") and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)

    @property
    def running(self) -> bool:
        return self._child != 0

    def due(self, now: float) -> bool:
        return not self._child and now >= self._next

    def start(self, now: float) -> None:
        """Forks the child that makes the four changes (it does nothing else and exits)."""
        self._seen = {}
        self._error = None
        self._t0 = now
        self._started_ns = time.time_ns()
        self._path = self.prefix + b"check-%d-%d" % (os.getpid(), self._started_ns)
        pid = os.fork()
        if pid == 0:   # the child: raw system calls only, then _exit (no cleanup handlers)
            code = 0
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
                fd = os.open(self._path, os.O_WRONLY)
                os.write(fd, b"vigil health check\n")
                os.close(fd)
                os.chmod(self._path, 0o640)
                os.unlink(self._path)
            except OSError:
                code = 1
            os._exit(code)
        self._child = pid
        self._unreaped.add(pid)
        if len(self._exits) > 64:   # exits never seen (exec events off): forget the oldest
            self._exits.clear()
        self._exits.add(pid)

    def observe(self, events: Sequence[Event]) -> list[Event]:
        """The batch without the health directory's events and the child's exit; the steps
        seen are noted (by the child's pid: another process there is not this check)."""
        prefix, out = self.prefix, []
        for ev in events:
            if isinstance(ev, FileEvent) and ev.path.startswith(prefix):
                if self._child and ev.process.pid == self._child and ev.path == self._path \
                        and ev.op in STEPS and not ev.errno:
                    self._seen.setdefault(ev.op, time.monotonic() - self._t0)
                continue
            if isinstance(ev, ExitEvent) and ev.process.pid in self._exits:
                self._exits.discard(ev.process.pid)   # its exit may come after the verdict
                continue
            out.append(ev)
        return out

    def poll(self, now: float) -> list[Alert]:
        """The verdict once all four steps came back or the time is up; an alert if failed."""
        self._reap()
        if not self._child:
            return []
        if len(self._seen) < len(STEPS) and now - self._t0 < self.cfg.timeout \
                and self._error is None:
            return []
        result = HealthResult(
            ok=len(self._seen) == len(STEPS), started_ns=self._started_ns,
            latency={op.action: round(self._seen[op], 6) for op in STEPS if op in self._seen},
            missing=tuple(op.action for op in STEPS if op not in self._seen),
            error=self._error)
        self._finish(now, result)
        if result.ok:
            log.info("%s", result.describe())
            return []
        log.warning("%s", result.describe())
        return [self._alert(result)]

    def _reap(self) -> None:
        """Collects exited children (no zombies); the running check's failure is its error."""
        for pid in list(self._unreaped):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                self._unreaped.discard(pid)
                continue
            if not done:
                continue
            self._unreaped.discard(pid)
            if pid == self._child and os.waitstatus_to_exitcode(status) != 0:
                self._error = f"the check's process could not change files in {self.directory}"

    def _finish(self, now: float, result: HealthResult) -> None:
        self._child = 0   # a child stuck in the kernel is reaped by a later poll
        self.last = result
        if result.ok:
            self.passed += 1
        else:
            self.failed += 1
        self._next = now + self.cfg.interval if self.cfg.interval > 0 else float("inf")
        if self._on_result is not None:
            self._on_result(result)

    def _alert(self, result: HealthResult) -> Alert:
        doc = {
            "@timestamp": iso(result.started_ns),
            "event": {"kind": "event", "category": ["host"], "type": ["error"],
                      "dataset": "vigil.health", "action": "health-check-failed",
                      "outcome": "failure"},
            "message": result.describe(),
            "vigil": {"health": {"directory": str(self.directory),
                                 "missing": list(result.missing),
                                 "latency_seconds": result.latency,
                                 "timeout_seconds": self.cfg.timeout,
                                 **({"error": result.error} if result.error else {})}},
        }
        return Alert(time.time_ns(), RULE, "health", doc, first_ns=result.started_ns)
