"""What is always watched, as pure logic: Vigil's own files (vigil.ownfiles) and the kernel's
security knobs (vigil.sysctl), and how the agent marks their events (the real agent and real
writers: tests/kernel/test_self_protection.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vigil.agent import Agent
from vigil.config import Config, load_config
from vigil.events.layout import Flag
from vigil.events.marks import mark
from vigil.events.model import FileEvent, FileOp, Process
from vigil.outputs.ecs import file_to_ecs
from vigil.ownfiles import OwnFiles, configured_sources, own_files
from vigil.rules.detector import Detector
from vigil.rules.ruleset import build_ruleset
from vigil.sysctl import KNOBS, SysctlWatch, knob_path, weakened


def proc(pid: int = 100) -> Process:
    return Process(pid=pid, tid=pid, ppid=1, start_time=5, parent_start_time=1, uid=0, gid=0,
                   euid=0, egid=0, auid=0, session_id=1, comm=b"sh", cgroup_id=0, mnt_ns=0)


def config_file(tmp: Path) -> tuple[Config, Path, Path]:
    rules = tmp / "rules"
    rules.mkdir()
    (tmp / "w").mkdir()
    cfg = tmp / "vigil.yaml"
    cfg.write_text(f"database: {tmp}/state/baseline.db\njson_file: {tmp}/log.json\n"
                   f"directories:\n  - path: {tmp}/w\nrules:\n  paths: [{rules}]\n")
    return load_config(cfg), cfg, rules


def test_own_files_are_the_config_rules_database_objects_and_package(tmp_path: Path) -> None:
    config, cfg, rules = config_file(tmp_path)
    objs = tmp_path / "objs"
    objs.mkdir()
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    btf = tmp_path / "k.btf"
    btf.write_bytes(b"x")
    files = own_files(config, [rules, tmp_path / "missing.yml"], btf_path=btf, obj_dir=objs,
                      package_dir=pkg)
    got = [(os.fsdecode(f.path), f.what, f.is_dir) for f in files]
    db = f"{tmp_path}/state/baseline.db"
    assert got[:9] == [
        (str(cfg), "config", False), (str(rules), "rules", True),
        # the database and SQLite's companions, before they exist
        (db, "database", False), (db + "-wal", "database", False),
        (db + "-shm", "database", False), (db + "-journal", "database", False),
        (f"{tmp_path}/log.json", "output", False),
        (str(objs), "bpf-objects", True), (str(btf), "btf", False)]
    assert (str(pkg), "package", True) in got
    assert not [g for g in got if "missing" in g[0]]   # a rule path that is gone


def test_the_embedded_config_has_no_file_and_the_installed_package_is_found() -> None:
    files = configured_sources(load_config(None), [])
    whats = {f.what for f in files}
    assert "config" not in whats
    assert {"database", "bpf-objects", "btf", "package"} <= whats
    pkg = Path(__file__).resolve().parents[2] / "vigil"
    own = OwnFiles(files)
    assert own.covers(os.fsencode(pkg / "agent.py"))
    assert own.covers(os.fsencode(pkg / "bpf_objects" / "x86_64" / "vigil.bpf.o"))
    # the package directory covers its objects and data: one kernel entry for all
    entries = own.kernel_entries()
    assert os.fsencode(pkg) in entries
    assert not [e for e in entries if e.startswith(os.fsencode(pkg) + b"/")]


def test_covers_whole_components_only(tmp_path: Path) -> None:
    config, cfg, rules = config_file(tmp_path)
    own = OwnFiles(own_files(config, [rules], package_dir=None))
    assert own.covers(os.fsencode(cfg))
    assert not own.covers(os.fsencode(cfg) + b".swp")
    assert own.covers(os.fsencode(rules / "a.yml"))
    assert own.covers(os.fsencode(rules))
    assert not own.covers(os.fsencode(rules) + b"-old/a.yml")
    assert own.covers(os.fsencode(f"{tmp_path}/state/baseline.db-wal"))
    assert not own.covers(os.fsencode(f"{tmp_path}/state/other.db"))
    # entries already inside a configured tree need none of their own
    assert os.fsencode(cfg) not in own.kernel_entries([os.fsencode(tmp_path)])
    assert os.fsencode(cfg) in own.kernel_entries([os.fsencode(tmp_path / "w")])


@pytest.mark.parametrize("direction, old, new, weaker", [
    ("lower", "1", "0", True), ("lower", "0", "1", False), ("lower", "2", "2", False),
    ("higher", "0", "2", True), ("higher", "2", "0", False),
    ("zero", "2", "0", True), ("zero", "1", "2", False), ("zero", "0", "2", False),
    ("bits", "176", "1", True), ("bits", "176", "144", False), ("bits", "176", "178", True),
    ("bits", "1", "0", False), ("bits", "0", "16", True),
    ("any", "core", "|/tmp/x %p", True), ("any", "core", "core", False),
    ("lower", None, "1", True), ("lower", "1", None, False), ("lower", "1", "junk", True),
])
def test_weakened(direction: str, old: str | None, new: str | None, weaker: bool) -> None:
    assert weakened(direction, old, new) is weaker


def test_knob_names_and_paths() -> None:
    assert knob_path("kernel.yama.ptrace_scope") == b"/proc/sys/kernel/yama/ptrace_scope"
    assert knob_path("net.core.bpf_jit_harden") == b"/proc/sys/net/core/bpf_jit_harden"
    assert set(KNOBS.values()) <= {"lower", "higher", "zero", "bits", "any"}


def fake_proc(tmp: Path, values: dict[str, str]) -> bytes:
    for name, v in values.items():
        p = tmp / knob_path(name).decode().lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(v + "\n")
    return os.fsencode(tmp)


def test_sysctl_watch_reads_values_and_says_what_a_write_changed(tmp_path: Path) -> None:
    root = fake_proc(tmp_path, {"kernel.kptr_restrict": "1", "kernel.core_pattern": "core"})
    w = SysctlWatch({"kernel.kptr_restrict": "lower", "kernel.core_pattern": "any",
                     "kernel.not_here": "lower"}, root=root)
    assert w.paths() == [b"/proc/sys/kernel/kptr_restrict", b"/proc/sys/kernel/core_pattern"]
    (tmp_path / "proc/sys/kernel/kptr_restrict").write_text("0\n")
    assert w.changed(b"/proc/sys/kernel/kptr_restrict") == {
        "name": "kernel.kptr_restrict", "old": "1", "new": "0", "weakened": True}
    (tmp_path / "proc/sys/kernel/kptr_restrict").write_text("2\n")
    assert w.changed(b"/proc/sys/kernel/kptr_restrict") == {
        "name": "kernel.kptr_restrict", "old": "0", "new": "2", "weakened": False}
    assert w.changed(b"/proc/sys/kernel/other") is None
    assert [d["value"] for d in w.described()] == ["2", "core"]


def agent_with(tmp: Path) -> tuple[Agent, Path, Path]:
    config, cfg, rules = config_file(tmp)
    ruleset = build_ruleset(config.rules)
    agent = Agent(config, [], detector=Detector(ruleset, 0, host={}))
    agent.watching.watch_own_files()
    agent.watching.sysctl = SysctlWatch({"kernel.kptr_restrict": "lower"},
                               root=fake_proc(tmp, {"kernel.kptr_restrict": "1"}))
    return agent, cfg, rules


def test_agent_marks_own_files_and_knobs(tmp_path: Path) -> None:
    agent, cfg, rules = agent_with(tmp_path)
    knob = b"/proc/sys/kernel/kptr_restrict"
    (tmp_path / "proc/sys/kernel/kptr_restrict").write_text("0\n")
    events = [
        FileEvent(1, FileOp.MODIFY, os.fsencode(cfg), proc()),
        FileEvent(2, FileOp.RENAME, os.fsencode(tmp_path / "x.yml"), proc(),
                  target_path=os.fsencode(rules / "x.yml")),
        FileEvent(3, FileOp.MODIFY, os.fsencode(tmp_path / "w" / "f"), proc()),
        FileEvent(4, FileOp.TRUNCATE, knob, proc()),   # the write-open's O_TRUNC: dropped
        FileEvent(5, FileOp.MODIFY, knob, proc()),
        FileEvent(6, FileOp.OPEN, knob, proc(), errno=13),
    ]
    marked = mark(events, agent.watching.own, agent.watching.sysctl)
    assert [e.timestamp_ns for e in marked] == [1, 2, 3, 5, 6]
    assert [e.protected for e in marked] == ["self", "self", None, None, None]
    assert marked[3].sysctl == {"name": "kernel.kptr_restrict", "old": "1", "new": "0",
                                "weakened": True}
    assert marked[4].sysctl == {"name": "kernel.kptr_restrict"}
    # the kernel passes them on; the own files feed the rules only, the knobs are reported
    assert agent.watching.is_watched(os.fsencode(cfg)) and agent.watching.is_watched(knob)
    assert not agent.watching.is_watched(os.fsencode(cfg) + b"~")
    assert [agent.watching.configured(e) for e in marked] == [False, False, True, True, True]
    # a cut path is never marked (it is no real path)
    cut = FileEvent(7, FileOp.MODIFY, os.fsencode(cfg), proc(), flags=int(Flag.PATH_TRUNC))
    assert mark([cut], agent.watching.own, agent.watching.sysctl)[0].protected is None


def test_ecs_fields_and_the_pack_rules(tmp_path: Path) -> None:
    agent, cfg, _ = agent_with(tmp_path)
    (tmp_path / "proc/sys/kernel/kptr_restrict").write_text("0\n")
    own, knob = mark([FileEvent(1, FileOp.MODIFY, os.fsencode(cfg), proc()),
                      FileEvent(2, FileOp.MODIFY, b"/proc/sys/kernel/kptr_restrict", proc())],
                     agent.watching.own, agent.watching.sysctl)
    doc = file_to_ecs(own, {})
    assert doc["vigil"]["protected"] == "self"
    kdoc = file_to_ecs(knob, {})
    assert kdoc["vigil"]["sysctl"] == {"name": "kernel.kptr_restrict", "old": "1", "new": "0",
                                       "weakened": True}
    assert "protected" not in kdoc["vigil"]
    detector = agent.detector
    assert detector is not None
    alerts = detector.process([own, knob])
    assert sorted(a.rule.title for a in alerts) == [
        "Kernel Security Setting Weakened", "Vigil's Own Files Changed by Another Process"]
    knob.sysctl = {"name": "kernel.kptr_restrict", "old": "0", "new": "1", "weakened": False}
    assert detector.process([knob]) == []
