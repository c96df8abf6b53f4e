"""process.hash.sha256 in the live agent: real programs run from a scratch copy and from a
memfd, their hash equal to hashlib's of the bytes executed, and a Sigma rule on ``Hashes``
(``SHA256=HEX``) that fires on the first and not on other programs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import CHILD_PY, AgentProc, Pred, get, run_child, scaled, write_config

pytestmark = [pytest.mark.root]

RULE = """
title: Test known binary by hash
id: 5a0f3c1e-7d2b-4c8e-9f10-00000000a5a5
status: test
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        Hashes|contains: 'SHA256=%s'
    condition: selection
level: high
"""


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-exehash-", dir="/var/tmp")).resolve()
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def exec_of(pid: int) -> Pred:
    return lambda e: get(e, "event.action") == "exec" and get(e, "process.pid") == pid


def unique_copy(src: str, dst: Path) -> bytes:
    """``src`` with bytes of this run appended (an ELF runs with trailing data): a hash no
    other program on the host has."""
    data = Path(src).read_bytes() + os.urandom(32)
    dst.write_bytes(data)
    dst.chmod(0o755)
    return data


def test_hash_of_a_program_and_of_a_memfd_and_a_rule_on_it(scratch: Path) -> None:
    prog = scratch / "true"
    want = hashlib.sha256(unique_copy("/usr/bin/true", prog)).hexdigest()
    sleeper = unique_copy("/usr/bin/sleep", scratch / "sleep-image")
    rules = scratch / "rules"
    rules.mkdir()
    (rules / "hash.yml").write_text(RULE % want.upper())
    (scratch / "w").mkdir()
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(scratch / "w")}],
                       rules={"paths": [str(rules)], "builtin": False, "suppress_window": 0})
    agent = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db").start()
    memfd = None
    try:
        agent.probe(scratch / "w", timeout=60)
        child = run_child([str(prog), "hash-me"])
        other = run_child(["/usr/bin/true", "not-me"])
        [ev] = agent.wait_for(exec_of(child.pid))
        assert get(ev, "process.executable") == str(prog)
        assert get(ev, "process.hash.sha256") == want
        assert get(ev, "vigil.process.hash_skipped") is None
        [alert] = agent.wait_for(lambda e: get(e, "process.pid") == child.pid, alerts=True,
                                 timeout=15)
        assert get(alert, "rule.name") == "Test known binary by hash"
        assert get(alert, "process.hash.sha256") == want
        [oev] = agent.wait_for(exec_of(other.pid))
        assert get(oev, "process.hash.sha256") == \
            hashlib.sha256(Path("/usr/bin/true").read_bytes()).hexdigest()

        # A program with no file: read through /proc/PID/exe while it runs.
        code = ("import os, sys\nfd = os.memfd_create('vigil-hash')\n"
                f"os.write(fd, open({str(scratch / 'sleep-image')!r}, 'rb').read())\n"
                "os.execve(fd, ['sleep', '30'], {})\n")
        memfd = subprocess.Popen([CHILD_PY, "-c", code])
        [mev] = agent.wait_for(exec_of(memfd.pid), count=2)[-1:]
        assert get(mev, "process.executable") == "/memfd:vigil-hash (deleted)"
        assert get(mev, "process.hash.sha256") == hashlib.sha256(sleeper).hexdigest()
        agent.settle(scratch / "w")
        time.sleep(scaled(0.2))
    finally:
        if memfd is not None:
            memfd.kill()
            memfd.wait()
        rc, summary = agent.stop()
    assert rc == 0
    assert [a for a in agent.alerts if get(a, "process.pid") == other.pid] == []
    assert summary is not None and "exe_hash_skipped" in summary.counts


def test_no_hash_when_turned_off(scratch: Path) -> None:
    (scratch / "w").mkdir()
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(scratch / "w")}],
                       rules={"enabled": False}, exec_hash={"enabled": False})
    agent = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db").start()
    try:
        agent.probe(scratch / "w", timeout=60)
        child = run_child(["/usr/bin/true"])
        [ev] = agent.wait_for(exec_of(child.pid))
    finally:
        rc, _ = agent.stop()
    assert rc == 0
    assert get(ev, "process.hash") is None and get(ev, "vigil.process.hash_skipped") is None
