"""The terminal views through the real ``vigil run``: ``-o compact`` lines for real file
operations and execs, ``--no-exit`` hiding exits, ``--ancestry`` naming the real parent chain,
and ``-o pretty`` with the same clock format."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import VIGIL, scaled, write_config

pytestmark = [pytest.mark.root]
CLOCK = r"\d\d:\d\d:\d\d\.\d{3}"


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-term-", dir="/var/tmp")).resolve()
    (d / "w").mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Lines:
    """``vigil run`` with a terminal format; its stdout lines collected."""

    def __init__(self, scratch: Path, *args: str) -> None:
        cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(scratch / "w")}],
                           rules={"enabled": False}, metrics=False, health=False)
        self.proc = subprocess.Popen(
            [str(VIGIL), "run", "--config", str(cfg), "--no-fim", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd="/")
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, pattern: str, timeout: float = 60) -> str:
        """The first line matching the regular expression ``pattern`` (from its start)."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            for ln in list(self.lines):
                if re.match(pattern, ln):
                    return ln
            time.sleep(0.1)
        raise AssertionError(f"no line like {pattern!r}: {self.lines[-10:]}")

    def ready(self, d: Path) -> None:
        """Touch a sentinel until a line names it (the programs are attached)."""
        deadline = time.monotonic() + scaled(60)
        while time.monotonic() < deadline:
            p = d / f"ready-{time.monotonic_ns()}"
            p.write_text("x")
            p.unlink()
            time.sleep(0.3)
            if any(p.name in ln for ln in self.lines):
                return
        raise AssertionError("the agent never reported its sentinel")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(scaled(60))
        self._t.join(10)


def test_compact_lines_without_exits_and_with_ancestry(scratch: Path) -> None:
    view = Lines(scratch, "-o", "compact", "--no-exit", "--ancestry")
    try:
        view.ready(scratch / "w")
        target = scratch / "w" / "made by sh"
        sh = subprocess.run(["/bin/sh", "-c", f"echo hi > '{target}'; /bin/true"], check=True)
        assert sh.returncode == 0
        view.wait(rf"{CLOCK} \+ root/sh\[\d+\] {re.escape(str(target))}")
        exec_line = view.wait(rf"{CLOCK} E root/true\[\d+\] /usr/bin/true")
        # the exec names its ancestry: the shell, then this test's own process
        assert "< sh[" in exec_line and f"[{os.getpid()}]" in exec_line, exec_line
        time.sleep(1)
    finally:
        view.stop()
    assert not [ln for ln in view.lines if re.match(rf"^{CLOCK} X ", ln)], "an exit was shown"


def test_pretty_shows_exits_unless_told(scratch: Path) -> None:
    view = Lines(scratch, "-o", "pretty")
    try:
        view.ready(scratch / "w")
        subprocess.run(["/bin/true"], check=True)
        view.wait(rf"{CLOCK} exit ")
    finally:
        view.stop()
