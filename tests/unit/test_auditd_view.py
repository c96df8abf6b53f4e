"""The auditd-record view (vigil/rules/auditd.py): the records of Vigil's own events, built the
way the agent builds them (vigil.events.model -> vigil.outputs.ecs), the field table and its
README copy, the load-time warnings, and the shipped auditd rules firing on the events they are
about while benign look-alikes do not. Matching itself is proven against pySigma by
tests/rules/test_differential.py."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from vigil.events.model import ExecEvent, ExitEvent, FileEvent, FileOp, LostEvents, Process
from vigil.outputs.ecs import exec_to_ecs, exit_to_ecs, file_to_ecs, lost_to_ecs
from vigil.rules.auditd import AUDITD, AUDITD_FIELDS, TYPES, audit_field, auditd_records
from vigil.rules.fieldmap import auditd_markdown_table, coverage_warnings, ecs_to_records
from vigil.rules.loader import builtin_rules_dir, load_paths, load_text
from vigil.rules.matcher import Engine, logsource_key
from vigil.rules.model import LogSource

HOST: dict[str, Any] = {"name": "h"}
TS = 1_767_225_600_000_000_000
UNSET = 0xFFFFFFFF


def proc(exe: str = "/usr/bin/bash", args: list[str] | None = None, comm: str | None = None,
         uid: int = 1000, euid: int | None = None, auid: int = 1000, ses: int = 4) -> Process:
    a = args if args is not None else [exe.rsplit("/", 1)[-1]]
    return Process(pid=4242, tid=4242, ppid=100, start_time=7, parent_start_time=3, uid=uid,
                   gid=uid, euid=uid if euid is None else euid, egid=uid, auid=auid,
                   session_id=ses, comm=(comm or exe.rsplit("/", 1)[-1]).encode(),
                   cgroup_id=1, mnt_ns=2, executable=exe.encode(),
                   args=[x.encode() for x in a], parent_executable=b"/usr/bin/bash",
                   parent_args=[b"bash"], user_name="alice", euser_name="alice",
                   group_name="alice")


def exec_doc(args: list[str], exe: str | None = None, cwd: bytes | None = None,
             **kw: Any) -> dict[str, Any]:
    path = exe or f"/usr/bin/{args[0]}"
    return exec_to_ecs(ExecEvent(TS, proc(path, args, **kw), cwd=cwd), HOST)


def file_doc(op: FileOp, path: str, target: str | None = None, errno: int = 0,
             p: Process | None = None, inode: int | None = 99) -> dict[str, Any]:
    ev = FileEvent(TS, op, path.encode(), p or proc(), errno=errno,
                   target_path=target.encode() if target else None, inode=inode)
    return file_to_ecs(ev, HOST)


# --- records ------------------------------------------------------------------------------

def test_exec_records() -> None:
    doc = exec_doc(["getcap", "-r", "/"], "/usr/sbin/getcap", uid=1000, euid=0)
    assert auditd_records(doc) == [
        {"type": "SYSCALL", "SYSCALL": "execve", "success": "yes", "items": "1", "ppid": "100",
         "pid": "4242", "auid": "1000", "uid": "1000", "gid": "1000", "euid": "0",
         "egid": "1000", "ses": "4", "comm": "getcap", "exe": "/usr/sbin/getcap"},
        {"type": "EXECVE", "argc": "3", "a0": "getcap", "a1": "-r", "a2": "/"},
        {"type": "PATH", "item": "0", "name": "/usr/sbin/getcap", "nametype": "NORMAL"},
    ]
    keys = [k for k, _ in ecs_to_records(doc)]
    assert keys == ["process_creation", AUDITD, AUDITD, AUDITD, "vigil:process"]
    # built only for the keys some rule reads
    assert [k for k, _ in ecs_to_records(doc, {"process_creation"})] == ["process_creation"]


def test_exec_working_directory_is_a_cwd_record() -> None:
    """auditd's order for an execve: SYSCALL, EXECVE, CWD, PATH."""
    doc = exec_doc(["ls", "-l"], cwd=b"/srv/with space")
    assert [r["type"] for r in auditd_records(doc)] == ["SYSCALL", "EXECVE", "CWD", "PATH"]
    assert auditd_records(doc)[2] == {"type": "CWD", "cwd": "/srv/with space"}


def test_unset_login_uid_and_session_print_as_auditd_does() -> None:
    doc = exec_doc(["id"], auid=UNSET, ses=UNSET)
    sc = auditd_records(doc)[0]
    assert (sc["auid"], sc["ses"]) == ("4294967295", "4294967295")


