"""OCSF from the real agent: real file operations, a FIM change, a program run, a loopback
TCP connection and UDP datagram, a setresuid, a command typed into an interactive bash and a
rule that fires, all written by ``vigil run`` as OCSF; every document it wrote is validated
against the official OCSF schema from the ``ocsf-json-schema`` package
(tests/unit/ocsf_validate.py), and the values a SOC reads are checked against what the test
did (paths, pids, hashes, ports, the rule).

Two ways in: ``outputs: {file: {path: X, format: ocsf}}`` beside the ECS lines on stdout (the
two streams are compared line for line: the same events, in the same order), and
``vigil run -o ocsf`` on stdout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_proc import (
    CHILD_PY,
    VIGIL,
    AgentProc,
    Event,
    get,
    py_child,
    run_child,
    scaled,
    write_config,
)
from shell_pty import interactive_bash

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from ocsf_validate import assert_valid

pytestmark = [pytest.mark.root]

RULE_ID = "7e1d2c3b-4a59-4f6e-8d7c-0b1a2f3e4d5c"
RULE = f"""
title: OCSF test marker written
id: {RULE_ID}
status: test
logsource:
    product: linux
    category: file_event
detection:
    selection:
        TargetFilename|endswith: '.ocsfmark'
    condition: selection
level: high
tags:
    - attack.persistence
    - attack.t1546.004
"""
CONTENT = b"hello ocsf\n"


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-ocsf-", dir="/var/tmp")).resolve()
    d.chmod(0o755)
    (d / "w").mkdir()
    (d / "rules").mkdir()
    (d / "rules" / "marker.yml").write_text(RULE)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _config(scratch: Path, name: str, **extra: Any) -> Path:
    return write_config(scratch / name, scratch, [{"path": str(scratch / "w")}],
                        rules={"paths": [str(scratch / "rules")], "builtin": False},
                        metrics=False, **extra)


def ocsf_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def pids_of(doc: dict[str, Any]) -> set[int]:
    return {p for p in (get(doc, "actor.process.pid"), get(doc, "process.pid"))
            if p is not None}


@pytest.fixture(scope="module")
def run(scratch: Path) -> dict[str, Any]:
    """One agent, ECS on stdout and OCSF to a file; the test's actions; the agent stopped
    (every event read is written before it exits). What the tests check."""
    out = scratch / "events.ocsf.jsonl"
    cfg = _config(scratch, "vigil.yaml", outputs={"file": [{"path": str(out),
                                                             "format": "ocsf"}]})
    agent = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db").start()
    w = scratch / "w"
    facts: dict[str, Any] = {"dir": w}
    try:
        agent.probe(w, timeout=60)
        facts["files"] = py_child(f"""
d = {str(w)!r}
fd = os.open(d + "/a.txt", os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, {CONTENT!r})
os.close(fd)
os.chmod(d + "/a.txt", 0o600)
os.rename(d + "/a.txt", d + "/b.txt")
os.symlink("b.txt", d + "/l")
os.mkdir(d + "/sub")
os.rmdir(d + "/sub")
open(d + "/x.ocsfmark", "w").close()
os.unlink(d + "/l")
""")
        facts["exec"] = run_child(["/usr/bin/sha256sum", str(w / "b.txt")])
        facts["net"] = run_child([CHILD_PY, "-c", """
