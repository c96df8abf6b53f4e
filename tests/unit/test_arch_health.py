"""The arm64/armhf/i386 health check's verdict (tests/arch/health.py judge), on synthetic guest
results: the watched file's events must be exactly those of the guest's operations, one
"modified" per close, each with the acting user's who-data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "arch"))

import health
from guest_health import EXPECTED_ACTIONS

PATH = "/tmp/vigil-health/health.txt"


def result(actions: list[str], pid: int = 321) -> dict[str, Any]:
    events = [{"event": {"action": a}, "file": {"path": PATH},
               "process": {"pid": pid, "executable": "/usr/bin/python3.11"},
               "user": {"id": "65534"}} for a in actions]
    return {"machine": "aarch64", "ready": True, "child_pid": pid, "events": events,
            "stderr": [], "btf_which": {"stdout": "kernel\t/sys/kernel/btf/vmlinux\tx"},
            "kernel_btf": True}


def test_exactly_one_modified_per_close() -> None:
    spec = health.ARCHES["arm64"]
    assert EXPECTED_ACTIONS.count("modified") == 2  # OPS closes two write-opens
    assert health.judge(result(list(EXPECTED_ACTIONS)), spec, {}) == []
    doubled = ["created", "modified", "modified", "modified", "modified", "mode-changed",
               "deleted"]
    [problem] = health.judge(result(doubled), spec, {})
    assert "expected exactly" in problem and "one modified per close" in problem
    missing = [a for a in EXPECTED_ACTIONS if a != "mode-changed"]
    assert health.judge(result(missing), spec, {})


def test_who_data_and_the_machine_are_checked() -> None:
    spec = health.ARCHES["arm64"]
    r = result(list(EXPECTED_ACTIONS))
    r["events"][1]["user"]["id"] = "0"
    assert any("who-data" in p for p in health.judge(r, spec, {}))
    r = result(list(EXPECTED_ACTIONS))
    r["machine"] = "x86_64"
    assert any("not aarch64" in p for p in health.judge(r, spec, {}))