# operation -> (SYSCALL, [(name, nametype)]) for a file event on /etc/x (old name /tmp/y)
SHAPES: dict[FileOp, tuple[str, list[tuple[str, str]]]] = {
    FileOp.CREATE: ("open", [("/etc/", "PARENT"), ("/etc/x", "CREATE")]),
    FileOp.MODIFY: ("open", [("/etc/x", "NORMAL")]),
    FileOp.OPEN: ("open", [("/etc/x", "NORMAL")]),
    FileOp.DELETE: ("unlink", [("/etc/", "PARENT"), ("/etc/x", "DELETE")]),
    FileOp.RMDIR: ("rmdir", [("/etc/", "PARENT"), ("/etc/x", "DELETE")]),
    FileOp.RENAME: ("rename", [("/tmp/", "PARENT"), ("/etc/", "PARENT"), ("/tmp/y", "DELETE"),
                               ("/etc/x", "CREATE")]),
    FileOp.CHMOD: ("chmod", [("/etc/x", "NORMAL")]),
    FileOp.CHOWN: ("chown", [("/etc/x", "NORMAL")]),
    FileOp.TRUNCATE: ("truncate", [("/etc/x", "NORMAL")]),
    FileOp.LINK: ("link", [("/tmp/y", "NORMAL"), ("/etc/", "PARENT"), ("/etc/x", "CREATE")]),
    FileOp.SYMLINK: ("symlink", [("/etc/", "PARENT"), ("/etc/x", "CREATE")]),
    FileOp.MKDIR: ("mkdir", [("/etc/", "PARENT"), ("/etc/x", "CREATE")]),
    FileOp.SETXATTR: ("setxattr", [("/etc/x", "NORMAL")]),
    FileOp.REMOVEXATTR: ("removexattr", [("/etc/x", "NORMAL")]),
    FileOp.MKNOD: ("mknod", [("/etc/", "PARENT"), ("/etc/x", "CREATE")]),
}


def test_every_operation_has_a_shape() -> None:
    assert set(SHAPES) == set(FileOp)


@pytest.mark.parametrize("op", list(FileOp), ids=lambda op: op.name.lower())
def test_file_records(op: FileOp) -> None:
    # rename and link: Vigil's event names the old path and the new one as its target
    two = op in (FileOp.RENAME, FileOp.LINK)
    doc = file_doc(op, "/tmp/y" if two else "/etc/x", target="/etc/x" if two else "/usr/x")
    sc, *paths = auditd_records(doc)
    syscall, shape = SHAPES[op]
    assert sc["type"] == "SYSCALL" and sc["SYSCALL"] == syscall and sc["success"] == "yes"
    assert "exit" not in sc and sc["items"] == str(len(shape))
    assert sc["exe"] == "/usr/bin/bash" and sc["comm"] == "bash" and sc["uid"] == "1000"
    assert [(p["name"], p["nametype"]) for p in paths] == shape
    assert [p["item"] for p in paths] == [str(i) for i in range(len(shape))]
    assert all(p["type"] == "PATH" for p in paths)
    # the inode is the file's, never a directory's (PARENT)
    assert all(("inode" in p) == (p["nametype"] != "PARENT") for p in paths)
    # mknod and a plain create share the action "created": the operation tells them apart
    if op == FileOp.MKNOD:
        del doc["vigil"]["file"]["operation"]
        assert auditd_records(doc)[0]["SYSCALL"] == "open"


def test_failed_attempts() -> None:
    denied = proc("/usr/bin/touch", ["touch", "/etc/ld.so.preload"], uid=33)
    sc, path = auditd_records(file_doc(FileOp.OPEN, "/etc/ld.so.preload", errno=13, p=denied))
    assert (sc["success"], sc["exit"], sc["uid"]) == ("no", "-13", "33")
    assert (path["name"], path["nametype"]) == ("/etc/ld.so.preload", "NORMAL")
    # may_create/may_delete record the child before the permission check, may_o_create not
    recs = auditd_records(file_doc(FileOp.DELETE, "/etc/issue", errno=1))
    assert recs[0]["exit"] == "-1" and [r["nametype"] for r in recs[1:]] == ["PARENT", "DELETE"]
    recs = auditd_records(file_doc(FileOp.CREATE, "/etc/x", errno=13))
    assert [(r["name"], r["nametype"]) for r in recs[1:]] == [("/etc/", "PARENT")]
    # the Sysmon-named categories take successes only; the auditd and Vigil's own views both
    assert [k for k, _ in ecs_to_records(file_doc(FileOp.DELETE, "/etc/x", errno=13))] == \
        [AUDITD] * 3 + ["vigil:file"]


