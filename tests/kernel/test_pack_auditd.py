"""SigmaHQ's ``auditd`` rules of the built-in pack, each fired by something real under the real
agent through its auditd-record view (vigil/rules/auditd.py), and each shown silent for a
real benign look-alike.

What is proven, per rule: a real exec or a real file operation raises THAT rule's alert in
``vigil run``'s stream, naming the acting process (pid, executable; for an exec its exact
argv, for a file operation the file); and a look-alike, which the agent is shown to have seen,
raises none.

Two kinds of rules, two ways to fire them:

- ``EXECVE`` rules (a program with given arguments: ``a0 getcap, a1 -r, a2 /``; keywords
  inside an argument) are planned from the rule, as test_pack_sigmahq.py plans the
  process_creation rules: tests/rules/corpus.py's generator builds records meant to match
  it, each record of ``a0..aN`` (and keywords) becomes an argv, and the rule engine, fed the
  auditd records of the exec event the agent would write (vigil.rules.fieldmap), keeps the
  argv that matches and looks most like a typed command; the look-alike is its first near miss
  that does not match (one argument dropped, the program renamed). What runs is a copy of
  /usr/bin/true named after the program (it ignores its arguments: ``sysctl -w
  kernel.randomize_va_space=0``, ``iptables -t nat ...`` or ``shutdown`` change nothing),
  started by test_pack_sigmahq's launcher with that argv.
- ``SYSCALL`` and ``PATH`` rules are fired by hand-written real operations (``SCENARIOS``):
  real programs (useradd, insmod -V, split, mkfifo, id as www-data) and real writes by tee of
  the files the rules name (the discovery rules' files too: Vigil reports changes and refused
  opens, not reads, so a change is what fires them). Rules naming system files
  (/etc/ld.so.preload, /etc/pam.d/..., /root/.bashrc, ...) run as copies with their absolute
  ``name`` values moved onto a scratch root R (pack_steps.rule_files), which the agent
  watches: the others run from their shipped files. No real system file, user, module or
  kernel setting is touched.

Four rules have a part the view cannot give (``PARTIAL``: the loader warns of each); they are
fired through their other part. Rules that cannot be fired here are in ``NOT_TRIGGERABLE``
with the reason; a test checks that the planned rules, the scenarios and that table are every
auditd rule of the pack.

One agent serves the module (these 48 rules only, every level, no suppression); every trigger
and look-alike runs first, then one barrier, then the per-rule tests read the stream.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_proc import Child, get, is_file_event
from pack_steps import (
    Case,
    PackRun,
    Ran,
    Step,
    alert_of,
    alerts_for,
    assert_silent,
    by_stem,
    pack_run,
    rule_files,
    tee,
)
from test_pack_sigmahq import (
    LAUNCHER_C,
    TRUE,
    Plan,
    Planned,
    Planner,
    Program,
    Roots,
    install,
    launch,
    work_dir,
)
from test_pack_vigil import _populate

from vigil.rules.auditd import AUDITD
from vigil.rules.fieldmap import ecs_to_records
from vigil.rules.loader import builtin_rules_dir, load_paths
from vigil.rules.model import Rule

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:   # as test_pack_sigmahq.py does, for the corpus generator's names
    sys.path.insert(0, ROOT)
from tests.rules.corpus import KEYWORDS  # noqa: E402

pytestmark = [pytest.mark.root]

RULES_DIR = builtin_rules_dir() / "sigmahq" / "linux" / "auditd"
FILES = {p.stem: p for p in sorted(RULES_DIR.rglob("*.yml"))}
ALL_STEMS = sorted(FILES)

# The rules fired by hand-written scenarios
KEYLOGGING = "lnx_auditd_keylogging_with_pam_d"
AUDIT_CONFIG = "lnx_auditd_auditing_config_change"
BPFDOOR_FILES = "lnx_auditd_bpfdoor_file_accessed"
HIDDEN_BINARY = "lnx_auditd_hidden_binary_execution"
LD_PRELOAD = "lnx_auditd_ld_so_preload_mod"
LOGGING_CONFIG = "lnx_auditd_logging_config_change"
SYSRQ = "lnx_auditd_magic_system_request_key"
SYSINFO_FILES = "lnx_auditd_system_info_discovery2"
SYSTEMD_UNIT = "lnx_auditd_systemd_service_creation"
SHELL_CONFIG = "lnx_auditd_unix_shell_configuration_modification"
CREATE_ACCOUNT = "lnx_auditd_create_account"
INSMOD = "lnx_auditd_load_module_insmod"
SPLIT = "lnx_auditd_split_file_into_pieces"
EXE_FOLDERS = "lnx_auditd_susp_exe_folders"
MKNOD = "lnx_auditd_susp_special_file_creation_via_mknod_syscall"
WEB_RCE = "lnx_auditd_web_rce"

# rule file stem -> why nothing real can fire it on this machine, with this agent.
NOT_TRIGGERABLE: dict[str, str] = {
    BPFDOOR_FILES: "its PATH names are /var/run/*.pid and *.lock, and /var/run is a symlink to "
                   "/run here (Debian 12): Vigil reports canonical paths (/run/haldrund.pid), "
                   "so no record names /var/run (README, 'auditd rules without auditd'); and "
                   "the files are BPFDoor's to read, where Vigil reports changes and refused "
                   "opens only (test_bpfdoor_pid_file_is_reported_under_run shows the first here)",
}

# rule file stem -> the part of it the view cannot give, as the loader's warning names it
# (SYSCALL memfd_create by ecasound; SYSCALL personality with a0 40000; TTY and USER_TTY
# records; ADD_USER records); the rule is fired through its other selection.
PARTIAL: dict[str, str] = {
    "lnx_auditd_audio_capture": "memfd_create",
    "lnx_auditd_disable_aslr_protection": "personality",
    KEYLOGGING: "TTY",
    CREATE_ACCOUNT: "ADD_USER",
}


def copy_of_true(path: str) -> Step:
    """Run a copy of /usr/bin/true made at ``path``."""
    return Step((path,), copy_of=TRUE)


WWW_DATA, NOBODY = 33, 65534
PAM_LINE = "session required pam_tty_audit.so enable=*\n"
# {R}: the scratch root the agent watches (in /var/tmp); {disk}, {tmp}: the roots copies of
# /usr/bin/true are run from (/var/tmp/..., /tmp/...).
SCENARIOS: dict[str, Case] = {
    KEYLOGGING: Case((tee("{R}/etc/pam.d/system-auth", PAM_LINE, append=True),),
                     (tee("{R}/etc/pam.d/sshd", "session optional pam_motd.so\n", append=True),)),
    AUDIT_CONFIG: Case(
        (tee("{R}/etc/audit/auditd.conf", "max_log_file_action = ignore\n", append=True),),
        # another audit tool's configuration
        (tee("{R}/etc/auditbeat/auditbeat.yml", "auditbeat.modules: []\n"),)),
    HIDDEN_BINARY: Case(
        (copy_of_true("{disk}/c/.hidden/bin/run"),),
        # the rule's filter: programs in a cache directory
        (copy_of_true("{disk}/c/.cache/bin/run"),)),
    LD_PRELOAD: Case((tee("{R}/etc/ld.so.preload", "/usr/lib/libvigil-evil.so\n"),),
                     (tee("{R}/etc/ld.so.conf.d/vigil.conf", "/opt/vigil/lib\n"),)),
    LOGGING_CONFIG: Case((tee("{R}/etc/rsyslog.conf", "*.* stop\n", append=True),),
                         (tee("{R}/etc/rsyslog.d/50-vigil.conf", "# local rules\n"),)),
    SYSRQ: Case((tee("{R}/etc/sysctl.conf", "kernel.sysrq = 1\n", append=True),),
                (tee("{R}/etc/sysctl.d/99-vigil.conf", "vm.swappiness = 10\n"),)),
    SYSINFO_FILES: Case((tee("{R}/etc/issue", "Debian GNU/Linux 12\n", append=True),),
                        (tee("{R}/etc/issue.net", "Debian GNU/Linux 12\n", append=True),)),
    SYSTEMD_UNIT: Case(
        (tee("{R}/etc/systemd/system/vigil-evil.service", "[Service]\nExecStart=/tmp/.x\n"),
         tee("{R}/home/alice/.config/systemd/user/vigil-evil.service",
             "[Service]\nExecStart=/tmp/.x\n")),
        # a unit changed in place: no new name (nametype NORMAL, not CREATE)
        (tee("{R}/etc/systemd/system/vigil-existing.service", "# tuned\n", append=True),)),
    SHELL_CONFIG: Case(
        (tee("{R}/home/alice/.bashrc", "alias sudo='sudo '\n", append=True),
         tee("{R}/etc/profile", "export PATH=/tmp/.x:$PATH\n", append=True)),
        (tee("{R}/home/alice/.bash_history", "ls -l\n", append=True),)),
    CREATE_ACCOUNT: Case(
        (Step(("/usr/sbin/useradd", "--prefix", "{R}", "-M", "-s", "/usr/sbin/nologin",
               "vigilaudit")),),
        (Step(("/usr/sbin/groupadd", "--prefix", "{R}", "vigilauditgrp")),)),
    # kmod's version printed, nothing loaded; the look-alike: the same program as modprobe
    INSMOD: Case((Step(("/usr/sbin/insmod", "-V")),), (Step(("/usr/sbin/modprobe", "-V")),)),
    SPLIT: Case(
        (Step(("/usr/bin/split", "-l", "1", "{R}/data/notes.txt", "{R}/data/piece-"),
              path="{R}/data/piece-aa"),),
        (Step(("/usr/bin/csplit", "-s", "-f", "{R}/data/cpiece-", "{R}/data/notes.txt", "2"),
              path="{R}/data/cpiece-00"),)),
    EXE_FOLDERS: Case((copy_of_true("{tmp}/c/bin/payload"),),
                      (copy_of_true("{disk}/c/bin/payload"),)),   # /var/tmp is not /tmp
    MKNOD: Case((Step(("/usr/bin/mkfifo", "{R}/data/fifo"), path="{R}/data/fifo"),),
                (Step(("/usr/bin/mkdir", "{R}/data/dir"), path="{R}/data/dir"),)),
    WEB_RCE: Case((Step(("/usr/bin/id",), uid=WWW_DATA),),
                  (Step(("/usr/bin/id",), uid=NOBODY),)),
}

# A pid file of BPFDoor's, written through R's /var/run (a link to R/run, as on Debian)
BPFDOOR_PID = tee("{R}/var/run/haldrund.pid", "4242\n")

TESTED = [s for s in ALL_STEMS if s not in NOT_TRIGGERABLE]
PLANNED = [s for s in TESTED if s not in SCENARIOS]


# ---------------------------------------------------------------------------------------------
# The planner of EXECVE rules

ARG = re.compile(r"a([0-9]+)")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]*")   # a program's plain name
PROGRAM = "tool"   # the program's name when the rule does not name it
FILLER = "arg"     # an argument at a place the rule says nothing about


def exec_doc(prog: Program, cwd: str) -> dict[str, Any]:
    """The ECS document the agent writes for root's exec of ``prog`` in ``cwd`` (the fields
    the auditd view reads; no login session)."""
    return {"event": {"kind": "event", "dataset": "vigil.process", "action": "exec",
                      "outcome": "success"},
            "process": {"pid": 2, "parent": {"pid": 1}, "executable": prog.path,
                        "name": os.path.basename(prog.path)[:15], "args": list(prog.argv),
                        "args_count": len(prog.argv), "working_directory": cwd,
                        "user": {"id": "0"}, "group": {"id": "0"}},
            "user": {"id": "0"}, "group": {"id": "0"},
            "vigil": {"process": {"login_uid": None, "session_id": None}}}


def _argvs(rec: dict[str, str]) -> Iterator[tuple[str, ...]]:
    """argvs whose EXECVE record holds ``rec`` (a generated record of ``a0..aN`` and keywords;
    none for another record type, or for values with a space inside, which only a merge of two
    records puts there): each value at its place, spaces around it tidied; the keywords after
    them as arguments of their own, the first one as the program when the rule names none
    and it is a plain name, then the keyword text as one argument (a keyword matches inside
    one value)."""
    args = {int(m[1]): v.strip() for k, v in rec.items() if (m := ARG.fullmatch(k))}
    if set(rec) - {"type", KEYWORDS} - {f"a{i}" for i in args} \
            or rec.get("type", "execve").lower() != "execve" \
            or any(len(v.split()) > 1 for v in args.values()):
        return
    kw = rec.get(KEYWORDS, "")
    for words in ([kw.split(), [kw.strip()]] if kw.strip() else [[]]):
        slots = [args.get(i) for i in range(max(args, default=-1) + 1)]
        extra = list(words)
        if not slots or slots[0] is None:
            first = extra.pop(0) if extra and NAME.fullmatch(extra[0]) else PROGRAM
            slots = [first, *slots[1:]]
        yield tuple(FILLER if s is None else s for s in slots) + tuple(extra)


class ExecPlanner(Planner):
    """test_pack_sigmahq's planner, for EXECVE records: a generated record's ``a0..aN`` and
    keywords become the argv of a copy of /usr/bin/true named after ``a0``, and the rule is
    matched to the auditd records of the exec event the agent would write."""

    def matches(self, stem: str, plan: Plan) -> bool:
        self.checks += 1
        rid = self.rules[stem].id
        return any(r.id == rid for key, rec in ecs_to_records(exec_doc(plan.child, plan.cwd),
                                                              {AUDITD})
                   for r in self.engine.match(key, rec))

    def _realise(self, stem: str, rec: dict[str, str], reads_parent: bool) -> Plan | None:
        for argv in _argvs(rec):
            name = argv[0] if NAME.fullmatch(argv[0]) else PROGRAM
            plan = Plan(Program(f"{self.roots.disk}/c/bin/{name}", argv), self.launcher(),
                        self.work)
            if self.matches(stem, plan):
                return plan
        return None


def _planned(planner: Planner, stem: str) -> Planned:
    t = planner.trigger(stem)
    lk = None if t is None else planner.look_alike(stem, t)
    return Planned(t, lk, "" if lk is not None else
                   "no generated EXECVE record could be realised as an exec the engine "
                   "matches to the rule" if t is None else
                   "no near miss of the trigger escapes the rule")


def plan_all(rules: dict[str, Rule], roots: Roots) -> dict[str, Planned]:
    planner = ExecPlanner(rules, roots)
    return {stem: _planned(planner, stem) for stem in PLANNED}


def pack_rules() -> dict[str, Rule]:
    res = load_paths(list(FILES.values()))
    assert not res.refused, [str(e) for e in res.refused]
    return by_stem(res.rules)


# ---------------------------------------------------------------------------------------------
# The run


def _scratch_root(r: Path) -> None:
    """R as test_pack_vigil populates it (etc with its account databases, profile and
    systemd directories, a home), and what this module's scenarios change or look like."""
    _populate(r)
    for d in ("etc/pam.d", "etc/audit", "etc/auditbeat", "etc/rsyslog.d", "etc/sysctl.d",
              "etc/ld.so.conf.d", "data", "run", "var"):
        (r / d).mkdir(parents=True, exist_ok=True)
    for f, text in (("etc/rsyslog.conf", "*.* /var/log/syslog\n"),
                    ("etc/sysctl.conf", "# sysctl\n"), ("etc/issue", "Debian\n"),
                    ("etc/issue.net", "Debian\n"), ("etc/pam.d/sshd", "@include common-auth\n"),
                    ("etc/systemd/system/vigil-existing.service", "[Service]\n"),
                    ("data/notes.txt", "one\ntwo\nthree\n")):
        (r / f).write_text(text)
    (r / "var/run").symlink_to("../run")   # as on Debian: /var/run -> /run


