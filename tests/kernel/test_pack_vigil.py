"""Vigil's own rule pack (vigil/data/rules/vigil/) on real programs: every rule fires on the
real thing, with the acting process and the file, and stays quiet for its benign look-alike.

The file rules name this machine's /etc/passwd, /usr/bin, /var/log..., which a test must not
touch. So each rule is copied with its absolute paths moved onto a scratch root R: every
TargetFilename / file.path value compared from its start (exact, ``startswith``, wildcard, a
regex anchored at ``^/``) gets R in front (/etc/passwd -> R/etc/passwd); ``contains`` and
``endswith`` values, which hold no root, stay. The agent runs those copies alone
(``rules.builtin: false``), watching R's copies of the default configuration's directories
(R/etc, R/usr/bin, R/usr/sbin, R/usr/local/bin, R/usr/local/sbin, R/root/.ssh): everything else
the rules need (R/var/log, R/var/spool/cron, R/home, R/usr/lib, root's start-up files) is
watched the way a real host's is, by the rules' own watch-only entries.

The exclusions are NOT rewritten: they name real programs by their real path (Image /
process.executable), and every look-alike is that real program, pointed at R by its own
alternate-root option: ``dpkg --root`` installing and removing a real .deb built here,
``useradd/usermod/groupadd --prefix``, ``systemctl --root``, ``deb-systemd-helper`` under
DPKG_ROOT, ``update-alternatives --root``, ``dpkg-statoverride --root``, ``ldconfig -n`` on a
copy of a real library, ``visudo -f`` with an editor, ``logrotate`` with a configuration naming
R's logs. The triggers are real tools (tee, cp, mv, sed -i, rm, truncate, chmod) on R's files.
A benign test shows the look-alike's own events reached the agent (telemetry for configured
directories) or, on watch-only paths, ends with a control write by an ordinary tool that does
alert, so "no alert" cannot mean "not watched".

The process rules are tested as shipped (``rules.builtin: true``, ``rule.ruleset: vigil``) on
harmless copies of /usr/bin/true run from /dev/shm, /tmp and /var/tmp, a memfd, and a deleted
file (named, as the kernel names them, ``/memfd:NAME (deleted)`` and ``PATH (deleted)``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_proc import CHILD_PY, AgentProc, Child, Event, get, is_file_event, scaled, write_config

from vigil.rules.loader import builtin_rules_dir, load_paths

pytestmark = [pytest.mark.root]

PACK = builtin_rules_dir() / "vigil"
WAIT = 15   # seconds for an alert or event that must come

ACCOUNTS = "file_event_vigil_account_database_changed"
SUDOERS = "file_event_vigil_sudoers_changed"
AUTHKEYS = "file_event_vigil_ssh_authorized_keys_changed"
CRON = "file_event_vigil_cron_job_written"
SYSTEMD = "file_event_vigil_systemd_unit_written"
PROFILE = "file_event_vigil_shell_profile_changed"
USER_PROFILE = "file_event_vigil_user_shell_profile_changed"
PRELOAD = "file_event_vigil_ld_so_preload_written"
BIN_WRITTEN = "file_event_vigil_system_binary_written"
BIN_DELETED = "file_delete_vigil_system_binary_deleted"
LOG_DELETED = "file_delete_vigil_log_deleted"
LOG_TRUNCATED = "vigil_file_log_truncated"
SETUID = "vigil_file_setuid_setgid_set"
EXEC_TMP = "proc_creation_vigil_exec_from_world_writable_dir"
FILELESS = "proc_creation_vigil_fileless_exec"
PROCESS_RULES = (EXEC_TMP, FILELESS)
OWN_LOGSOURCE = (LOG_TRUNCATED, SETUID)


def rule_doc(stem: str) -> dict[str, Any]:
    doc = yaml.safe_load((PACK / f"{stem}.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def rid(stem: str) -> str:
    return str(rule_doc(stem)["id"])


# ---------------------------------------------------------------------------------------------
# The pack as data


# rule -> (the test that triggers it, the test of its benign look-alikes)
TESTS = {
    ACCOUNTS: ("test_account_database_written_by_tee_and_sed",
               "test_account_tools_do_not_alert"),
    SUDOERS: ("test_sudoers_written_outside_visudo",
              "test_visudo_and_the_package_manager_do_not_alert"),
    AUTHKEYS: ("test_authorized_keys_written_for_root_and_a_user",
               "test_other_ssh_files_do_not_alert"),
    CRON: ("test_cron_jobs_written", "test_packaged_cron_job_and_at_spool_do_not_alert"),
    SYSTEMD: ("test_systemd_units_written",
              "test_packaged_units_and_their_enablement_do_not_alert"),
    PROFILE: ("test_shell_start_up_files_changed", "test_packaged_profile_script_does_not_alert"),
    USER_PROFILE: ("test_user_shell_start_up_file_changed",
                   "test_useradd_skeleton_and_deeper_files_do_not_alert"),
    PRELOAD: ("test_ld_so_preload_written", "test_ldconfig_writing_its_cache_does_not_alert"),
    BIN_WRITTEN: ("test_system_binaries_and_libraries_written",
                  "test_package_manager_alternatives_and_ldconfig_do_not_alert"),
    BIN_DELETED: ("test_system_binaries_and_libraries_deleted",
                  "test_package_removal_does_not_alert"),
    LOG_DELETED: ("test_log_deleted",
                  "test_log_rotation_and_compressing_rotated_logs_do_not_alert",
                  "test_apt_replacing_its_own_log_does_not_alert"),
    LOG_TRUNCATED: ("test_log_truncated", "test_logrotate_copytruncate_does_not_alert"),
    SETUID: ("test_setuid_and_setgid_bits_set",
             "test_packaged_setuid_and_ordinary_modes_do_not_alert"),
    EXEC_TMP: ("test_programs_run_from_tmp_dev_shm_and_var_tmp",
               "test_programs_elsewhere_and_files_in_tmp_do_not_alert"),
    FILELESS: ("test_program_run_from_a_memfd",
               "test_program_run_through_a_descriptor_of_a_real_file_does_not_alert"),
}


# rules on what the agent always watches (vigil.ownfiles, vigil.sysctl), fired in their own
# module with their look-alikes (the agent's own writes; a write that tightens a knob)
ELSEWHERE = {
    "vigil_file_own_files_changed":
        ("test_self_protection", "test_another_process_changing_vigils_own_files_is_an_alert"),
    "vigil_file_sysctl_weakened":
        ("test_self_protection",
         "test_sysctl_write_is_reported_old_to_new_and_weakening_is_an_alert"),
    # privilege and tampering rules, with the events (test_privilege_events)
    "vigil_tampering_ptrace_other_user":
        ("test_privilege_events", "test_ptrace_attach_and_process_vm_write"),
    "vigil_privilege_escalation_to_root":
        ("test_privilege_events", "test_module_loads_and_an_escalation_no_call_explains"),
    "vigil_tampering_kernel_module_loaded":
        ("test_privilege_events", "test_module_loads_and_an_escalation_no_call_explains"),
    "vigil_shell_download_piped_to_shell":
        ("test_shell_commands", "test_download_piped_to_a_shell_is_an_alert"),
    "vigil_tampering_own_bpf_objects":
        ("test_privilege_events", "test_another_process_opening_the_agents_bpf_programs"),
}


def test_every_rule_of_the_pack_has_a_trigger_and_a_look_alike_test() -> None:
    import importlib

    assert sorted([*TESTS, *ELSEWHERE]) == sorted(p.stem for p in PACK.glob("*.yml"))
    for module, name in ELSEWHERE.values():
        assert callable(getattr(importlib.import_module(module), name, None)), name
    for stem, names in TESTS.items():
        cls = TestShippedProcessRules if stem in PROCESS_RULES else TestFileRulesOnAScratchRoot
        for name in names:
            assert callable(getattr(cls, name, None)), f"{stem}: {cls.__name__}.{name}"


def test_the_pack_loads_with_nothing_refused_and_complete_metadata() -> None:
    """The detection rules (one per file at the top of the pack; correlations/ holds the
    correlation rules and their base rules, tested with the correlation engine)."""
    files = sorted(PACK.glob("*.yml"))
    res = load_paths(files)
    assert not res.refused, [str(e) for e in res.refused]
    assert not res.with_warnings, [r.warnings for r in res.with_warnings]
    assert len(res.rules) == len(files)
    ids = [r.id for r in res.rules]
    assert len(set(ids)) == len(ids)
    for r in res.rules:
        assert r.id and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                                     r"[0-9a-f]{12}", r.id), r.where
        assert r.status == "experimental" and r.author == "Vigil" and r.date == "2026-12-07"
        assert r.description and r.falsepositives and r.level in ("low", "medium", "high")
        assert any(t.startswith("attack.t") for t in r.tags), r.where
        assert any(t.startswith("attack.") and not t.startswith("attack.t") for t in r.tags)
    whole = load_paths([builtin_rules_dir()])
    assert not whole.refused, [str(e) for e in whole.refused]


# ---------------------------------------------------------------------------------------------
# Rules moved onto a scratch root

PATH_FIELDS = frozenset({"TargetFilename", "SourceFilename", "file.path",
                         "vigil.file.original_path"})


def _moved(value: Any, mods: set[str], root: str) -> Any:
    if not isinstance(value, str):
        return value
    if "re" in mods:
        return "^" + re.escape(root) + value[1:] if value.startswith("^/") else value
    if mods & {"contains", "endswith"}:
        return value
    return root + value if value.startswith("/") else value


def _move_search(node: Any, root: str) -> Any:
    if isinstance(node, list):
        return [_move_search(x, root) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        field, *mods = key.split("|")
        if field in PATH_FIELDS:
            value = [_moved(v, set(mods), root) for v in value] if isinstance(value, list) \
                else _moved(value, set(mods), root)
        out[key] = value
    return out


def rewrite_rule(text: str, root: str) -> str:
    """The rule with its absolute path values moved under ``root``; its exclusions by
    program (Image, process.executable) and everything else unchanged."""
    doc = yaml.safe_load(text)
    doc["detection"] = {name: (search if name == "condition" else _move_search(search, root))
                        for name, search in doc["detection"].items()}
    return yaml.safe_dump(doc, sort_keys=False)


def test_rewrite_moves_paths_and_keeps_programs() -> None:
    text = (PACK / f"{SUDOERS}.yml").read_text()
    doc = yaml.safe_load(rewrite_rule(text, "/r"))["detection"]
    assert doc["selection_policy"] == {"TargetFilename": "/r/etc/sudoers"}
    assert doc["selection_dropin"] == {"TargetFilename|startswith": "/r/etc/sudoers.d/"}
    assert doc["filter_main_visudo"] == {"Image": ["/usr/sbin/visudo", "/usr/bin/visudo"]}
    assert doc["filter_main_ignored_by_sudo"] == rule_doc(SUDOERS)["detection"][
        "filter_main_ignored_by_sudo"]   # a regex not anchored at a root: unchanged
    user = yaml.safe_load(rewrite_rule((PACK / f"{USER_PROFILE}.yml").read_text(), "/r"))
    assert user["detection"]["selection_startup_file"]["TargetFilename|re"].startswith(
        "^/r/home/[^/]+/")
    links = yaml.safe_load(rewrite_rule((PACK / f"{SYSTEMD}.yml").read_text(), "/r"))
    assert links["detection"]["filter_main_enablement_links"] == {
        "TargetFilename|contains": [".wants/", ".requires/", ".upholds/"]}


# ---------------------------------------------------------------------------------------------
# Children, waits


def act(argv: Sequence[str], data: bytes | None = None, env: dict[str, str] | None = None
        ) -> Child:
    """Run ``argv`` (argv[0] absolute) to completion as root, ``data`` on its standard
    input; it must succeed. Its pid and executable are known exactly."""
    p = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, **env} if env else None)
    out, err = p.communicate(data, timeout=scaled(60))
    assert p.returncode == 0, f"{argv!r} exited {p.returncode}: {err.decode()}"
    return Child(pid=p.pid, ppid=os.getpid(), uid=0, comm=os.path.basename(argv[0])[:15],
                 exe=os.path.realpath(argv[0]), stdout=out.decode())


def of_rule(stem: str) -> Callable[[Event], bool]:
    want = rid(stem)
    return lambda e: get(e, "rule.id") == want


def alert_for(agent: AgentProc, stem: str, child: Child, path: Path | None = None,
              timeout: float = WAIT) -> Event:
    """The alert of rule ``stem`` for ``child`` (and ``path``), checked as a user reads it."""
    rule = of_rule(stem)

    def pred(e: Event) -> bool:
        return rule(e) and get(e, "process.pid") == child.pid and (
            path is None or get(e, "file.path") == str(path))

    a = agent.wait_for(pred, alerts=True, timeout=timeout)[0]
    assert get(a, "event.kind") == "alert"
    assert get(a, "rule.name") == rule_doc(stem)["title"]
    assert get(a, "vigil.rule.level") == rule_doc(stem)["level"]
    assert get(a, "process.executable") == child.exe
    assert get(a, "user.name") == "root"
    assert get(a, "threat.framework") == "MITRE ATT&CK"
    return a


def seen(agent: AgentProc, child: Child, path: Path, action: str | None = None) -> Event:
    """The telemetry event of ``child`` on ``path``: the look-alike reached the agent."""
    def pred(e: Event) -> bool:
        return (is_file_event(e) and get(e, "process.pid") == child.pid
                and get(e, "file.path") == str(path)
                and (action is None or get(e, "event.action") == action))
    return agent.wait_for(pred, timeout=WAIT)[0]


def barrier(agent: AgentProc, probe_dir: Path) -> None:
    """Every event before this call has been matched and its alerts read: the second probe's
    event comes in a later batch than the first's, and a batch's alerts follow its events."""
    agent.probe(probe_dir)
    agent.probe(probe_dir)


def new_alerts(agent: AgentProc, stem: str, since: int) -> list[Event]:
    rule = of_rule(stem)
    return [a for a in agent.alerts[since:] if rule(a)]


# ---------------------------------------------------------------------------------------------
# The scratch system


@dataclass
class System:
    """The agent on the rewritten rules, and the scratch root R it watches."""

    agent: AgentProc
    root: Path          # R
    probe: Path         # where readiness and barrier probes go (outside R)
    work: Path          # packages, configurations, staging: outside R, unwatched

    def r(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def barrier(self) -> None:
        barrier(self.agent, self.probe)

    def mark(self) -> int:
        """Where this test's alerts start: after every earlier test's have come."""
        self.barrier()
        return len(self.agent.alerts)


DEFAULT_DIRS = ("/etc", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
                "/root/.ssh")
PASSWD_LINES = {
    "passwd": "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
    "shadow": "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n",
    "group": "root:x:0:\ndaemon:x:1:\nusers:x:100:\n",
    "gshadow": "root:*::\ndaemon:*::\nusers:*::\n",
}


def _populate(r: Path) -> None:
    for d in (*DEFAULT_DIRS, "/etc/sudoers.d", "/etc/cron.d", "/etc/cron.daily",
              "/etc/profile.d", "/etc/systemd/system", "/etc/default", "/etc/skel",
              "/usr/lib/x86_64-linux-gnu", "/usr/lib/systemd/system", "/usr/lib/python3",
              "/var/lib/dpkg/info", "/var/lib/dpkg/updates", "/var/lib/dpkg/alternatives",
              "/etc/alternatives", "/var/log", "/var/spool/cron/crontabs",
              "/var/spool/cron/atjobs", "/home/alice/.ssh", "/home/alice/src",
              "/home/alice/.config/systemd/user"):
        (r / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (r / "root/.ssh").chmod(0o700)
    for name, text in PASSWD_LINES.items():
        (r / "etc" / name).write_text(text)
    (r / "etc/shadow").chmod(0o640)
    (r / "etc/gshadow").chmod(0o640)
    shutil.copy("/etc/login.defs", r / "etc/login.defs")
    (r / "etc/skel/.bashrc").write_text("# skel\n")
    (r / "etc/skel/.profile").write_text("# skel\n")
    (r / "etc/sudoers").write_text("root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n")
    (r / "etc/sudoers").chmod(0o440)
    (r / "etc/crontab").write_text("# m h dom mon dow user command\n")
    (r / "etc/profile").write_text("# /etc/profile\n")
    (r / "etc/bash.bashrc").write_text("# /etc/bash.bashrc\n")
    (r / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (r / "var/lib/dpkg/status").write_text("")
    for f in ("root/.bashrc", "home/alice/.bashrc", "home/alice/.profile"):
        (r / f).write_text("# start-up\n")
    for f in ("usr/bin/victim", "usr/bin/victim-b", "usr/bin/victim-s", "usr/bin/victim-t",
              "usr/sbin/victim-g", "usr/bin/plain"):
        shutil.copy("/usr/bin/true", r / f)
    shutil.copy("/usr/bin/true", r / "usr/lib/x86_64-linux-gnu/libvictim.so.1")
    for f in ("auth.log", "other.log", "syslog", "ct.log", "ct2.log", "app.log"):
        (r / "var/log" / f).write_text("Dec  7 03:00:00 host sshd[1]: Accepted password\n")
    (r / "var/log/old.log.1").write_text("rotated\n")


@pytest.fixture(scope="class")
def system() -> Iterator[System]:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs the real eBPF agent")
    base = Path(tempfile.mkdtemp(prefix="vigil-pack-", dir="/var/tmp")).resolve()
    base.chmod(0o755)
    root, probe, work, rules = base / "root", base / "w", base / "work", base / "rules"
    for d in (root, probe, work, rules):
        d.mkdir()
    try:
        _populate(root)
        for p in sorted(PACK.glob("*.yml")):
            if p.stem not in PROCESS_RULES:
                (rules / p.name).write_text(rewrite_rule(p.read_text(), str(root)))
        loaded = load_paths([rules])
        assert not loaded.refused, [str(e) for e in loaded.refused]
        cfg = write_config(
            base / "vigil.yaml", base,
            [{"path": str(root / d.lstrip("/"))} for d in DEFAULT_DIRS] + [{"path": str(probe)}],
            rules={"builtin": False, "paths": [str(rules)], "suppress_window": 0})
        agent = AgentProc(["--config", str(cfg)], db=base / "state" / "baseline.db").start()
        try:
            agent.probe(probe, timeout=60)
            yield System(agent, root, probe, work)
        finally:
            rc, summary = agent.stop()
        assert rc == 0, "\n".join(agent.stderr_lines[-20:])
        assert summary is not None and summary.dropped == 0, summary
    finally:
        shutil.rmtree(base, ignore_errors=True)


def build_deb(work: Path, name: str, files: dict[str, tuple[bytes, int]]) -> Path:
    """A real Debian package named ``name`` holding ``files`` (path -> (content, mode))."""
    tree = work / f"pkg-{name}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: Vigil tests <root@localhost>\nDescription: Vigil rule pack test package\n")
    for rel, (content, mode) in files.items():
        p = tree / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        p.chmod(mode)
    deb = work / f"{name}.deb"
    subprocess.run(["/usr/bin/dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


def dpkg(s: System, *args: str) -> Child:
    return act(["/usr/bin/dpkg", f"--root={s.root}", f"--log={s.root}/dpkg.log",
                "--force-script-chrootless", *args])


TRUE = Path("/usr/bin/true").read_bytes()


# ---------------------------------------------------------------------------------------------
# The file rules, on R


class TestFileRulesOnAScratchRoot:
    # -- credentials and authorization

    def test_account_database_written_by_tee_and_sed(self, system: System) -> None:
        s = system
        tee = act(["/usr/bin/tee", "-a", str(s.r("/etc/passwd"))],
                  b"toor:x:0:0::/root:/bin/bash\n")
        alert_for(s.agent, ACCOUNTS, tee, s.r("/etc/passwd"))
        # sed -i writes a temporary file beside it and renames it onto /etc/shadow
        sed = act(["/usr/bin/sed", "-i", "s/^daemon:\\*:/daemon:$6$x$y:/",
                   str(s.r("/etc/shadow"))])
        a = alert_for(s.agent, ACCOUNTS, sed, s.r("/etc/shadow"))
        assert get(a, "event.action") == "renamed"
        assert get(a, "rule.id") == rid(ACCOUNTS)
        assert "T1136.001" in get(a, "threat.technique.subtechnique.id")

    def test_account_tools_do_not_alert(self, system: System) -> None:
        s = system
        since = s.mark()
        add = act(["/usr/sbin/useradd", "--prefix", str(s.root), "-M", "-s",
                   "/usr/sbin/nologin", "vigilpack"])
        mod = act(["/usr/sbin/usermod", "--prefix", str(s.root), "-p", "$6$salt$hash",
                   "vigilpack"])
        grp = act(["/usr/sbin/groupadd", "--prefix", str(s.root), "vigilgrp"])
        for child, name in ((add, "passwd"), (add, "shadow"), (add, "group"),
                            (add, "gshadow"), (mod, "shadow"), (grp, "group")):
            seen(s.agent, child, s.r(f"/etc/{name}"), "renamed")
        assert "vigilpack:$6$salt$hash:" in s.r("/etc/shadow").read_text()
        s.barrier()
        assert new_alerts(s.agent, ACCOUNTS, since) == []

    def test_sudoers_written_outside_visudo(self, system: System) -> None:
        s = system
        drop = act(["/usr/bin/tee", str(s.r("/etc/sudoers.d/zz-evil"))],
                   b"intruder ALL=(ALL) NOPASSWD: ALL\n")
        alert_for(s.agent, SUDOERS, drop, s.r("/etc/sudoers.d/zz-evil"))
        main = act(["/usr/bin/tee", "-a", str(s.r("/etc/sudoers"))],
                   b"intruder ALL=(ALL) NOPASSWD: ALL\n")
        alert_for(s.agent, SUDOERS, main, s.r("/etc/sudoers"))

    def test_visudo_and_the_package_manager_do_not_alert(self, system: System) -> None:
        """visudo -f with an editor (a shell script writing the temporary file visudo gives
        it, as vi would): the editor writes NAME.tmp, which sudo never reads; visudo checks
        it and renames it onto NAME. dpkg installs a packaged drop-in."""
        s = system
        editor = s.work / "editor.sh"
        editor.write_text('#!/bin/sh\nfor a; do f="$a"; done\n'
                          'echo "vigil ALL=(ALL) NOPASSWD: /usr/bin/true" > "$f"\n')
        editor.chmod(0o755)
        deb = build_deb(s.work, "vigil-pack-sudoers",
                        {"/etc/sudoers.d/vigil-pack": (b"# packaged\n", 0o440)})
        since = s.mark()
        visudo = act(["/usr/sbin/visudo", "-f", str(s.r("/etc/sudoers.d/vigil"))],
                     env={"EDITOR": str(editor), "VISUAL": str(editor)})
        pkg = dpkg(s, "-i", str(deb))
        seen(s.agent, visudo, s.r("/etc/sudoers.d/vigil"), "renamed")
        tmp = [e for e in s.agent.matching(lambda e: get(e, "file.path") == str(
            s.r("/etc/sudoers.d/vigil.tmp")) and get(e, "process.executable") != visudo.exe)]
        assert tmp, "the editor's write of the temporary file was not seen"
        seen(s.agent, pkg, s.r("/etc/sudoers.d/vigil-pack"), "renamed")
        assert "NOPASSWD" in s.r("/etc/sudoers.d/vigil").read_text()
        s.barrier()
        assert new_alerts(s.agent, SUDOERS, since) == []

    def test_authorized_keys_written_for_root_and_a_user(self, system: System) -> None:
        s = system
        key = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFake x@y\n"
        root = act(["/usr/bin/tee", "-a", str(s.r("/root/.ssh/authorized_keys"))], key)
        alert_for(s.agent, AUTHKEYS, root, s.r("/root/.ssh/authorized_keys"))
        src = s.work / "key.pub"
        src.write_bytes(key)
        user = act(["/usr/bin/cp", str(src), str(s.r("/home/alice/.ssh/authorized_keys"))])
        a = alert_for(s.agent, AUTHKEYS, user, s.r("/home/alice/.ssh/authorized_keys"))
        assert get(a, "threat.technique.subtechnique.id") == ["T1098.004"]
        assert not [e for e in s.agent.events if "/home/alice/" in str(get(e, "file.path"))], \
            "a watch-only path (/home) was reported as telemetry"

    def test_other_ssh_files_do_not_alert(self, system: System) -> None:
        """ssh-keygen writing a key pair in root's .ssh, known_hosts written in a user's: the
        same directories, other files. The control: a key appended by tee does alert."""
        s = system
        since = s.mark()
        keygen = act(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vigil",
                      "-f", str(s.r("/root/.ssh/id_vigil"))])
        known = act(["/usr/bin/tee", str(s.r("/home/alice/.ssh/known_hosts"))],
                    b"host ssh-ed25519 AAAA\n")
        seen(s.agent, keygen, s.r("/root/.ssh/id_vigil.pub"))
        control = act(["/usr/bin/tee", "-a", str(s.r("/home/alice/.ssh/authorized_keys2"))],
                      b"ssh-ed25519 AAAA control\n")
        alert_for(s.agent, AUTHKEYS, control, s.r("/home/alice/.ssh/authorized_keys2"))
        s.barrier()
        pids = {get(a, "process.pid") for a in new_alerts(s.agent, AUTHKEYS, since)}
        assert pids == {control.pid}, (pids, keygen.pid, known.pid)

    # -- persistence

    def test_cron_jobs_written(self, system: System) -> None:
        s = system
        job = s.work / "evil.cron"
        job.write_text("* * * * * root /dev/shm/.x\n")
        cp = act(["/usr/bin/cp", str(job), str(s.r("/etc/cron.d/evil"))])
        alert_for(s.agent, CRON, cp, s.r("/etc/cron.d/evil"))
        spool = act(["/usr/bin/tee", str(s.r("/var/spool/cron/crontabs/root"))],
                    b"* * * * * /dev/shm/.x\n")
        alert_for(s.agent, CRON, spool, s.r("/var/spool/cron/crontabs/root"))
        crontab = act(["/usr/bin/tee", "-a", str(s.r("/etc/crontab"))],
                      b"* * * * * root /dev/shm/.x\n")
        alert_for(s.agent, CRON, crontab, s.r("/etc/crontab"))

    def test_packaged_cron_job_and_at_spool_do_not_alert(self, system: System) -> None:
        s = system
        deb = build_deb(s.work, "vigil-pack-cron",
                        {"/etc/cron.d/vigil-pack": (b"17 * * * * root true\n", 0o644),
                         "/etc/cron.daily/vigil-pack": (b"#!/bin/sh\ntrue\n", 0o755)})
        since = s.mark()
        pkg = dpkg(s, "-i", str(deb))
        at = act(["/usr/bin/tee", str(s.r("/var/spool/cron/atjobs/a0000101a2b3c4"))],
                 b"#!/bin/sh\ntrue\n")
        seen(s.agent, pkg, s.r("/etc/cron.d/vigil-pack"), "renamed")
        seen(s.agent, pkg, s.r("/etc/cron.daily/vigil-pack"), "renamed")
        control = act(["/usr/bin/tee", str(s.r("/var/spool/cron/crontabs/bob"))],
                      b"@reboot /tmp/x\n")
        alert_for(s.agent, CRON, control, s.r("/var/spool/cron/crontabs/bob"))
        s.barrier()
        pids = {get(a, "process.pid") for a in new_alerts(s.agent, CRON, since)}
        assert pids == {control.pid}, (pids, pkg.pid, at.pid)

    def test_systemd_units_written(self, system: System) -> None:
        s = system
        unit = s.work / "evil.service"
        unit.write_text("[Service]\nExecStart=/dev/shm/.x\n[Install]\n"
                        "WantedBy=multi-user.target\n")
        cp = act(["/usr/bin/cp", str(unit), str(s.r("/etc/systemd/system/evil.service"))])
        alert_for(s.agent, SYSTEMD, cp, s.r("/etc/systemd/system/evil.service"))
        user = act(["/usr/bin/tee", str(s.r("/home/alice/.config/systemd/user/evil.service"))],
                   unit.read_bytes())
        alert_for(s.agent, SYSTEMD, user, s.r("/home/alice/.config/systemd/user/evil.service"))
        lib = act(["/usr/bin/tee", str(s.r("/usr/lib/systemd/system/evil2.service"))],
                  unit.read_bytes())
        a = alert_for(s.agent, SYSTEMD, lib, s.r("/usr/lib/systemd/system/evil2.service"))
        assert get(a, "threat.technique.subtechnique.id") == ["T1543.002"]

    def test_packaged_units_and_their_enablement_do_not_alert(self, system: System) -> None:
        """dpkg installs two units; `systemctl --root` enables one and deb-systemd-helper
        (Perl, as a package's postinst runs it) the other: both make links in
        multi-user.target.wants/."""
        s = system
        body = b"[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/true\n" \
               b"[Install]\nWantedBy=multi-user.target\n"
        deb = build_deb(s.work, "vigil-pack-units", {
            "/usr/lib/systemd/system/vigil-pack.service": (body, 0o644),
            "/usr/lib/systemd/system/vigil-pack2.service": (body, 0o644)})
        since = s.mark()
        dpkg(s, "-i", str(deb))
        ctl = act(["/usr/bin/systemctl", f"--root={s.root}", "enable", "vigil-pack.service"])
        dsh = act(["/usr/bin/deb-systemd-helper", "enable", "vigil-pack2.service"],
                  env={"DPKG_ROOT": str(s.root), "DPKG_MAINTSCRIPT_PACKAGE": "vigil-pack-units",
                       "DPKG_MAINTSCRIPT_NAME": "postinst"})
        wants = "/etc/systemd/system/multi-user.target.wants/"
        seen(s.agent, ctl, s.r(wants + "vigil-pack.service"), "symlink-created")
        seen(s.agent, dsh, s.r(wants + "vigil-pack2.service"), "symlink-created")
        control = act(["/usr/bin/tee", str(s.r("/usr/lib/systemd/system/control.service"))],
                      body)
        alert_for(s.agent, SYSTEMD, control, s.r("/usr/lib/systemd/system/control.service"))
        s.barrier()
        pids = {get(a, "process.pid") for a in new_alerts(s.agent, SYSTEMD, since)}
        assert pids == {control.pid}, pids

    def test_shell_start_up_files_changed(self, system: System) -> None:
        s = system
        line = b"(/dev/shm/.x &) 2>/dev/null\n"
        profile = act(["/usr/bin/tee", "-a", str(s.r("/etc/profile"))], line)
        alert_for(s.agent, PROFILE, profile, s.r("/etc/profile"))
        dropin = act(["/usr/bin/tee", str(s.r("/etc/profile.d/zz.sh"))], line)
        alert_for(s.agent, PROFILE, dropin, s.r("/etc/profile.d/zz.sh"))
        root = act(["/usr/bin/tee", "-a", str(s.r("/root/.bashrc"))], line)
        alert_for(s.agent, PROFILE, root, s.r("/root/.bashrc"))

    def test_packaged_profile_script_does_not_alert(self, system: System) -> None:
        s = system
        deb = build_deb(s.work, "vigil-pack-profile",
                        {"/etc/profile.d/vigil-pack.sh": (b"export VIGIL=1\n", 0o644)})
        since = s.mark()
        pkg = dpkg(s, "-i", str(deb))
        seen(s.agent, pkg, s.r("/etc/profile.d/vigil-pack.sh"), "renamed")
        s.barrier()
        assert new_alerts(s.agent, PROFILE, since) == []

    def test_user_shell_start_up_file_changed(self, system: System) -> None:
        s = system
        tee = act(["/usr/bin/tee", "-a", str(s.r("/home/alice/.bashrc"))],
                  b"alias sudo='/tmp/.s'\n")
        a = alert_for(s.agent, USER_PROFILE, tee, s.r("/home/alice/.bashrc"))
        assert get(a, "vigil.rule.level") == "low"

    def test_useradd_skeleton_and_deeper_files_do_not_alert(self, system: System) -> None:
        """useradd -m copies the skeleton's start-up files into the new home; a .bashrc in a
        project below a home is no start-up file. Control: a write to alice's .profile."""
        s = system
        since = s.mark()
        add = act(["/usr/sbin/useradd", "--prefix", str(s.root), "-m", "-k",
                   str(s.r("/etc/skel")), "vigilbob"])
        assert s.r("/home/vigilbob/.bashrc").exists()
        deeper = act(["/usr/bin/tee", str(s.r("/home/alice/src/.bashrc"))], b"# project\n")
        control = act(["/usr/bin/tee", "-a", str(s.r("/home/alice/.profile"))], b"x\n")
        alert_for(s.agent, USER_PROFILE, control, s.r("/home/alice/.profile"))
        s.barrier()
        pids = {get(a, "process.pid") for a in new_alerts(s.agent, USER_PROFILE, since)}
        assert pids == {control.pid}, (pids, add.pid, deeper.pid)

    def test_ld_so_preload_written(self, system: System) -> None:
        s = system
        tee = act(["/usr/bin/tee", str(s.r("/etc/ld.so.preload"))], b"/lib/libhide.so\n")
        a = alert_for(s.agent, PRELOAD, tee, s.r("/etc/ld.so.preload"))
        assert get(a, "event.severity") == 73
        assert get(a, "threat.technique.subtechnique.id") == ["T1574.006"]

    def test_ldconfig_writing_its_cache_does_not_alert(self, system: System) -> None:
        """ldconfig writes the linker's cache beside the preload file (-X: no links, -C/-f: R's
        cache and configuration)."""
        s = system
        since = s.mark()
        ld = act(["/usr/sbin/ldconfig", "-X", "-C", str(s.r("/etc/ld.so.cache")), "-f",
                  str(s.r("/etc/ld.so.conf"))])
        seen(s.agent, ld, s.r("/etc/ld.so.cache"), "renamed")
        s.barrier()
        assert new_alerts(s.agent, PRELOAD, since) == []

    # -- binaries

    def test_system_binaries_and_libraries_written(self, system: System) -> None:
        s = system
        cp = act(["/usr/bin/cp", "/usr/bin/true", str(s.r("/usr/bin/sshd"))])
        a = alert_for(s.agent, BIN_WRITTEN, cp, s.r("/usr/bin/sshd"))
        assert get(a, "event.action") in ("created", "modified")
        staged = s.work / "kworker"
        shutil.copy("/usr/bin/true", staged)
        mv = act(["/usr/bin/mv", str(staged), str(s.r("/usr/sbin/kworker"))])
        a = alert_for(s.agent, BIN_WRITTEN, mv, s.r("/usr/sbin/kworker"))
        assert get(a, "event.action") == "renamed"
        pam = s.r("/usr/lib/x86_64-linux-gnu/security/pam_evil.so")   # a PAM backdoor
        pam.parent.mkdir(exist_ok=True)
        lib = act(["/usr/bin/cp", "/usr/bin/true", str(pam)])
        alert_for(s.agent, BIN_WRITTEN, lib, pam)

    def test_package_manager_alternatives_and_ldconfig_do_not_alert(self, system: System) -> None:
        """dpkg installs a program and two libraries (NAME.dpkg-new, then renamed), update-
        alternatives links a name in /usr/bin, ldconfig makes the SONAME link of one of the
        libraries (a copy of the host's libz), and a file that is no library lands in
        /usr/lib."""
        s = system
        libz = Path(os.path.realpath(next(Path("/usr/lib").glob("*/libz.so.1"))))
        deb = build_deb(s.work, "vigil-pack-bin", {
            "/usr/bin/vigil-pack": (TRUE, 0o755),
            "/usr/lib/vigil-pack/libvigilpack.so.1": (TRUE, 0o644),
            f"/usr/lib/vigil-pack/{libz.name}": (libz.read_bytes(), 0o644)})
        since = s.mark()
        pkg = dpkg(s, "-i", str(deb))
        alt = act(["/usr/bin/update-alternatives", "--root", str(s.root), "--install",
                   "/usr/bin/vigil-alt", "vigil-alt", "/usr/bin/vigil-pack", "10"])
        libdir = s.r("/usr/lib/vigil-pack")
        ldc = act(["/usr/sbin/ldconfig", "-n", str(libdir)])
        assert (libdir / "libz.so.1").is_symlink()
        pyc = act(["/usr/bin/tee", str(s.r("/usr/lib/python3/vigil.cpython-311.pyc"))], b"x")
        seen(s.agent, pkg, s.r("/usr/bin/vigil-pack"), "renamed")
        seen(s.agent, alt, s.r("/usr/bin/vigil-alt"), "renamed")
        control = act(["/usr/bin/cp", "/usr/bin/true", str(libdir / "libcontrol.so")])
        alert_for(s.agent, BIN_WRITTEN, control, libdir / "libcontrol.so")
        s.barrier()
        mine = [a for a in new_alerts(s.agent, BIN_WRITTEN, since)
                if get(a, "process.pid") != control.pid]
        assert mine == [], [(get(a, "process.executable"), get(a, "file.path")) for a in mine]
        assert {pkg.pid, alt.pid, ldc.pid, pyc.pid}.isdisjoint(
            {get(a, "process.pid") for a in new_alerts(s.agent, BIN_WRITTEN, since)})

    def test_system_binaries_and_libraries_deleted(self, system: System) -> None:
        s = system
        rm = act(["/usr/bin/rm", str(s.r("/usr/bin/victim"))])
        alert_for(s.agent, BIN_DELETED, rm, s.r("/usr/bin/victim"))
        rm = act(["/usr/bin/rm", str(s.r("/usr/lib/x86_64-linux-gnu/libvictim.so.1"))])
        a = alert_for(s.agent, BIN_DELETED, rm, s.r("/usr/lib/x86_64-linux-gnu/libvictim.so.1"))
        assert get(a, "event.action") == "deleted"

    def test_package_removal_does_not_alert(self, system: System) -> None:
        s = system
        deb = build_deb(s.work, "vigil-pack-rm", {
            "/usr/bin/vigil-rm": (TRUE, 0o755),
            "/usr/lib/vigil-rm/libvigilrm.so.1": (TRUE, 0o644)})
        dpkg(s, "-i", str(deb))
        since = s.mark()
        rm = dpkg(s, "-r", "vigil-pack-rm")
        assert not s.r("/usr/bin/vigil-rm").exists()
        seen(s.agent, rm, s.r("/usr/bin/vigil-rm"), "deleted")
        control = act(["/usr/bin/rm", str(s.r("/usr/bin/victim-b"))])
        alert_for(s.agent, BIN_DELETED, control, s.r("/usr/bin/victim-b"))
        s.barrier()
        pids = {get(a, "process.pid") for a in new_alerts(s.agent, BIN_DELETED, since)}
        assert pids == {control.pid}, pids

    # -- logs

    def test_log_deleted(self, system: System) -> None:
        s = system
        rm = act(["/usr/bin/rm", "-f", str(s.r("/var/log/auth.log"))])
        a = alert_for(s.agent, LOG_DELETED, rm, s.r("/var/log/auth.log"))
        assert get(a, "threat.technique.subtechnique.id") == ["T1070.002"]
        assert not [e for e in s.agent.events if "/var/log/" in str(get(e, "file.path"))], \
            "a watch-only path (/var/log) was reported as telemetry"

    def test_log_rotation_and_compressing_rotated_logs_do_not_alert(self, system: System
                                                                    ) -> None:
        """logrotate (rotate 1, compress) run twice: it deletes the compressed-away
        app.log.1 and the oldest app.log.2.gz itself; gzip compressing an already rotated
        old.log.1 deletes it (savelog's way). Control: rm of a live log."""
        s = system
        conf = s.work / "logrotate.conf"
        conf.write_text(f"{s.r('/var/log/app.log')} {{\n  rotate 1\n  compress\n"
                        "  missingok\n}\n")
        since = s.mark()
        rot = [act(["/usr/sbin/logrotate", "-f", "-s", str(s.work / "lr.state"), str(conf)])]
        s.r("/var/log/app.log").write_text("more\n")
        rot.append(act(["/usr/sbin/logrotate", "-f", "-s", str(s.work / "lr.state"),
                        str(conf)]))
        assert sorted(os.listdir(s.r("/var/log"))).count("app.log.1.gz") == 1
        gz = act(["/usr/bin/gzip", str(s.r("/var/log/old.log.1"))])
        assert s.r("/var/log/old.log.1.gz").exists()
        control = act(["/usr/bin/rm", str(s.r("/var/log/other.log"))])
        alert_for(s.agent, LOG_DELETED, control, s.r("/var/log/other.log"))
        s.barrier()
        pids = {get(a, "process.pid") for a in new_alerts(s.agent, LOG_DELETED, since)}
        assert pids == {control.pid}, (pids, [r.pid for r in rot], gz.pid)

    def test_apt_replacing_its_own_log_does_not_alert(self, system: System) -> None:
        """apt-get rewrites /var/log/apt/eipp.log.xz (unlink, then a new file) on every run,
        a simulated one too: here a real `apt-get -s install bash` with its log directory in
        the scratch root (nothing is installed). Control: rm of a file in the same
        directory."""
        s = system
        logs = s.r("/var/log/apt")
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "eipp.log.xz").write_bytes(b"old")
        (logs / "history.log.1").write_text("old\n")
        since = s.mark()
        apt = act(["/usr/bin/apt-get", "-s", "-q", "-o", f"Dir::Log={logs}", "install", "bash"])
        assert (logs / "eipp.log.xz").read_bytes() != b"old", "apt-get did not rewrite its log"
        control = act(["/usr/bin/rm", str(logs / "history.log.1")])
        alert_for(s.agent, LOG_DELETED, control, logs / "history.log.1")
        s.barrier()
        pids = {get(a, "process.pid") for a in new_alerts(s.agent, LOG_DELETED, since)}
        assert pids == {control.pid}, (pids, apt.pid)

    def test_log_truncated(self, system: System) -> None:
        s = system
        tr = act(["/usr/bin/truncate", "-s", "0", str(s.r("/var/log/syslog"))])
        a = alert_for(s.agent, LOG_TRUNCATED, tr, s.r("/var/log/syslog"))
        assert get(a, "event.action") == "truncated"
        assert s.r("/var/log/syslog").stat().st_size == 0

    def test_log_emptied_by_a_shell_redirection(self, system: System) -> None:
        """The usual way to wipe a log: the shell opens it with O_TRUNC for ``: > log``."""
        s = system
        log = s.r("/var/log/auth.log")
        log.write_bytes(b"Dec  7 06:00:00 host sshd[1]: Accepted password for root\n")
        sh = act(["/usr/bin/bash", "-c", f": > '{log}'"])
        a = alert_for(s.agent, LOG_TRUNCATED, sh, log)
        assert get(a, "event.action") == "truncated"
        assert get(a, "process.executable") == sh.exe and log.stat().st_size == 0

    def test_logrotate_copytruncate_does_not_alert(self, system: System) -> None:
        s = system
        conf = s.work / "copytruncate.conf"
        conf.write_text(f"{s.r('/var/log/ct.log')} {{\n  rotate 1\n  copytruncate\n}}\n")
        since = s.mark()
        rot = act(["/usr/sbin/logrotate", "-f", "-s", str(s.work / "ct.state"), str(conf)])
        assert s.r("/var/log/ct.log").stat().st_size == 0
        control = act(["/usr/bin/truncate", "-s", "0", str(s.r("/var/log/ct2.log"))])
        alert_for(s.agent, LOG_TRUNCATED, control, s.r("/var/log/ct2.log"))
        s.barrier()
        pids = {get(a, "process.pid") for a in new_alerts(s.agent, LOG_TRUNCATED, since)}
        assert pids == {control.pid}, (pids, rot.pid)

    # -- setuid / setgid

    def test_setuid_and_setgid_bits_set(self, system: System) -> None:
        s = system
        suid = act(["/usr/bin/chmod", "u+s", str(s.r("/usr/bin/victim-s"))])
        ev = seen(s.agent, suid, s.r("/usr/bin/victim-s"), "mode-changed")
        assert get(ev, "file.mode") == "4755"
        a = alert_for(s.agent, SETUID, suid, s.r("/usr/bin/victim-s"))
        assert get(a, "file.mode") == "4755"
        sgid = act(["/usr/bin/chmod", "g+s", str(s.r("/usr/sbin/victim-g"))])
        a = alert_for(s.agent, SETUID, sgid, s.r("/usr/sbin/victim-g"))
        assert get(a, "file.mode") == "2755"
        assert get(a, "threat.technique.subtechnique.id") == ["T1548.001"]

    def test_packaged_setuid_and_ordinary_modes_do_not_alert(self, system: System) -> None:
        """dpkg installs a setuid program (fchmod 04755 of NAME.dpkg-new), dpkg-statoverride
        makes one setuid and setgid; chmod sets modes without either bit (0750, sticky
        1755). Control: chmod u+s."""
        s = system
        deb = build_deb(s.work, "vigil-pack-suid", {"/usr/bin/vigil-suid": (TRUE, 0o4755)})
        since = s.mark()
        pkg = dpkg(s, "-i", str(deb))
        ev = seen(s.agent, pkg, s.r("/usr/bin/vigil-suid.dpkg-new"), "mode-changed")
        assert get(ev, "file.mode") == "4755"
        over = act(["/usr/bin/dpkg-statoverride", "--root", str(s.root), "--update", "--add",
                    "root", "root", "6755", "/usr/bin/vigil-suid"])
        assert get(seen(s.agent, over, s.r("/usr/bin/vigil-suid"), "mode-changed"),
                   "file.mode") == "6755"
        plain = act(["/usr/bin/chmod", "0750", str(s.r("/usr/bin/plain"))])
        sticky = act(["/usr/bin/chmod", "1755", str(s.r("/usr/bin/plain"))])
        assert get(seen(s.agent, sticky, s.r("/usr/bin/plain"), "mode-changed"),
                   "file.mode") == "1755"
        control = act(["/usr/bin/chmod", "u+s", str(s.r("/usr/bin/victim-t"))])
        alert_for(s.agent, SETUID, control, s.r("/usr/bin/victim-t"))
        s.barrier()
        pids = {get(a, "process.pid") for a in new_alerts(s.agent, SETUID, since)}
        assert pids == {control.pid}, (pids, pkg.pid, over.pid, plain.pid, sticky.pid)