def test_events_no_system_call_made_have_no_records() -> None:
    p = proc()
    assert auditd_records(exit_to_ecs(ExitEvent(TS, p, 0), HOST)) == []
    assert auditd_records(lost_to_ecs(LostEvents(TS, "file", 3), HOST)) == []
    rescan = file_to_ecs(FileEvent(TS, FileOp.MODIFY, b"/etc/x", p, source="rescan"), HOST)
    assert auditd_records(rescan) == []
    assert auditd_records({}) == [] and auditd_records({"event": "x"}) == []


# --- the field table and the README -------------------------------------------------------

def _all_records() -> list[dict[str, str]]:
    docs = [exec_doc(["ls", "-l"]), exec_doc(["ls"], cwd=b"/home/alice")]
    docs += [file_doc(op, "/tmp/y", target="/etc/x") for op in FileOp]
    docs.append(file_doc(FileOp.OPEN, "/etc/x", errno=13))
    return [r for d in docs for r in auditd_records(d)]


def test_the_table_says_what_the_records_carry() -> None:
    made = {(r["type"], f) for r in _all_records() for f in r}
    for t, f in made:
        af = audit_field(f)
        assert af is not None and t in af.sources, (t, f)
    for af in AUDITD_FIELDS:
        for t in af.sources:
            assert any(rt == t and af.matches(f) for rt, f in made), (af.name, t)
    assert {t for t, _ in made} == set(TYPES)   # CWD: an exec's, when it has one


def test_the_auditd_table_is_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    table = auditd_markdown_table()
    assert "| `SYSCALL` |" in table and "| `a0…aN` |" in table
    assert table in readme, "README's auditd table differs from vigil/rules/auditd.py"


# --- load-time warnings -------------------------------------------------------------------

AUDITD_RULE = """\
title: T
id: 00000000-0000-4000-8000-00000000000{n}
status: test
logsource:
    product: linux
    service: auditd
detection:
{body}
level: low
"""


def warnings(body: str, n: int = 1) -> list[str]:
    res = load_text(AUDITD_RULE.format(n=n, body=body), "r.yml")
    assert not res.refused, [str(e) for e in res.refused]
    return [w for _, w in coverage_warnings(res.rules[0])]


def test_warnings_name_what_the_view_cannot_give() -> None:
    assert warnings("    s:\n        type: SYSCALL\n        key: x\n    condition: s") == [
        "field 'key' is not provided by Vigil for auditd: audit rule keys come from the audit "
        "rules (`auditctl -k`), and Vigil applies none"]
    assert warnings("    s:\n        type: [TTY, USER_TTY]\n    condition: s") == [
        "auditd records of type 'TTY', 'USER_TTY' are not made by Vigil (its view has "
        "SYSCALL, EXECVE, CWD, PATH records)"]
    w = warnings("    s:\n        type: SYSCALL\n        SYSCALL: memfd_create\n"
                 "        a0: 4\n    condition: s")
    assert w == ["SYSCALL 'memfd_create' is never given: Vigil sees execs and file changes, "
                 "not this system call",
                 "field 'a0' is not provided by Vigil in SYSCALL records: the call's raw "
                 "arguments are not in Vigil's events"]
    assert warnings("    s:\n        SYSCALL: openat\n    condition: s") == [
        "SYSCALL 'openat' is never given: Vigil names the call 'open' (it does not know the "
        "variant)"]
    assert warnings("    s:\n        Image: /x\n    condition: s") == [
        "field 'Image' is not in Vigil's auditd view"]


def test_no_warning_for_what_the_view_gives() -> None:
    assert warnings("    s:\n        type: SYSCALL\n        SYSCALL: [execve, execveat]\n"
                    "        euid: 33\n    condition: s") == []
    assert warnings("    s:\n        type: EXECVE\n        a0: x\n        a12: y\n"
                    "    k:\n        - z\n    condition: s and k") == []
    assert warnings("    s:\n        type: PATH\n        name: /x\n        nametype: CREATE\n"
                    "    condition: s") == []


