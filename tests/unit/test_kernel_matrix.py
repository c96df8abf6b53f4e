"""The kernel matrix's logic that needs no VM: backend requests, availability from the doctor's
report, JUnit counting, the table, the kernel package patterns, the private apt config, and the
tailored-BTF cells (their columns, the archive key, and the checks that the tailored BTF was the
one used: `vigil btf which` in the guest, each agent's start-up log)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))

import tailored
from agent_proc import tailored_btf_problem
from cells import (
    Cell,
    Counts,
    availability,
    btf_which_problem,
    cell_file,
    column,
    expand,
    junit_counts,
    markdown,
    verdict,
)
from kernels import SERIES, Kernel, PrivateApt


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


def test_a_cell_whose_tests_all_skipped_fails(tmp_path: Path) -> None:
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.kernel.t" name="a"><skipped message="needs x86_64"/>'
        '</testcase>'
        '<testcase classname="tests.kernel.t" name="b"><skipped message="needs root"/>'
        "</testcase></testsuite></testsuites>")
    counts = junit_counts(xml)
    assert counts is not None
    assert counts.skips == ["tests.kernel.t::a: needs x86_64", "tests.kernel.t::b: needs root"]
    # pytest exits 0 when everything skipped; the cell must not pass
    status, why = verdict(0, counts, 900)
    assert (status, why) == ("fail", "all 2 tests skipped")
    cell = Cell("6.12", "lsm", status, reason=why, tests=counts.tests, skipped=counts.skipped,
                skips=counts.skips)
    assert not cell.ok
    assert cell.text() == "FAIL (all 2 tests skipped)"
    # one test that ran is enough; its skips stay visible
    counts.tests += 1
    assert verdict(0, counts, 900) == ("pass", "")
    passed = Cell("6.12", "lsm", "pass", tests=3, skipped=2, seconds=61)
    assert passed.ok and passed.text() == "pass (3 tests, 2 skipped, 61s)"


def test_cell_verdicts() -> None:
    assert verdict(None, None, 900) == ("fail", "timed out after 900s")
    assert verdict(5, Counts(), 900)[0] == "error"
    assert verdict(1, None, 900) == ("fail", "pytest exited 1 without a report")
    assert verdict(1, Counts(tests=3, failed=1), 900) == ("fail", "")
    assert verdict(3, Counts(tests=3), 900) == ("fail", "pytest exited 3")
    assert verdict(0, Counts(tests=3, skipped=1), 900) == ("pass", "")
    failed = Cell("6.12", "kprobe", "fail", tests=30, failed=2, reason="timed out after 900s")
    assert failed.text() == "FAIL (2 failed of 30; timed out after 900s)"


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


KEY = "debian/12/x86_64/6.12.57+deb13-amd64"


def test_tailored_btf_cells_have_columns_and_directories_of_their_own(tmp_path: Path) -> None:
    assert column("auto") == "auto" and column("kprobe", "kernel") == "kprobe"
    assert column("auto", "tailored") == "auto (tailored BTF)"
    assert cell_file(tmp_path, "6.12", "auto") == tmp_path / "6.12" / "auto.json"
    assert cell_file(tmp_path, "6.12", "auto", "tailored") == \
        tmp_path / "6.12-tailored-btf" / "auto.json"
    used = f"tailored BTF /run/vigil-btf-x/6.12.57+deb13-amd64.btf (archive a.tar.xz, key {KEY})"
    tail = Cell("6.12", "auto", "pass", chosen="kprobe", tests=30, seconds=300, btf="tailored",
                btf_used=used)
    tail.save(tmp_path / "c.json")
    assert Cell.load(tmp_path / "c.json") == tail
    assert tail.column == "auto (tailored BTF)"
    # a cell written before cells knew about BTF reads as the kernel's
    old = tmp_path / "old.json"
    old.write_text('{"kernel": "6.1", "backend": "auto", "status": "pass", "tests": 3}')
    assert Cell.load(old).btf == "kernel" and Cell.load(old).column == "auto"
    cells = {("6.12", "auto"): Cell("6.12", "auto", "pass", chosen="lsm", tests=30, seconds=200),
             ("6.12", tail.column): tail}
    text = markdown([("6.12", "6.12.57+deb13-amd64")], ["auto", "auto (tailored BTF)"], cells)
    assert text.splitlines()[0] == "| kernel | auto | auto (tailored BTF) |"
    assert text.splitlines()[2].endswith("| pass (30 tests, 200s) [lsm] | "
                                         "pass (30 tests, 300s) [kprobe] |")


def test_btf_which_must_name_the_tailored_archive_entry() -> None:
    ok = f"tailored\t/run/vigil-btf-1/6.12.57+deb13-amd64.btf\tarchive g.tar.xz, key {KEY}\n"
    assert btf_which_problem(ok, KEY) is None
    own = "kernel\t/sys/kernel/btf/vmlinux\tthe running kernel\n"
    assert "chose kernel BTF /sys/kernel/btf/vmlinux" in str(btf_which_problem(own, KEY))
    other = ok.replace("6.12.57+deb13-amd64\n", "6.12.48+deb13-amd64\n")
    assert "not the archive entry" in str(btf_which_problem(other, KEY))
    assert "printed" in str(btf_which_problem("", KEY))


def test_each_agent_must_say_it_runs_on_the_tailored_btf() -> None:
    using = (f"vigil: using tailored BTF /run/vigil-btf-1/6.12.57+deb13-amd64.btf "
             f"(archive btf-archive.tar.xz, key {KEY})")
    skipped = "vigil: kprobe backend (skipped lsm: ...; fentry: ...)"
    assert tailored_btf_problem([using, skipped], KEY) is None
    assert tailored_btf_problem([using, "vigil: tracepoint backend, perf event buffer"],
                                KEY) is None
    assert "no 'vigil: using" in str(tailored_btf_problem([skipped], KEY))
    assert "did not say" in str(tailored_btf_problem(
        [using.replace("6.12.57+deb13-amd64)", "6.12.48+deb13-amd64)"), skipped], KEY))
    file_btf = "vigil: using kernel BTF from a file /boot/vmlinux-6.12 (vmlinux of this release)"
    assert "did not say" in str(tailored_btf_problem([file_btf, skipped], KEY))
    assert "lsm backend started" in str(tailored_btf_problem([using, "vigil: lsm backend"], KEY))
    assert "named no backend" in str(tailored_btf_problem([using], KEY))


def test_tailored_archive_key_and_cached_package(tmp_path: Path) -> None:
    osr = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nID=debian\n'
    assert tailored.os_release_ids(osr) == ("debian", "12")
    with pytest.raises(tailored.TailoredError, match="VERSION_ID"):
        tailored.os_release_ids("ID=debian\n")
    assert tailored.archive_key("debian", "12", "6.12.57+deb13-amd64") == KEY
    debs = tmp_path / "debs"
    debs.mkdir()
    k = Kernel("6.12", "linux-image-6.12.57+deb13-amd64", "1:6.12.57-1", "6.12.57+deb13-amd64",
               str(tmp_path / "vmlinuz"))
    assert tailored.cached_package(k, tmp_path) is None
    (debs / "linux-image-6.12.57+deb13-amd64_6.12.48-1_amd64.deb").touch()
    want = debs / "linux-image-6.12.57+deb13-amd64_1%3a6.12.57-1_amd64.deb"
    want.touch()
    assert tailored.cached_package(k, tmp_path) == want