@dataclass
class Run:
    """The module's run, and the plans of the EXECVE rules."""

    pack: PackRun
    planned: dict[str, Planned]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs the real eBPF agent")
    made = [Path(tempfile.mkdtemp(prefix="vigil-auditd-", dir=d)).resolve()
            for d in ("/var/tmp", "/tmp", "/dev/shm")]
    roots = Roots(*made)
    base = roots.disk
    places = {"R": str(base / "root"), "disk": str(roots.disk), "tmp": str(roots.tmp)}
    try:
        for d in made:
            d.chmod(0o755)
        root, probe = base / "root", base / "w"
        for d in (root, probe, Path(work_dir(roots))):
            d.mkdir()
        _scratch_root(root)
        planned = plan_all(pack_rules(), roots)
        launcher = base / "launcher"
        (base / "launcher.c").write_text(LAUNCHER_C)
        subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(launcher),
                        str(base / "launcher.c")], check=True, capture_output=True)
        plans = {s: (p.trigger, p.look_alike) for s, p in planned.items()
                 if p.trigger is not None and p.look_alike is not None}
        for pair in plans.values():
            for plan in pair:
                install(plan, roots, launcher)

        def execs(r: PackRun) -> None:
            for stem, (trigger, look) in plans.items():
                r.triggers[stem] = [_launched(trigger)]
                r.look_alikes[stem] = [_launched(look)]

        cases = {**SCENARIOS, BPFDOOR_FILES: Case((), (BPFDOOR_PID,))}
        files = rule_files(FILES.values(), root, base / "rules", field="name")
        with pack_run(base, [root], files, probe, cases, places, before=execs) as r:
            yield Run(r, planned)
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)