# ---------------------------------------------------------------------------------------------
# The process rules, as shipped


@dataclass
class Shipped:
    agent: AgentProc
    probe: Path
    dirs: list[Path]     # made for the test under /dev/shm, /tmp, /run: removed at the end

    def mark(self) -> int:
        barrier(self.agent, self.probe)
        return len(self.agent.alerts)

    def mkdtemp(self, where: str) -> Path:
        d = Path(tempfile.mkdtemp(prefix="vigil-pack-", dir=where)).resolve()
        self.dirs.append(d)
        return d


@pytest.fixture(scope="class")
def shipped() -> Iterator[Shipped]:
    """The agent with the built-in pack as it ships (rules.builtin: true)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: runs the real eBPF agent")
    base = Path(tempfile.mkdtemp(prefix="vigil-pack-", dir="/var/tmp")).resolve()
    base.chmod(0o755)
    probe = base / "w"
    probe.mkdir()
    cfg = write_config(base / "vigil.yaml", base, [{"path": str(probe)}],
                       rules={"suppress_window": 0})
    s = Shipped(AgentProc(["--config", str(cfg)], db=base / "state" / "baseline.db"), probe,
                [base])
    s.agent.start()
    try:
        s.agent.probe(probe, timeout=60)
        assert not any("refused" in ln for ln in s.agent.stderr_lines), s.agent.stderr_lines
        yield s
    finally:
        rc, _ = s.agent.stop()
        for d in s.dirs:
            shutil.rmtree(d, ignore_errors=True)
    assert rc == 0, "\n".join(s.agent.stderr_lines[-20:])


PYTHON = os.path.realpath(CHILD_PY)


def exec_event(agent: AgentProc, child: Child) -> Event:
    """The exec event of ``child``'s program: for a Python child that execs another program
    (same pid), that program's, not the interpreter's own."""
    def pred(e: Event) -> bool:
        return (get(e, "event.action") == "exec" and get(e, "process.pid") == child.pid
                and get(e, "process.executable") != PYTHON)
    return agent.wait_for(pred, timeout=WAIT)[0]


def exec_fd_code(path: str, unlink: bool = False) -> str:
    """Python that runs the program at ``path`` through a file descriptor (fexecve), after
    deleting its name when ``unlink``."""
    return ("import os\n"
            f"fd = os.open({path!r}, os.O_RDONLY)\n"
            + (f"os.unlink({path!r})\n" if unlink else "")
            + "os.execve(fd, ['vigil-pack'], {})\n")


MEMFD_CODE = ("import os\n"
              "fd = os.memfd_create('vigil-pack')\n"
              "os.write(fd, open('/usr/bin/true', 'rb').read())\n"
              "os.execve(fd, ['vigil-pack'], {})\n")


class TestShippedProcessRules:
    def test_programs_run_from_tmp_dev_shm_and_var_tmp(self, shipped: Shipped) -> None:
        s = shipped
        for where in ("/dev/shm", "/tmp", "/var/tmp"):
            prog = s.mkdtemp(where) / "true"
            shutil.copy("/usr/bin/true", prog)
            child = act([str(prog)])
            a = alert_for(s.agent, EXEC_TMP, child)
            assert get(a, "process.executable") == str(prog)
            assert get(a, "rule.ruleset") == "vigil"
            assert get(a, "event.action") == "exec"
            assert get(a, "process.parent.pid") == os.getpid()
            assert get(a, "vigil.rule.level") == "medium"
            assert get(a, "threat.technique.subtechnique.id") == ["T1027.011"]

    def test_programs_elsewhere_and_files_in_tmp_do_not_alert(self, shipped: Shipped) -> None:
        """A program in a directory whose path has /tmp/ further in (not a world-writable
        place), and an ordinary program reading a file in /dev/shm."""
        s = shipped
        prog = s.mkdtemp("/run") / "tmp" / "true"
        prog.parent.mkdir()
        shutil.copy("/usr/bin/true", prog)
        data = s.mkdtemp("/dev/shm") / "data"
        data.write_text("x\n")
        since = s.mark()
        children = [act([str(prog)]), act(["/usr/bin/cat", str(data)])]
        for child in children:
            assert get(exec_event(s.agent, child), "process.executable") == child.exe
        barrier(s.agent, s.probe)
        assert new_alerts(s.agent, EXEC_TMP, since) == []

    def test_program_run_from_a_memfd(self, shipped: Shipped) -> None:
        s = shipped
        child = act([CHILD_PY, "-c", MEMFD_CODE])
        ev = exec_event(s.agent, child)
        exe = get(ev, "process.executable")
        a = s.agent.wait_for(lambda e: get(e, "rule.id") == rid(FILELESS)
                             and get(e, "process.pid") == child.pid, alerts=True,
                             timeout=WAIT)[0]
        assert get(a, "process.executable") == exe
        assert exe == "/memfd:vigil-pack (deleted)", exe   # /proc/PID/exe's text
        assert get(a, "rule.ruleset") == "vigil"
        assert get(a, "vigil.rule.level") == "high"
        assert get(a, "process.parent.pid") == os.getpid()

    def test_program_run_from_a_deleted_file(self, shipped: Shipped) -> None:
        s = shipped
        prog = s.mkdtemp("/run") / "gone"
        shutil.copy("/usr/bin/true", prog)
        child = act([CHILD_PY, "-c", exec_fd_code(str(prog), unlink=True)])
        exe = get(exec_event(s.agent, child), "process.executable")
        assert not prog.exists()
        assert exe == f"{prog} (deleted)"   # as the kernel's d_path says it
        a = s.agent.wait_for(lambda e: get(e, "rule.id") == rid(FILELESS)
                             and get(e, "process.pid") == child.pid, alerts=True,
                             timeout=WAIT)[0]
        assert get(a, "process.executable") == exe
        assert get(a, "vigil.rule.level") == "high"

    def test_program_run_through_a_descriptor_of_a_real_file_does_not_alert(
            self, shipped: Shipped) -> None:
        """fexecve of /usr/bin/true: the same system call as a fileless start, on a file that
        exists; and a memfd made but not executed (the program then runs /usr/bin/true)."""
        s = shipped
        since = s.mark()
        fd_exec = act([CHILD_PY, "-c", exec_fd_code("/usr/bin/true")])
        assert get(exec_event(s.agent, fd_exec), "process.executable") == "/usr/bin/true"
        memfd_only = act([CHILD_PY, "-c", "import os\nfd = os.memfd_create('vigil-pack')\n"
                          "os.write(fd, b'x')\nos.execv('/usr/bin/true', ['true'])\n"])
        assert get(exec_event(s.agent, memfd_only), "process.executable") == "/usr/bin/true"
        barrier(s.agent, s.probe)
        assert new_alerts(s.agent, FILELESS, since) == []
