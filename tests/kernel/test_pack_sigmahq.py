"""SigmaHQ's ``process_creation`` rules of the built-in pack, each fired by a real exec under the
real agent, and each shown silent for a real benign look-alike.

What is proven, per rule: a program really executed (``execve``) with an executable path and an
argv derived from the rule raises THAT rule's alert in ``vigil run``'s stream, carrying the
child's pid, its ``process.executable``, its exact ``process.command_line`` (argv joined by
spaces) and its parent's pid and executable; and a second real exec, a near miss of the first
(one argument dropped, the parent or the program's name changed), reaches the agent as an exec
event but raises no alert of that rule.

How the executions are derived (``Planner``): tests/rules/corpus.py's generator builds, from
each rule's detection, flat Sysmon-named records meant to match it. Each record is realised:
its ``Image`` becomes a path under one of three scratch roots (on disk under /var/tmp, on
tmpfs under /tmp and /dev/shm: ``Image|endswith: /base64`` -> ``<root>/c/base64``, a
``startswith: /tmp/`` value lands under the /tmp root), its ``CommandLine`` becomes an argv
(split on single spaces, so that joined back it is the same text; argv[0] is the program's name
unless the rule wants the line to start otherwise; an ordinary argument follows a value the
rule wants a space after). Records that are the generator's edge cases (control characters,
look-alike letters, literal wildcards) are skipped; pairs of records are merged for rules that
want two selections at once. The rule engine (vigil.rules.matcher, which
tests/rules/test_differential.py holds to pySigma's SQL backend) keeps the realisation that
matches the rule and looks most like a typed command, and, for the look-alike, the first near
miss that does not match: the same program and parent without one argument, else under a
plain parent, else (rules on the program's name alone) the program renamed or moved out of
/tmp or /dev/shm. The agent is the judge: a plan the engine likes but the agent does not alert
on fails.

What runs: every program is a copy of /usr/bin/true at the realised path (it ignores its
arguments: ``curl --upload-file ...``, ``nc -e /bin/sh`` or ``userdel`` contact nothing and
change nothing), except where the rule names an exact system path no copy can have
(``REAL_PROGRAMS``): then the real program runs with arguments written here to be harmless,
which the engine must still find matching. Every child is started by ``launcher``, a ten-line
C program (compiled here) copied to the path the rule's ``ParentImage`` wants and run with the
argv its ``ParentCommandLine`` wants: it ignores its own arguments (a shell would interpret
``bash -i`` or ``git -p help``), takes the child's path and argv from its environment, forks,
execs it, prints the child's pid and waits. Both start in the working directory the rule's
``CurrentDirectory`` wants, else in a scratch directory (every exec's
``process.working_directory`` is checked). A rule that wants a root login session (``LogonId:
0``, the audit login uid) gets one: the launcher writes the uid to /proc/self/loginuid before it
forks, as pam_loginuid does at a login (root may: CAP_AUDIT_CONTROL), so its child has it.
Nothing is written outside the scratch roots, except the working directories rules name
(the OMIGOD rules' /var/opt/microsoft/scx/tmp): the ones missing are made, empty, for the run
and removed after. No program touches the network, a user, a service or a kernel setting.

One agent serves the whole module (the built-in pack as shipped, no suppression, the minimum
level lowered to ``informational``, which four of the rules have and the default skips); every
trigger and look-alike runs first, then one barrier (``AgentProc.settle``), then the per-rule
tests read the stream. Rules that cannot be triggered for real here would be listed with the
reason in ``NOT_TRIGGERABLE`` (none are now); a test checks that the tested rules and that
table together are every process_creation rule of the pack, so a new rule cannot be skipped
silently.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from agent_proc import AgentProc, Event, get, is_file_event, scaled, write_config

from vigil.rules.loader import builtin_rules_dir, load_paths
from vigil.rules.matcher import Engine
from vigil.rules.model import Rule

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:   # as tests/rules/conftest.py does, for the corpus generator
    sys.path.insert(0, ROOT)
from tests.rules.corpus import generated  # noqa: E402

pytestmark = [pytest.mark.root]

RULES_DIR = builtin_rules_dir() / "sigmahq" / "linux" / "process_creation"
CATEGORY = "process_creation"
TRUE = "/usr/bin/true"
WAIT = 15            # seconds for an alert that must have come (after the barrier: at once)
CHECKS = 3_000       # engine evaluations the planner spends on one rule's generated records,
                     # and as many again on their pairwise merges
PAIRED = 30          # generated records merged pairwise when looking for a trigger

# rule file stem -> why no real exec can trigger it on this machine, with this agent.
NOT_TRIGGERABLE: dict[str, str] = {}

# rule file stem -> the product bug that keeps its real trigger from alerting (xfail, strict).
PRODUCT_BUGS: dict[str, str] = {}


@dataclass(frozen=True)
class RealProgram:
    """A rule that only a system program at its exact path satisfies: the program, and a
    trigger and look-alike argv chosen harmless (``{scratch}``: the disk scratch root)."""

    path: str
    trigger: tuple[str, ...]
    look_alike: tuple[str, ...]
    why_harmless: str


REAL_PROGRAMS: dict[str, RealProgram] = {
    # Image: /bin/dd or /usr/bin/dd, exactly.
    "proc_creation_lnx_dd_file_overwrite": RealProgram(
        "/usr/bin/dd",
        ("dd", "if=/dev/zero", "of={scratch}/dd.out", "bs=1", "count=1"),
        ("dd", "if={scratch}/dd.in", "of={scratch}/dd.out", "bs=1", "count=1"),
        "writes one byte into a file of the scratch directory"),
}

LAUNCHER_C = r"""
/* The parent of every test child. Its own argv is ignored: it exists for the parent's
   command line a rule may want. It runs VIGIL_CHILD_EXE with argv VIGIL_CHILD_ARG0..
   VIGIL_CHILD_ARG<VIGIL_CHILD_ARGC-1> as its child, prints the child's pid, waits for it and
   exits with its exit code. With VIGIL_LOGINUID, it first sets its audit login uid, which the
   child inherits (a login session's). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    const char *exe = getenv("VIGIL_CHILD_EXE"), *count = getenv("VIGIL_CHILD_ARGC");
    const char *login = getenv("VIGIL_LOGINUID");
    if (!exe || !count) return 100;
    if (login) {
        int fd = open("/proc/self/loginuid", O_WRONLY);
        if (fd < 0 || write(fd, login, strlen(login)) != (ssize_t)strlen(login)) return 105;
        close(fd);
    }
    int n = atoi(count), status;
    char **argv = calloc((size_t)n + 1, sizeof *argv), name[32];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "VIGIL_CHILD_ARG%d", i);
        if (!(argv[i] = getenv(name))) return 101;
    }
    pid_t pid = fork();
    if (pid < 0) return 102;
    if (pid == 0) { execv(exe, argv); _exit(127); }
    printf("%d\n", (int)pid);
    fflush(stdout);
    if (waitpid(pid, &status, 0) < 0) return 103;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 104;
}
"""


# ---------------------------------------------------------------------------------------------
# The pack


def pack_rules() -> dict[str, Rule]:
    """Every process_creation rule of the built-in SigmaHQ pack, by file stem."""
    res = load_paths([RULES_DIR])
    assert not res.refused, [str(e) for e in res.refused]
    return {Path(r.source).stem: r for r in res.rules}


ALL_STEMS = sorted(p.stem for p in RULES_DIR.glob("*.yml"))
TESTED = [s for s in ALL_STEMS if s not in NOT_TRIGGERABLE]


def _params(stems: Sequence[str], bugs: bool = False) -> list[object]:
    """One parameter per rule, named by its file; with ``bugs``, the rules of PRODUCT_BUGS
    expected to fail (strict: a fixed bug must leave the table)."""
    return [pytest.param(s, id=s.removeprefix("proc_creation_lnx_"),
                         marks=[pytest.mark.xfail(reason=PRODUCT_BUGS[s], strict=True)]
                         if bugs and s in PRODUCT_BUGS else [])
            for s in stems]


# ---------------------------------------------------------------------------------------------
# Plans: what to execute


@dataclass(frozen=True)
class Program:
    """One exec: the program's canonical path (what ``process.executable`` must say) and its
    argv (argv[0] included)."""

    path: str
    argv: tuple[str, ...]

    @property
    def command_line(self) -> str:
        return " ".join(self.argv)


@dataclass(frozen=True)
class Plan:
    """A child and the launcher that is its parent, both started in ``cwd``. ``real``: the
    child is the system program at ``child.path``, not a copy of /usr/bin/true made there.
    ``login_uid``: the audit login uid the launcher gives itself and so its child; None: the
    test's own (unset here)."""

    child: Program
    parent: Program
    cwd: str
    real: bool = False
    login_uid: int | None = None

    def record(self) -> dict[str, str]:
        """The Sysmon-named record the agent should build for the child's exec: the fields the
        pack's process_creation rules read that this test's processes have (LogonId only with
        ``login_uid``: otherwise it is unset, and absent)."""
        rec = {"Image": self.child.path, "CommandLine": self.child.command_line,
               "ParentImage": self.parent.path, "ParentCommandLine": self.parent.command_line,
               "User": "root", "CurrentDirectory": self.cwd}
        if self.login_uid is not None:
            rec["LogonId"] = str(self.login_uid)
        return rec


@dataclass(frozen=True)
class Roots:
    """The scratch roots programs are placed under: children below ``<root>/c``, launchers
    below ``<root>/p`` (one path never holds both a launcher and a child)."""

    disk: Path   # /var/tmp/...
    tmp: Path    # /tmp/...
    shm: Path    # /dev/shm/...

    def all(self) -> tuple[Path, ...]:
        return (self.disk, self.tmp, self.shm)

    def owns(self, path: str) -> bool:
        return any(path.startswith(f"{r}/") for r in self.all())


# Printable ASCII without the wildcard and escape characters the generator puts into its
# near misses: records with control characters, accents, look-alike letters or a literal '*'
# are the differential test's edge cases, not commands.
_PLAIN = re.compile(r"[ -~]*")
_EDGE = re.compile(r"[*?%\\]")


def _path(raw: str | None, roots: Roots, kind: str, default: str) -> str | None:
    """The canonical path that ends as ``raw`` (an Image value of a generated record, the
    spaces the generator puts around a ``contains`` value dropped) does, under the root whose
    own path a value starting with /tmp/ or /dev/shm/ still starts with (else on disk): a
    relative value goes below ``bin/``, a directory gets a file name."""
    rel = default if raw is None or not raw.strip() else raw.strip()
    rel = rel if rel.startswith("/") else f"/bin/{rel}"
    rel = rel + "prog" if rel.endswith("/") else rel
    root = roots.tmp if rel.startswith("/tmp/") else roots.shm if rel.startswith(
        "/dev/shm/") else roots.disk
    p = f"{root}/{kind}{rel}"
    return p if os.path.normpath(p) == p else None


FILLER = "arg"   # an ordinary argument after a value the rule wants followed by a space


def _argvs(raw: str | None, path: str) -> Iterator[tuple[str, ...]]:
    """argvs whose joined text holds ``raw`` (a CommandLine value): after the program's name,
    alone (a rule may want the line to start with it) or after the full path; spaces tidied
    first (no empty arguments), then followed by an ordinary argument (a rule may want a
    space after a value), then as generated."""
    name = os.path.basename(path)
    if raw is None:
        yield (name,)
        return
    tidy = " ".join(raw.split())
    seen: set[tuple[str, ...]] = set()
    for text in (tidy, f"{tidy} {FILLER}".strip(), raw):
        for line in (f"{name} {text}" if text else name, text, f"{path} {text}"):
            if line and not line.startswith(" "):
                argv = tuple(line.split(" "))
                if argv not in seen:
                    seen.add(argv)
                    yield argv


def _merged(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    """Two generated records as one, as the generator merges a rule's selections: a field
    both set holds both values."""
    out = dict(a)
    for k, v in b.items():
        out[k] = f"{out[k]} {v}" if k in out and out[k] != v else v
    return out


def _ugliness(plan: Plan) -> int:
    """How far a plan is from a command a person would type: empty arguments, an argv[0] that
    is not the program's name, spaces inside program paths. The planner keeps the least ugly
    trigger, the earliest of equals (the generator lists each record it builds
    from the rule before its near misses)."""
    progs = (plan.child, plan.parent)
    return (sum(a == "" for p in progs for a in p.argv)
            + sum(" " in p.path for p in progs)
            + sum(p.argv[0] != os.path.basename(p.path) for p in progs))


class Planner:
    """Derives each rule's trigger and look-alike from the rule, checked by the rule engine."""

    def __init__(self, rules: dict[str, Rule], roots: Roots) -> None:
        self.rules = rules
        self.roots = roots
        self.work = work_dir(roots)
        self.engine = Engine.build(rules.values())
        self.checks = 0

    def launcher(self) -> Program:
        return Program(f"{self.roots.disk}/p/bin/launcher", ("launcher",))

    def matches(self, stem: str, plan: Plan) -> bool:
        self.checks += 1
        rid = self.rules[stem].id
        return any(r.id == rid for r in self.engine.match(CATEGORY, plan.record()))

    def trigger(self, stem: str) -> Plan | None:
        """The least ugly realisation the engine matches to the rule, over the generator's
        printable records and the merges of two of them (a rule wanting two selections at
        once: ``1 of selection_tool_* and selection_keyword``)."""
        if stem in REAL_PROGRAMS:
            real = REAL_PROGRAMS[stem]
            plan = Plan(Program(real.path, self._scratch_argv(real.trigger)), self.launcher(),
                        self.work, real=True)
            return plan if self.matches(stem, plan) else None
        rule = self.rules[stem]
        reads_parent = bool(rule.fields() & {"ParentImage", "ParentCommandLine"})
        records: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        for rec in generated(rule):
            if all(_PLAIN.fullmatch(v) and not _EDGE.search(v) for v in rec.values()):
                records.setdefault(tuple(sorted((k, v.lower()) for k, v in rec.items())), rec)
        singles = list(records.values())
        pairs = [_merged(a, b) for i, a in enumerate(singles[:PAIRED])
                 for b in singles[i + 1:PAIRED]]
        best: Plan | None = None
        for batch in (singles, pairs):
            self.checks = 0
            for rec in batch:
                if self.checks > CHECKS or (best is not None and _ugliness(best) == 0):
                    break
                found = self._realise(stem, rec, reads_parent)
                if found is not None and (best is None or _ugliness(found) < _ugliness(best)):
                    best = found
        return best

    def _realise(self, stem: str, rec: dict[str, str], reads_parent: bool) -> Plan | None:
        """The first realisation of ``rec`` the engine matches to the rule: its
        ``CurrentDirectory`` (a plain absolute path) and ``LogonId`` (a number) too."""
        cwd, login = rec.get("CurrentDirectory"), rec.get("LogonId")
        if cwd is not None and not (cwd.startswith("/") and os.path.normpath(cwd) == cwd):
            return None
        if login is not None and not login.isdigit():
            return None
        parents = list(self._programs(rec.get("ParentImage"), rec.get("ParentCommandLine"),
                                      "p", "/bin/launcher")) if reads_parent \
            else [self.launcher()]
        for child in self._programs(rec.get("Image"), rec.get("CommandLine"), "c",
                                    "/bin/tool"):
            for parent in parents:
                plan = Plan(child, parent, cwd or self.work,
                            login_uid=None if login is None else int(login))
                if self.matches(stem, plan):
                    return plan
        return None

    def look_alike(self, stem: str, trigger: Plan) -> Plan | None:
        """The first near miss of ``trigger`` the engine does not match to the rule: the same
        exec from the scratch working directory, if it had another; the same program without
        one of its arguments (or with its plain name as argv[0]); else the same exec under a
        plain launcher or one without one of its arguments; else the same argv from a program
        named differently or placed under another root; else without its login uid."""
        if trigger.real:
            real = REAL_PROGRAMS[stem]
            plan = replace(trigger, child=Program(real.path,
                                                  self._scratch_argv(real.look_alike)))
            return None if self.matches(stem, plan) else plan
        for plan in self._near_misses(trigger):
            if not self.matches(stem, plan):
                return plan
        return None

    def _near_misses(self, t: Plan) -> Iterator[Plan]:
        c, p = t.child, t.parent
        if t.cwd != self.work:
            yield replace(t, cwd=self.work)
        for argv in _dropped(c.argv, os.path.basename(c.path)):
            yield replace(t, child=Program(c.path, argv))
        yield replace(t, parent=self.launcher())
        for argv in _dropped(p.argv, os.path.basename(p.path)):
            yield replace(t, parent=Program(p.path, argv))
        for path in self._renamed(c.path, "c"):
            yield replace(t, child=Program(path, _renamed_argv(c, path)))
        for path in self._renamed(p.path, "p"):
            yield replace(t, parent=Program(path, _renamed_argv(p, path)))
        if t.login_uid is not None:
            yield replace(t, login_uid=None)

    def _renamed(self, path: str, kind: str) -> Iterator[str]:
        head, name = os.path.split(path)
        for other in (name[:-1], name + "x", "x" + name):
            if other:
                yield f"{head}/{other}"
        for root in self.roots.all():
            for mine in self.roots.all():
                if path.startswith(f"{mine}/{kind}/") and root != mine:
                    yield f"{root}{path[len(str(mine)):]}"

    def _programs(self, image: str | None, line: str | None, kind: str, default: str
                  ) -> Iterator[Program]:
        path = _path(image, self.roots, kind, default)
        if path is not None:
            for argv in _argvs(line, path):
                yield Program(path, argv)

    def _scratch_argv(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(a.replace("{scratch}", str(self.roots.disk)) for a in argv)


def _renamed_argv(prog: Program, path: str) -> tuple[str, ...]:
    """``prog``'s argv for the same program at ``path``: argv[0] follows the file's name."""
    if prog.argv[0] == os.path.basename(prog.path):
        return (os.path.basename(path), *prog.argv[1:])
    return prog.argv


def _dropped(argv: tuple[str, ...], name: str) -> Iterator[tuple[str, ...]]:
    """``argv`` without one of its arguments, last first; then with ``name`` as argv[0];
    then the name alone."""
    for i in range(len(argv) - 1, 0, -1):
        yield argv[:i] + argv[i + 1:]
    if argv[0] != name:
        yield (name, *argv[1:])
    yield (name,)


@dataclass
class Planned:
    trigger: Plan | None = None
    look_alike: Plan | None = None
    problem: str = ""


def work_dir(roots: Roots) -> str:
    """Where the plans whose rule names no working directory start."""
    return f"{roots.disk}/work"


def plan_all(rules: dict[str, Rule], roots: Roots) -> dict[str, Planned]:
    """Each tested rule's trigger and look-alike, or why the planner found none."""
    planner = Planner(rules, roots)
    out: dict[str, Planned] = {}
    for stem in TESTED:
        t = planner.trigger(stem)
        if t is None:
            out[stem] = Planned(problem="no generated record could be realised as an exec "
                                        "the engine matches to the rule")
            continue
        lk = planner.look_alike(stem, t)
        out[stem] = Planned(t, lk, "" if lk is not None else
                            "no near miss of the trigger escapes the rule")
    return out


# ---------------------------------------------------------------------------------------------
# Execution


@dataclass(frozen=True)
class Launched:
    parent_pid: int
    child_pid: int


def install(plan: Plan, roots: Roots, launcher: Path) -> None:
    """The plan's files: the child a copy of /usr/bin/true (unless real), the parent a copy
    of the launcher; only ever under the scratch roots."""
    targets = [(plan.parent.path, launcher)]
    if not plan.real:
        targets.append((plan.child.path, Path(TRUE)))
    for path, source in targets:
        assert roots.owns(path), f"{path} is outside the scratch roots"
        p = Path(path)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, p)
            p.chmod(0o755)


def make_dirs(path: Path) -> list[Path]:
    """``path`` and its missing ancestors made (0755); those it made, deepest first."""
    made: list[Path] = []
    p = path
    while not p.exists():
        made.append(p)
        p = p.parent
    for d in reversed(made):
        d.mkdir(mode=0o755)
    return made


def launch(plan: Plan) -> Launched:
    """Run the plan: the launcher with the parent's argv, which runs the child with its
    argv, both in the plan's working directory; both must succeed."""
    env = {"PATH": "/usr/bin:/bin", "VIGIL_CHILD_EXE": plan.child.path,
           "VIGIL_CHILD_ARGC": str(len(plan.child.argv)),
           **{f"VIGIL_CHILD_ARG{i}": a for i, a in enumerate(plan.child.argv)}}
    if plan.login_uid is not None:
        env["VIGIL_LOGINUID"] = str(plan.login_uid)
    p = subprocess.Popen(list(plan.parent.argv), executable=plan.parent.path, env=env,
                         cwd=plan.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=scaled(30))
    assert p.returncode == 0, f"{plan} exited {p.returncode}: {err.decode(errors='replace')}"
    return Launched(p.pid, int(out.split()[0]))


@dataclass
class Run:
    """The module's one agent and what was executed under it, per rule."""

    agent: AgentProc
    rules: dict[str, Rule]
    planned: dict[str, Planned]
    triggers: dict[str, Launched] = field(default_factory=dict)
    look_alikes: dict[str, Launched] = field(default_factory=dict)

    def plans(self, stem: str) -> tuple[Plan, Plan]:
        p = self.planned[stem]
        if p.trigger is None or p.look_alike is None:
            pytest.fail(f"{stem}: {p.problem}; list it in NOT_TRIGGERABLE with the reason, "
                        "or teach the planner")
        return p.trigger, p.look_alike


def _config(base: Path, probe: Path) -> Path:
    # informational rules (4 of the 122) run only below the default minimum level
    return write_config(base / "vigil.yaml", base, [{"path": str(probe)}],
                        rules={"builtin": True, "suppress_window": 0,
                               "min_level": "informational"})


def _kept(ev: Event) -> bool:
    """Exec events and file events (the barrier's probes); the rest is not needed."""
    return get(ev, "event.action") == "exec" or is_file_event(ev)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs the real eBPF agent")
    made = [Path(tempfile.mkdtemp(prefix="vigil-sigmahq-", dir=d)).resolve()
            for d in ("/var/tmp", "/tmp", "/dev/shm")]
    roots = Roots(*made)
    cwds_made: list[Path] = []   # the working directories rules name, made for the run
    try:
        for d in made:
            d.chmod(0o755)
        rules = pack_rules()
        planned = plan_all(rules, roots)
        launcher = roots.disk / "launcher"
        (roots.disk / "launcher.c").write_text(LAUNCHER_C)
        subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(launcher),
                        str(roots.disk / "launcher.c")], check=True, capture_output=True)
        (roots.disk / "dd.in").write_bytes(b"x")
        work, probe = Path(work_dir(roots)), roots.disk / "w"
        work.mkdir()
        probe.mkdir()
        for p in planned.values():
            for plan in (p.trigger, p.look_alike):
                if plan is not None:
                    install(plan, roots, launcher)
                    if not roots.owns(plan.cwd):
                        cwds_made += make_dirs(Path(plan.cwd))
        agent = AgentProc(["--config", str(_config(roots.disk, probe))],
                          db=roots.disk / "state" / "baseline.db", keep=_kept).start()
        try:
            agent.probe(probe, timeout=60)
            r = Run(agent, rules, planned)
            for stem, p in planned.items():
                if p.trigger is not None and p.look_alike is not None:
                    r.triggers[stem] = launch(p.trigger)
                    r.look_alikes[stem] = launch(p.look_alike)
            # Two probes: the second comes in a later batch than the first, and a batch's
            # alerts follow its events, so every alert of the executions above is in.
            agent.settle(probe)
            agent.probe(probe)
            yield r
        finally:
            rc, _ = agent.stop()
        assert rc == 0, "\n".join(agent.stderr_lines[-20:])
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
        # deepest first; only what this run made, and only if empty
        for c in sorted(cwds_made, key=lambda d: len(d.parts), reverse=True):
            with contextlib.suppress(OSError):
                c.rmdir()


def _exec_of(agent: AgentProc, pid: int) -> Event:
    """The exec event of ``pid`` (the agent saw it)."""
    def pred(e: Event) -> bool:
        return get(e, "event.action") == "exec" and get(e, "process.pid") == pid
    return agent.wait_for(pred, timeout=WAIT)[-1]


# ---------------------------------------------------------------------------------------------
# The tests


def test_every_process_creation_rule_is_tested_or_listed() -> None:
    rules = pack_rules()
    assert sorted(rules) == ALL_STEMS
    assert len(ALL_STEMS) >= 122
    assert set(TESTED).isdisjoint(NOT_TRIGGERABLE)
    assert set(TESTED) | set(NOT_TRIGGERABLE) == set(ALL_STEMS)
    assert set(NOT_TRIGGERABLE) <= set(ALL_STEMS), "a listed rule left the pack"
    assert all(NOT_TRIGGERABLE.values())
    assert set(PRODUCT_BUGS) <= set(TESTED) and set(REAL_PROGRAMS) <= set(TESTED)


def test_every_tested_rule_has_a_trigger_and_a_look_alike_planned() -> None:
    """Offline (no agent): the planner finds both for every tested rule, the look-alike a
    different exec, and it finds no trigger for the listed rules (when a later Vigil provides
    what they need, this fails and the rule moves to the tested ones)."""
    rules = pack_rules()
    roots = Roots(Path("/var/tmp/vigil-sigmahq-plan"), Path("/tmp/vigil-sigmahq-plan"),
                  Path("/dev/shm/vigil-sigmahq-plan"))
    planned = plan_all(rules, roots)
    missing = {s: p.problem for s, p in planned.items() if p.problem}
    assert not missing
    for p in planned.values():
        assert p.trigger != p.look_alike
    planner = Planner(rules, roots)
    assert not [s for s in NOT_TRIGGERABLE if planner.trigger(s) is not None]


@pytest.mark.parametrize("stem", _params(TESTED, bugs=True))
def test_rule_fires_on_a_real_exec(run: Run, stem: str) -> None:
    trigger, _ = run.plans(stem)
    rule = run.rules[stem]
    done = run.triggers[stem]

    def pred(e: Event) -> bool:
        return get(e, "rule.id") == rule.id and get(e, "process.pid") == done.child_pid

    alert = run.agent.wait_for(pred, alerts=True, timeout=WAIT)[0]
    assert get(alert, "event.kind") == "alert"
    assert get(alert, "event.action") == "exec"
    assert get(alert, "rule.name") == rule.title
    assert get(alert, "rule.ruleset") == "sigmahq"
    assert get(alert, "vigil.rule.level") == rule.level
    assert get(alert, "process.executable") == trigger.child.path
    assert get(alert, "process.command_line") == trigger.child.command_line
    assert get(alert, "process.args") == list(trigger.child.argv)
    assert get(alert, "process.parent.pid") == done.parent_pid
    assert get(alert, "process.parent.executable") == trigger.parent.path
    assert get(alert, "user.name") == "root"
    assert get(alert, "process.working_directory") == trigger.cwd
    if trigger.login_uid is not None:
        assert get(alert, "vigil.process.login_uid") == trigger.login_uid


@pytest.mark.parametrize("stem", _params(TESTED))
def test_look_alike_does_not_fire(run: Run, stem: str) -> None:
    _, look = run.plans(stem)
    rule = run.rules[stem]
    done = run.look_alikes[stem]
    ev = _exec_of(run.agent, done.child_pid)      # the agent saw it: silence means something
    assert get(ev, "process.executable") == look.child.path
    assert get(ev, "process.command_line") == look.child.command_line
    assert get(ev, "process.parent.executable") == look.parent.path
    assert get(ev, "process.working_directory") == look.cwd
    fired = [a for a in run.agent.alerts
             if get(a, "rule.id") == rule.id and get(a, "process.pid") == done.child_pid]
    assert not fired, f"{rule.title} fired on {look}"