def _launched(plan: Plan) -> Ran:
    done = launch(plan)
    c = plan.child
    return Ran(Child(pid=done.child_pid, ppid=done.parent_pid, uid=0,
                     comm=os.path.basename(c.path)[:15], exe=c.path, stdout=""), None)


def _plans(run: Run, stem: str) -> Planned:
    p = run.planned[stem]
    if p.trigger is None or p.look_alike is None:
        pytest.fail(f"{stem}: {p.problem}; give it a scenario, list it in NOT_TRIGGERABLE "
                    "with the reason, or teach the planner")
    return p


# ---------------------------------------------------------------------------------------------
# The tests


def test_every_auditd_rule_is_tested_or_listed() -> None:
    assert len(ALL_STEMS) == 48
    assert len(FILES) == len(list(RULES_DIR.rglob("*.yml"))), "two rule files share a name"
    assert set(NOT_TRIGGERABLE) <= set(ALL_STEMS) and set(SCENARIOS) <= set(ALL_STEMS)
    assert set(SCENARIOS).isdisjoint(NOT_TRIGGERABLE)
    assert set(PLANNED) | set(SCENARIOS) | set(NOT_TRIGGERABLE) == set(ALL_STEMS)
    assert all(NOT_TRIGGERABLE.values())
    assert set(PARTIAL) <= set(TESTED)
    for case in SCENARIOS.values():
        assert case.triggers and case.look_alikes