import socket
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
c = socket.create_connection(("127.0.0.1", port))
conn, _ = srv.accept()
c.sendall(b"x"); conn.recv(1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind(("127.0.0.1", 0))
u.sendto(b"y", r.getsockname())
r.recv(1)
print(port, r.getsockname()[1])
"""])
        facts["cred"] = py_child("os.setresuid(65534, 65534, 65534)")
        facts["shell"] = interactive_bash(["echo ocsf-shell-marker"])
        agent.wait_for(lambda e: get(e, "rule.id") == RULE_ID, alerts=True, timeout=20)
        agent.wait_for(lambda e: get(e, "vigil.shell.command") == "echo ocsf-shell-marker",
                       timeout=20)
        agent.probe(w)
        time.sleep(0.2)
    finally:
        rc, _ = agent.stop()
    assert rc == 0, "\n".join(agent.stderr_lines[-20:])
    facts["ecs_events"], facts["ecs_alerts"] = agent.events, agent.alerts
    facts["ocsf"] = ocsf_lines(out)
    return facts


def test_every_document_is_valid_ocsf(run: dict[str, Any]) -> None:
    docs = run["ocsf"]
    assert docs
    for doc in docs:
        assert_valid(doc)
        assert doc["type_uid"] == doc["class_uid"] * 100 + doc["activity_id"]
        assert doc["metadata"]["product"]["name"] == "Vigil"
    classes = {d["class_uid"] for d in docs}
    assert {1001, 1007, 1009, 2004, 4001} <= classes, classes


def test_the_same_events_as_the_ecs_stream(run: dict[str, Any]) -> None:
    """Both sinks get every batch: event for event, the same time, dataset and process."""
    events = [d for d in run["ocsf"] if d["class_uid"] != 2004]
    findings = [d for d in run["ocsf"] if d["class_uid"] == 2004]
    ecs: list[Event] = run["ecs_events"]
    assert len(events) == len(ecs)
    assert len(findings) == len(run["ecs_alerts"])
    for o, e in zip(events, ecs, strict=True):
        assert o["time_dt"] == e["@timestamp"]
        assert o["metadata"]["log_name"] == get(e, "event.dataset")
        assert o["metadata"]["event_code"] == get(e, "event.action")
        if get(e, "process.pid") is not None:
            assert get(e, "process.pid") in pids_of(o), (o, e)


def _of(run: dict[str, Any], cls: int, pid: int) -> list[dict[str, Any]]:
    return [d for d in run["ocsf"] if d["class_uid"] == cls and pid in pids_of(d)]


def test_file_activity(run: dict[str, Any]) -> None:
    w, pid = str(run["dir"]), run["files"].pid
    docs = [d for d in _of(run, 1001, pid) if d["metadata"]["log_name"] == "vigil.file"]
    by = {(d["activity_name"], d["file"]["path"]): d for d in docs}
    assert ("Create", f"{w}/a.txt") in by
    assert ("Update", f"{w}/a.txt") in by
    assert ("Set Security", f"{w}/a.txt") in by
    ren = by[("Rename", f"{w}/a.txt")]
    assert ren["file_result"]["path"] == f"{w}/b.txt"
    assert by[("Create", f"{w}/l")]["file"]["type_id"] == 7
    assert by[("Create", f"{w}/sub")]["file"]["type_id"] == 2
    assert ("Delete", f"{w}/sub") in by and ("Delete", f"{w}/l") in by
    for d in docs:
        assert d["actor"]["process"]["pid"] == pid
        assert d["actor"]["process"]["parent_process"]["pid"] == os.getpid()
        assert d["actor"]["user"]["uid"] == "0"
        assert d["device"]["hostname"] == os.uname().nodename


def test_fim_hashes(run: dict[str, Any]) -> None:
    sha = hashlib.sha256(CONTENT).hexdigest()
    fim = [d for d in run["ocsf"] if d["metadata"]["log_name"] == "vigil.fim"
           and d["class_uid"] == 1001]
    hashed = [d for d in fim for f in (d["file"], d.get("file_result") or {})
              if {"algorithm_id": 3, "algorithm": "SHA-256", "value": sha} in f.get("hashes", [])]
    assert hashed, [(d["activity_name"], d["file"]) for d in fim]


def test_process_launch_and_terminate(run: dict[str, Any]) -> None:
    c = run["exec"]
    [launch] = [d for d in _of(run, 1007, c.pid) if d["activity_id"] == 1]
    assert launch["process"]["pid"] == c.pid
    assert launch["process"]["file"]["path"] == c.exe
    with open(c.exe, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert launch["process"]["file"]["hashes"] == [{"algorithm_id": 3, "algorithm": "SHA-256",
                                                    "value": sha}]
    assert launch["process"]["cmd_line"].startswith("/usr/bin/sha256sum ")
    assert launch["actor"]["process"]["pid"] == os.getpid()    # this test launched it
    assert launch["launch_type_id"] == 3
    [end] = [d for d in _of(run, 1007, c.pid) if d["activity_id"] == 2]
    assert end["exit_code"] == 0 and end["process"]["pid"] == c.pid


def test_network_activity(run: dict[str, Any]) -> None:
    c = run["net"]
    port, uport = map(int, c.stdout.split())
    docs = _of(run, 4001, c.pid)
    names = [d["activity_name"] for d in docs]
    assert "Listen" in names
    def tcp(direction: int) -> list[dict[str, Any]]:
        return [d for d in docs if d["activity_id"] == 1 and d["connection_info"][
            "direction_id"] == direction and d["connection_info"].get("protocol_num") == 6]

    [conn] = tcp(2)
    assert conn["dst_endpoint"] == {"ip": "127.0.0.1", "port": port}
    assert conn["connection_info"]["boundary_id"] == 1
    [acc] = tcp(1)
    assert acc["dst_endpoint"]["port"] == port
    udp = [d for d in docs if d["activity_name"] == "Traffic" and
           d["connection_info"]["direction_id"] == 2]
    assert any(d["dst_endpoint"]["port"] == uport for d in udp), docs


def test_privilege_change(run: dict[str, Any]) -> None:
    c = run["cred"]
    [doc] = [d for d in _of(run, 1007, c.pid) if d["activity_id"] == 5]
    assert doc["process"]["user"]["uid"] == "65534" and doc["process"]["euid"] == 65534
    assert doc["actor"]["user"]["uid"] == "0"


def test_shell_command(run: dict[str, Any]) -> None:
    s = run["shell"]
    docs = [d for d in _of(run, 1009, s.pid)
            if d["script"]["script_content"]["value"] == "echo ocsf-shell-marker"]
    assert len(docs) == 1
    assert docs[0]["script"]["type_id"] == 6
    assert docs[0]["actor"]["session"]["terminal"] == s.tty.removeprefix("/dev/")


def test_detection_finding(run: dict[str, Any]) -> None:
    w, pid = str(run["dir"]), run["files"].pid
    found = [d for d in run["ocsf"] if d["class_uid"] == 2004
             and d["finding_info"]["analytic"].get("uid") == RULE_ID]
    assert found
    assert found[0]["activity_id"] == 1     # the first match; later ones may follow
    for f in found:     # the create and the close after writing: one match each
        assert f["severity_id"] == 4
        assert f["finding_info"]["title"] == "OCSF test marker written"
        assert {"tactic": {"name": "Persistence", "uid": "TA0003"}} in \
            f["finding_info"]["attacks"]
        assert f["evidences"][0]["file"]["path"] == f"{w}/x.ocsfmark"
        assert f["evidences"][0]["actor"]["process"]["pid"] == pid
        assert f["unmapped"]["event"]["class_uid"] == 1001


def test_run_with_output_ocsf_on_stdout(scratch: Path) -> None:
    """``vigil run -o ocsf``: OCSF lines on stdout, each valid, a file event among them."""
    cfg = _config(scratch, "vigil-stdout.yaml")
    w = scratch / "w"
    proc = subprocess.Popen([str(VIGIL), "run", "--config", str(cfg), "-o", "ocsf",
                             "--db", str(scratch / "state" / "stdout.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    lines: list[bytes] = []
    cond = threading.Condition()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with cond:
                lines.append(line)
                cond.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sentinel = str(w / "stdout-sentinel")

    def seen() -> bool:
        return any(b'"stdout-sentinel"' in ln and b'"Delete"' in ln for ln in lines)

    try:
        deadline = time.monotonic() + scaled(60)
        while True:
            with open(sentinel, "w"):
                pass
            os.unlink(sentinel)
            with cond:
                cond.wait_for(seen, timeout=0.5)
                if seen():
                    break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no OCSF line for the sentinel on stdout"
    finally:
        proc.terminate()
        try:
            proc.wait(scaled(60))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(30)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    docs = [json.loads(ln) for ln in lines]
    for doc in docs:
        assert_valid(doc)
    deleted = [d for d in docs if d["class_uid"] == 1001 and d["activity_id"] == 4
               and d["file"]["path"] == sentinel]
    assert deleted and deleted[0]["actor"]["process"]["pid"] == os.getpid()
    assert yaml.safe_load(cfg.read_text())["metrics"] is False