def test_rules_on_a_service_are_keyed_by_it() -> None:
    assert logsource_key(LogSource("linux", None, "auditd")) == "auditd"
    assert logsource_key(LogSource("linux", "process_creation", None)) == "process_creation"
    # a Linux rule with neither: the typed shell commands (vigil.rules.shellview)
    assert logsource_key(LogSource("linux")) == "linux:shell"
    assert logsource_key(LogSource("windows")) is None
    res = load_text(AUDITD_RULE.format(n=1, body="    s:\n        type: EXECVE\n    k:\n"
                                       "        - 'pass'\n    condition: s and k"), "r.yml")
    eng = Engine.build(res.rules)
    assert eng.match(AUDITD, {"type": "EXECVE", "a0": "grep", "a1": "password"})
    assert not eng.match(AUDITD, {"type": "EXECVE", "a0": "grep", "a1": "root"})
    assert not eng.match("process_creation", {"type": "EXECVE", "a1": "password"})


# --- the shipped auditd rules on real-shaped events ---------------------------------------

@cache
def _engine() -> Engine:
    res = load_paths([builtin_rules_dir() / "sigmahq" / "linux" / "auditd"])
    assert not res.refused and len(res.rules) == 48
    eng = Engine.build(res.rules)
    assert not eng.errors
    return eng


def fired(doc: dict[str, Any]) -> set[str]:
    return {Path(r.source).stem.removeprefix("lnx_auditd_")
            for k, rec in ecs_to_records(doc) if k == AUDITD for r in _engine().match(k, rec)}


ATTACKS: list[tuple[str, dict[str, Any], str]] = [
    ("getcap -r /", exec_doc(["getcap", "-r", "/"], "/usr/sbin/getcap"),
     "capabilities_discovery"),
    ("cp /bin/sh .../crond", exec_doc(["cp", "/bin/sh", "/tmp/x/crond"]), "masquerading_crond"),
    ("chmod 777", exec_doc(["chmod", "777", "/srv/x"]), "susp_cmds"),
    ("ASLR off", exec_doc(["sysctl", "-w", "kernel.randomize_va_space=0"], "/usr/sbin/sysctl"),
     "disable_aslr_protection"),
    ("insmod", exec_doc(["insmod", "rootkit.ko"], "/usr/bin/kmod", comm="insmod"),
     "load_module_insmod"),
    ("split", exec_doc(["split", "-b", "1M", "loot.tar"]), "split_file_into_pieces"),
    ("exec from /tmp", exec_doc(["./x"], "/tmp/.x/payload"), "susp_exe_folders"),
    ("hidden binary", exec_doc(["run"], "/home/alice/.local/bin/run"),
     "hidden_binary_execution"),
    ("www-data execs", exec_doc(["id"], uid=33), "web_rce"),
    ("useradd", exec_doc(["useradd", "eve"], "/usr/sbin/useradd"), "create_account"),
    ("grep password", exec_doc(["grep", "-r", "password", "/etc"]), "find_cred_in_files"),
    ("dd padding", exec_doc(["dd", "if=/dev/zero", "count=1"]), "binary_padding"),
    ("mknod", file_doc(FileOp.MKNOD, "/dev/shm/pipe"),
     "susp_special_file_creation_via_mknod_syscall"),
    ("new unit", file_doc(FileOp.CREATE, "/etc/systemd/system/evil.service"),
     "systemd_service_creation"),
    ("unit renamed in", file_doc(FileOp.RENAME, "/tmp/u", "/etc/systemd/system/evil.service"),
     "systemd_service_creation"),
    ("ld.so.preload", file_doc(FileOp.CREATE, "/etc/ld.so.preload"), "ld_so_preload_mod"),
    ("ld.so.preload refused", file_doc(FileOp.OPEN, "/etc/ld.so.preload", errno=13),
     "ld_so_preload_mod"),
    ("bashrc", file_doc(FileOp.MODIFY, "/home/alice/.bashrc"),
     "unix_shell_configuration_modification"),
    ("audit config", file_doc(FileOp.MODIFY, "/etc/audit/auditd.conf"),
     "auditing_config_change"),
    ("pam", file_doc(FileOp.MODIFY, "/etc/pam.d/system-auth"), "keylogging_with_pam_d"),
    ("sysrq", file_doc(FileOp.MODIFY, "/proc/sysrq-trigger"), "magic_system_request_key"),
    # where /var/run is a directory (not a symlink to /run) its canonical name is itself
    ("bpfdoor pid file", file_doc(FileOp.CREATE, "/var/run/haldrund.pid"),
     "bpfdoor_file_accessed"),
]