def test_only_the_partial_rules_warn() -> None:
    """The rules with a part the view cannot give are exactly PARTIAL's, each warned of."""
    warned = {s: r.warnings for s, r in pack_rules().items() if r.warnings}
    assert set(warned) == set(PARTIAL), warned
    for stem, part in PARTIAL.items():
        assert any(part in w for _, w in warned[stem]), warned[stem]


def test_every_planned_rule_has_a_trigger_and_a_look_alike() -> None:
    """Offline (no agent): the planner finds both for every EXECVE rule without a scenario,
    and none for the rules of the scenarios and the table (when it can, the rule may move to
    the planned ones)."""
    roots = Roots(Path("/var/tmp/vigil-auditd-plan"), Path("/tmp/vigil-auditd-plan"),
                  Path("/dev/shm/vigil-auditd-plan"))
    rules = pack_rules()
    planned = plan_all(rules, roots)
    assert not {s: p.problem for s, p in planned.items() if p.problem}
    planner = ExecPlanner(rules, roots)
    assert not [s for s in (*SCENARIOS, *NOT_TRIGGERABLE) if planner.trigger(s) is not None]


PARAMS = [pytest.param(s, id=s.removeprefix("lnx_auditd_")) for s in TESTED]


@pytest.mark.parametrize("stem", PARAMS)
def test_rule_fires_on_a_real_exec_or_file_operation(run: Run, stem: str) -> None:
    r = run.pack
    trigger = _plans(run, stem).trigger if stem in run.planned else None
    for ran in r.triggers[stem]:
        a = alert_of(r.agent, r.rules[stem], ran, "auditd")
        if trigger is not None:
            assert get(a, "process.args") == list(trigger.child.argv)
            assert get(a, "process.command_line") == trigger.child.command_line


@pytest.mark.parametrize("stem", PARAMS)
def test_look_alike_does_not_fire(run: Run, stem: str) -> None:
    r = run.pack
    look = _plans(run, stem).look_alike if stem in run.planned else None
    for ran in r.look_alikes[stem]:
        ev = assert_silent(r.agent, r.rules[stem], ran)
        if look is not None:
            assert get(ev, "process.args") == list(look.child.argv)


def test_bpfdoor_pid_file_is_reported_under_run(run: Run) -> None:
    """NOT_TRIGGERABLE's reason, for real: /var/run leads to /run here, and a pid file
    written through R's own /var/run link is reported under R/run, where the rule (moved
    onto R) does not look."""
    assert os.path.realpath("/var/run") == "/run"
    r = run.pack
    (ran,) = r.look_alikes[BPFDOOR_FILES]
    ev = r.agent.wait_for(lambda e: is_file_event(e) and get(e, "process.pid")
                          == ran.child.pid, timeout=15)[0]
    assert get(ev, "file.path") == f"{r.places['R']}/run/haldrund.pid"
    assert alerts_for(r.agent, r.rules[BPFDOOR_FILES], ran.child.pid) == []
