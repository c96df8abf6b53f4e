"""The kernel matrix's logic that needs no VM: backend requests, availability from the doctor's
report, JUnit counting, the table, the kernel package patterns and the private apt config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))

from cells import Cell, availability, expand, junit_counts, markdown
from kernels import SERIES, PrivateApt


def test_expand_backend_requests() -> None:
    assert expand(["auto"]) == ["auto"]
    assert expand(["all"]) == ["lsm", "fentry", "kprobe", "tracepoint"]
    assert expand(["tracepoint", "all", "auto"]) == ["tracepoint", "lsm", "fentry", "kprobe",
                                                     "auto"]
    with pytest.raises(ValueError, match="unknown backend"):
        expand(["ebpf"])


def test_availability_from_the_doctor_report() -> None:
    report = {"backend": {"chosen": "fentry", "reason": "its probes passed",
                          "rejected": {"lsm": "the BPF LSM is not active"},
                          "available": ["fentry", "kprobe"]}}
    assert availability(report, "auto") == ("available", "its probes passed")
    assert availability(report, "fentry")[0] == "available"
    assert availability(report, "kprobe")[0] == "available"
    assert availability(report, "lsm") == ("unsupported", "the BPF LSM is not active")
    assert availability(report, "tracepoint")[0] == "unknown"
    # an older report: chosen and rejected only
    old = {"backend": {"chosen": "tracepoint", "rejected": {"kprobe": "no kprobe PMU"}}}
    assert availability(old, "tracepoint")[0] == "available"
    assert availability(old, "kprobe") == ("unsupported", "no kprobe PMU")
    assert availability(old, "fentry")[0] == "unknown"


def test_junit_counts(tmp_path: Path) -> None:
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.kernel.t" name="a"/>'
        '<testcase classname="tests.kernel.t" name="b"><failure message="x"/></testcase>'
        '<testcase classname="tests.kernel.t" name="c"><error message="y"/></testcase>'
        '<testcase classname="tests.kernel.t" name="d"><skipped message="z"/></testcase>'
        "</testsuite></testsuites>")
    c = junit_counts(xml)
    assert c is not None
    assert (c.tests, c.failed, c.skipped) == (4, 2, 1)
    assert c.failures == ["tests.kernel.t::b", "tests.kernel.t::c"]
    assert junit_counts(tmp_path / "missing.xml") is None


def test_markdown_table() -> None:
    cells = {
        ("5.10", "auto"): Cell("5.10", "auto", "pass", chosen="fentry", tests=30, seconds=161),
        ("5.10", "lsm"): Cell("5.10", "lsm", "unsupported", reason="not in lsm= | boot"),
        ("5.10", "kprobe"): Cell("5.10", "kprobe", "fail", tests=30, failed=2),
    }
    text = markdown([("5.10", "5.10.0-46-amd64")], ["auto", "lsm", "kprobe", "tracepoint"], cells)
    assert text.splitlines() == [
        "| kernel | auto | lsm | kprobe | tracepoint |",
        "| --- | --- | --- | --- | --- |",
        "| 5.10 (5.10.0-46-amd64) | pass (30 tests, 161s) [fentry] | "
        "unsupported (not in lsm= \\| boot) | FAIL (2 failed of 30) | MISSING |",
    ]
    assert not cells[("5.10", "kprobe")].ok and cells[("5.10", "lsm")].ok


@pytest.mark.parametrize(("series", "name", "ok"), [
    ("5.10", "linux-image-5.10.0-46-amd64", True),
    ("5.10", "linux-image-5.10.0-46-amd64-unsigned", False),
    ("5.10", "linux-image-5.10.0-46-rt-amd64", False),
    ("6.1", "linux-image-6.1.0-56-amd64", True),
    ("6.1", "linux-image-6.1.0-56-amd64-dbg", False),
    ("6.12", "linux-image-6.12.117+deb13-amd64", True),
    ("6.12", "linux-image-6.12.117+deb13-cloud-amd64", False),
])
def test_kernel_package_patterns(series: str, name: str, ok: bool) -> None:
    assert bool(SERIES[series].package.match(name)) is ok


def test_private_apt_config_stays_in_the_cache(tmp_path: Path) -> None:
    apt = PrivateApt(tmp_path)
    apt.write_config(list(SERIES.values()))
    conf = apt.conf.read_text()
    for line in conf.splitlines():
        if line.startswith("Dir::"):
            path = line.split('"')[1]
            assert path == "" or path.startswith(str(tmp_path)), line
    sources = (tmp_path / "apt" / "sources.list").read_text().splitlines()
    assert len(sources) == 9 and all("signed-by=/usr/share/keyrings/" in s for s in sources)
    assert any(" trixie-security main" in s and "debian-security" in s for s in sources)
    assert apt.env()["APT_CONFIG"] == str(apt.conf)