LOOKALIKES: list[tuple[str, dict[str, Any], str]] = [
    ("getcap one file", exec_doc(["getcap", "/usr/bin/ping"], "/usr/sbin/getcap"),
     "capabilities_discovery"),
    ("cp to crond, not a shell", exec_doc(["cp", "/etc/hosts", "/tmp/x/crond"]),
     "masquerading_crond"),
    ("chmod 644", exec_doc(["chmod", "644", "/srv/x"]), "susp_cmds"),
    ("ASLR on", exec_doc(["sysctl", "-w", "kernel.randomize_va_space=2"], "/usr/sbin/sysctl"),
     "disable_aslr_protection"),
    ("lsmod", exec_doc(["lsmod"], "/usr/bin/kmod", comm="lsmod"), "load_module_insmod"),
    ("exec from /usr", exec_doc(["true"]), "susp_exe_folders"),
    ("a cache binary", exec_doc(["x"], "/home/alice/.cache/x"), "hidden_binary_execution"),
    ("uid 1000 execs", exec_doc(["id"]), "web_rce"),
    ("grep hostname", exec_doc(["grep", "-r", "hostname", "/etc"]), "find_cred_in_files"),
    ("dd with of=", exec_doc(["dd", "if=/dev/zero", "of=/tmp/x", "count=1"]),
     "binary_padding"),
    ("a plain file", file_doc(FileOp.CREATE, "/dev/shm/file"),
     "susp_special_file_creation_via_mknod_syscall"),
    ("a unit edited", file_doc(FileOp.MODIFY, "/etc/systemd/system/ok.service"),
     "systemd_service_creation"),
    ("ld.so.conf.d", file_doc(FileOp.CREATE, "/etc/ld.so.conf.d/x.conf"), "ld_so_preload_mod"),
    ("notes in home", file_doc(FileOp.MODIFY, "/home/alice/notes.txt"),
     "unix_shell_configuration_modification"),
    ("auditor.conf", file_doc(FileOp.MODIFY, "/etc/auditor.conf"), "auditing_config_change"),
    ("a /run pid file", file_doc(FileOp.CREATE, "/run/sshd.pid"), "bpfdoor_file_accessed"),
]


@pytest.mark.parametrize("what,doc,rule", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_shipped_rule_fires(what: str, doc: dict[str, Any], rule: str) -> None:
    assert rule in fired(doc)


@pytest.mark.parametrize("what,doc,rule", LOOKALIKES, ids=[a[0] for a in LOOKALIKES])
def test_benign_lookalike_does_not_fire(what: str, doc: dict[str, Any], rule: str) -> None:
    assert rule not in fired(doc)


def test_what_the_view_cannot_make_fire() -> None:
    """Documented limits: a keyword spanning two arguments (as in a raw auditd line, where
    each argument is its own aN="..."), and a name Vigil reports canonically."""
    redirect = exec_doc(["iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-j",
                         "REDIRECT", "--to-ports", "42392"], "/usr/sbin/iptables")
    assert "bpfdoor_port_redirect" not in fired(redirect)
    glued = exec_doc(["iptables", "-t", "nat", "-A", "PREROUTING", "--to-ports 42392"],
                     "/usr/sbin/iptables")
    assert "bpfdoor_port_redirect" in fired(glued)
    # on a host where /var/run -> /run, touch /var/run/haldrund.pid is reported as /run/...
    assert "bpfdoor_file_accessed" not in fired(file_doc(FileOp.CREATE, "/run/haldrund.pid"))


def test_one_rule_fires_on_one_record() -> None:
    """Each record is matched on its own: an EXECVE condition and a PATH condition of one
    search never meet (the rule's type selects one record)."""
    doc = exec_doc(["cat", "/etc/ld.so.preload"])
    recs = [rec for k, rec in ecs_to_records(doc) if k == AUDITD]
    assert [r["type"] for r in recs] == ["SYSCALL", "EXECVE", "PATH"]
    assert "ld_so_preload_mod" not in fired(doc)   # an argument is no PATH record
    no_args = exec_doc(["x"])
    no_args["process"] = {k: v for k, v in no_args["process"].items() if k != "args"}
    assert [r["type"] for r in auditd_records(no_args)] == ["SYSCALL", "PATH"]
    replaced = replace(proc(), executable=None)
    assert [r["type"] for r in auditd_records(exec_to_ecs(ExecEvent(TS, replaced), HOST))] \
        == ["SYSCALL", "EXECVE"]
