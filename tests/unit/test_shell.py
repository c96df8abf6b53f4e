"""Shell commands without a kernel: the record decoded, its ECS document and pretty line, the
Sigma keyword rules over the typed line, the config switch, and finding readline in binaries
(vigil.kernel.uprobes) on files made here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vigil.config.load import load_config
from vigil.config.model import ConfigError
from vigil.events import layout
from vigil.events.layout import Clock, Decoder
from vigil.events.model import Process, ShellEvent
from vigil.kernel import uprobes
from vigil.outputs.ecs import to_ecs
from vigil.outputs.pretty import PrettySink
from vigil.rules.fieldmap import coverage_warnings, ecs_to_records
from vigil.rules.loader import builtin_rules_dir, load_paths, load_text
from vigil.rules.matcher import Engine
from vigil.rules.shellview import SHELL_KEY, is_shell_rule

CLOCK = Clock(mono_to_wall_ns=1_000_000_000_000, clk_tck=100)
HOST = {"name": "h"}


def shell_record(cmd: bytes, tty: bytes = b"pts3", flags: int = 0, n: int | None = None
                 ) -> bytes:
    proc = layout.PROC.pack(123 * 10_000_000, 7 * 10_000_000, 99, 42, 42, 1, 1000, 1000, 1000,
                            1000, 1000, 3, 4026, b"bash")
    tail = layout.SHELL_TAIL.pack(136, 3, 40, len(cmd) if n is None else n, tty)
    body = proc + tail + cmd
    return layout.HDR.pack(layout.Kind.SHELL, flags, layout.HDR_SIZE + len(body), 5) + body


def test_record_decoded() -> None:
    ev = Decoder(CLOCK).decode(shell_record(b"ls -l /etc"))
    assert isinstance(ev, ShellEvent)
    assert (ev.command, ev.tty_major, ev.tty_minor, ev.tty_name, ev.session_leader) == \
        (b"ls -l /etc", 136, 3, "pts3", 40)
    assert ev.tty == "pts/3" and not ev.truncated
    assert ev.process.pid == 42 and ev.process.comm == b"bash"
    assert Decoder(CLOCK).decode(shell_record(b"x", flags=layout.Flag.ARGS_TRUNC)).truncated


def test_lengths_past_the_end_are_malformed() -> None:
    d = Decoder(CLOCK)
    assert d.decode(shell_record(b"ls", n=3)) is None
    assert d.decode(shell_record(b"")[:layout.SHELL_EVENT_SIZE - 1]) is None
    assert d.malformed == {"bad-length": 1, "short": 1}


def _event(cmd: bytes, **kw: object) -> ShellEvent:
    p = Process(pid=42, tid=42, ppid=1, start_time=5, parent_start_time=1, uid=1000, gid=1000,
                euid=1000, egid=1000, auid=1000, session_id=3, comm=b"bash", cgroup_id=1,
                mnt_ns=2, executable=b"/usr/bin/bash", args=[b"-bash"], user_name="alice")
    return ShellEvent(1_700_000_000_000_000_000, p, cmd, **kw)  # type: ignore[arg-type]


def test_ecs_document() -> None:
    doc = to_ecs(_event(b"echo binary >> /tmp/x", tty_major=136, tty_minor=3,
                        tty_name="pts3", session_leader=40), HOST)
    assert doc["event"]["action"] == "shell-command"
    assert doc["event"]["category"] == ["process"]
    assert doc["event"]["dataset"] == "vigil.shell"
    assert doc["vigil"]["shell"] == {"command": "echo binary >> /tmp/x", "tty": "pts/3"}
    assert doc["process"]["tty"] == {"char_device": {"major": 136, "minor": 3}}
    assert doc["process"]["session_leader"] == {"pid": 40}
    assert doc["process"]["executable"] == "/usr/bin/bash"
    assert doc["process"]["command_line"] == "-bash"   # the shell's own, never the typed line
    assert doc["user"]["name"] == "alice"
    bare = to_ecs(_event(b"\xffx", truncated=True), HOST)
    assert "tty" not in bare["process"] and "session_leader" not in bare["process"]
    assert bare["vigil"]["shell"]["command_bytes_b64"] == "/3g="
    assert bare["vigil"]["shell"]["command_truncated"] is True


def test_pretty_line() -> None:
    line = PrettySink(1, colour=False).line(_event(b"id", tty_name="pts3"))
    assert "shell-command" in line and " id on pts/3 by alice pid 42" in line


# ---- rules -----------------------------------------------------------------------------------

def _rule(detection: str) -> str:
    return ("title: t\nid: 6c0f7c51-1a3b-4a8e-9a0e-111111111111\nstatus: test\n"
            f"logsource:\n    product: linux\ndetection:\n{detection}\nlevel: high\n")


def test_keyword_rules_read_the_typed_line_only() -> None:
    res = load_paths([builtin_rules_dir()])
    eng = Engine.build(res.rules)
    doc = to_ecs(_event(b"echo binary >> /dev/null"), HOST)
    [(key, rec)] = [(k, r) for k, r in ecs_to_records(doc) if k == SHELL_KEY]
    assert rec == {"command": "echo binary >> /dev/null"}
    assert [r.title for r in eng.match(key, rec)] == ["Suspicious Activity in Shell Commands"]
    # a keyword in the shell's own who-data is no typed command
    quiet = _event(b"ls")
    quiet.process.args = [b"bash", b"-c", b"history -c"]
    [(key, rec)] = [(k, r) for k, r in ecs_to_records(to_ecs(quiet, HOST)) if k == SHELL_KEY]
    assert eng.match(key, rec) == []


def test_category_less_rules_with_fields_stay_refused() -> None:
    [kw] = load_text(_rule("    keywords:\n        - 'nc -l -p '\n    condition: keywords"),
                     "k.yml").rules
    assert is_shell_rule(kw) and coverage_warnings(kw) == []
    [fields] = load_text(_rule("    sel:\n        foo: bar\n    condition: not sel"),
                         "f.yml").rules
    assert not is_shell_rule(fields)
    assert [w for _, w in coverage_warnings(fields)] == [
        "logsource names no category (log lines of the product): not provided by Vigil yet"]
    eng = Engine.build([kw, fields])
    assert [r.title for r in eng.match(SHELL_KEY, {"command": "nc -l -p 4444"})] == ["t"]
    assert eng.match(SHELL_KEY, {"command": "ls"}) == []   # `not sel` never matches


# ---- config ----------------------------------------------------------------------------------

def test_config_switch(tmp_path: Path) -> None:
    assert load_config(None).shell.enabled
    f = tmp_path / "c.yml"
    f.write_text("directories: []\nshell:\n  enabled: false\n")
    assert not load_config(f).shell.enabled
    f.write_text("directories: []\nshell:\n  enable: false\n")
    with pytest.raises(ConfigError, match=r"c.yml:3:"):
        load_config(f)


def test_no_shell_flag() -> None:
    from vigil.cli import build_parser

    assert build_parser().parse_args(["run", "--no-shell"]).no_shell
    assert not build_parser().parse_args(["run"]).no_shell


# ---- finding readline ------------------------------------------------------------------------

BASH = Path("/usr/bin/bash")
needs_bash = pytest.mark.skipif(not BASH.is_file(), reason="no /usr/bin/bash")


@needs_bash
def test_host_bash_deduplicated_and_resolved() -> None:
    h = uprobes.HOOKS[0]
    found = uprobes.find_binaries(h, roots=[])
    assert found == [(str(BASH.resolve()), "/")]   # /bin/bash is the same file
    t = uprobes.resolve(h, str(BASH))
    assert t.ok and t.by_name and t.found_in == ".dynsym" and t.attach_path == str(BASH)
    nm = subprocess.run(["nm", "-D", "--defined-only", str(BASH)], capture_output=True,
                        text=True)
    if nm.returncode == 0:
        [addr] = [ln.split()[0] for ln in nm.stdout.splitlines() if ln.endswith(" readline")]
        assert t.offset is not None and 0 < t.offset <= int(addr, 16)


@needs_bash
def test_container_roots_bounded_and_regular_files_only(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"layer{i}" / "diff" / "usr" / "bin").mkdir(parents=True)
    shutil.copy(BASH, tmp_path / "layer0" / "diff" / "usr" / "bin" / "bash")
    (tmp_path / "layer1" / "diff" / "usr" / "bin" / "bash").symlink_to("/usr/bin/bash")
    (tmp_path / "layer2" / "diff" / "usr" / "bin" / "bash").write_text("#!/bin/sh\n")
    roots = uprobes.container_roots([str(tmp_path / "*" / "diff")])
    assert len(roots) == 3
    assert len(uprobes.container_roots([str(tmp_path / "*" / "diff")], limit=2)) == 2
    found = uprobes.find_binaries(uprobes.HOOKS[0], roots)
    paths = [p for p, _ in found]
    assert str(tmp_path / "layer0/diff/usr/bin/bash") in paths
    assert str(tmp_path / "layer1/diff/usr/bin/bash") not in paths   # a symlink: skipped
    [script] = [uprobes.resolve(uprobes.HOOKS[0], p, r) for p, r in found if "layer2" in p]
    assert script.status == "not-elf" and "symbol" not in script.line()


def test_imported_readline_hooks_the_library_in_the_same_root(tmp_path: Path) -> None:
    lib = next(iter(Path("/").glob("lib/*-linux-gnu/libreadline.so.8")), None)
    if shutil.which("cc") is None or lib is None \
            or not Path("/usr/include/readline/readline.h").exists():
        pytest.skip("needs cc and libreadline-dev (./do installs them)")
    src = tmp_path / "b.c"
    src.write_text("#include <stdio.h>\n#include <readline/readline.h>\n"
                   "int main(void) { return readline(\"\") == NULL; }\n")
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    subprocess.run(["cc", "-o", str(root / "usr/bin/bash"), str(src), "-lreadline"],
                   check=True, capture_output=True)
    h = uprobes.HOOKS[0]
    t = uprobes.resolve(h, str(root / "usr/bin/bash"), str(root))
    assert t.status == "symbol-not-found" and "libreadline.so.8" in t.detail
    (root / lib.parent.relative_to("/")).mkdir(parents=True)
    shutil.copy(lib, root / lib.relative_to("/"))
    t = uprobes.resolve(h, str(root / "usr/bin/bash"), str(root))
    assert t.ok and t.attach_path == str(root / lib.relative_to("/"))
    assert t.found_in == "libreadline.so.8 (.dynsym)" and t.binary.endswith("usr/bin/bash")
