"""What the kernel tests of SigmaHQ's ``file_event`` and ``auditd`` rules share
(test_pack_sigmahq_file.py, test_pack_auditd.py): the rule files a module's one agent loads,
that agent, the real commands run under it, and how an alert and a silence are read.

- Rule files: a shipped rule is loaded from its own file when none of its absolute paths name
  a place on this machine that a test must not touch; otherwise from a copy whose absolute path
  values are moved onto the scratch root R by test_pack_vigil.rewrite_rule (``/etc/sudoers.d/``
  -> ``R/etc/sudoers.d/``; ``contains``/``endswith`` values, and the exclusions by program,
  unchanged). An alert of a shipped file says ``rule.ruleset: sigmahq``, of a copy ``sigma``.
- ``Step``: one real command (argv[0] absolute), what it reads on its standard input, the user
  it runs as, and the file it changes (the alert, or for a look-alike the telemetry, must name
  it). ``{NAME}`` in its words stands for a scratch place of the module.
- A trigger's alert must carry the rule, the acting process (pid and executable) and the file;
  a look-alike's silence counts only once the agent has shown it saw the look-alike (its exec,
  and its file event where it has one).

Does not own which commands trigger which rule: the modules do.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from agent_proc import AgentProc, Child, Event, get, is_file_event, run_child, write_config
from test_pack_sigmahq import _kept
from test_pack_vigil import act, rewrite_rule

from vigil.rules.loader import builtin_rules_dir, load_paths
from vigil.rules.model import Rule

WAIT = 15   # seconds for an alert or event that must have come (after the barrier: at once)
SHIPPED = builtin_rules_dir()
PATH_FIELD = "TargetFilename"   # the field test_pack_vigil.rewrite_rule moves


# ---------------------------------------------------------------------------------------------
# Rule files


def moved_rule(text: str, root: str, field: str = PATH_FIELD) -> str:
    """``text`` with the absolute values of ``field`` moved under ``root``. rewrite_rule moves
    TargetFilename's: another field (auditd's PATH ``name``) is handed to it under that name
    and given back its own."""
    if field == PATH_FIELD:
        return rewrite_rule(text, root)
    assert PATH_FIELD not in text, "the rule already reads TargetFilename"
    to = re.compile(rf"(?m)^(\s+(?:- )?){re.escape(field)}(?=[|:])")
    back = re.compile(rf"(?m)^(\s+(?:- )?){PATH_FIELD}(?=[|:])")
    return back.sub(rf"\g<1>{field}", rewrite_rule(to.sub(rf"\g<1>{PATH_FIELD}", text), root))


SCRATCH = ("/tmp/", "/var/tmp/")   # places a test may create files in as the rule names them


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        for x in node:
            yield from _strings(x)
    elif isinstance(node, str):
        yield node


def rule_files(files: Iterable[Path], root: Path, out: Path, field: str = PATH_FIELD
               ) -> list[Path]:
    """The file to load for each shipped rule: the rule itself when the only paths moving
    would change lie in /tmp or /var/tmp, else the copy with its paths moved under ``root``,
    written to ``out``."""
    used = []
    for f in files:
        text = f.read_text()
        moved = moved_rule(text, str(root), field)
        before = set(_strings(yaml.safe_load(text)["detection"]))
        changed = set(_strings(yaml.safe_load(moved)["detection"])) - before
        if all(c.startswith(f"{root}/") and c.removeprefix(str(root)).startswith(SCRATCH)
               for c in changed):
            used.append(f)
        else:
            out.mkdir(exist_ok=True)
            (out / f.name).write_text(moved)
            used.append(out / f.name)
    return used


def ruleset(rule: Rule) -> str:
    """What the alerts of ``rule`` must say in ``rule.ruleset``: the built-in pack's own
    files are ``sigmahq``'s, the moved copies a user's (``sigma``)."""
    return "sigmahq" if Path(rule.source).resolve().is_relative_to(SHIPPED.resolve()) \
        else "sigma"


# ---------------------------------------------------------------------------------------------
# The agent


@contextmanager
def module_agent(base: Path, directories: Sequence[Path], rules: Sequence[Path],
                 probe: Path) -> Iterator[AgentProc]:
    """``vigil run`` watching ``directories`` (and ``probe``, for readiness and barriers),
    with only ``rules`` (no built-in pack), every level, no suppression; ready when yielded,
    stopped after, with a clean exit and no refused rule."""
    cfg = write_config(base / "vigil.yaml", base,
                       [{"path": str(d)} for d in (*directories, probe)],
                       rules={"builtin": False, "paths": [str(r) for r in rules],
                              "suppress_window": 0, "min_level": "informational"})
    agent = AgentProc(["--config", str(cfg)], db=base / "state" / "baseline.db",
                      keep=_kept).start()
    try:
        agent.probe(probe, timeout=60)
        assert not [ln for ln in agent.stderr_lines if "refused" in ln], agent.stderr_lines
        yield agent
    finally:
        rc, summary = agent.stop()
    assert rc == 0, "\n".join(agent.stderr_lines[-20:])
    assert summary is not None and summary.dropped == 0, summary


# ---------------------------------------------------------------------------------------------
# Steps


@dataclass(frozen=True)
class Step:
    """One real command. ``path``: the file it creates or changes (None: only its exec
    counts). ``uid``: run as that user (its own group), else as root. ``copy_of``: argv[0]
    is first made as a copy of that program."""

    argv: tuple[str, ...]
    stdin: bytes = b""
    path: str | None = None
    uid: int | None = None
    copy_of: str | None = None


def tee(path: str, text: str, append: bool = False) -> Step:
    """tee writing ``text`` to ``path`` (appending with ``append``)."""
    return Step(("/usr/bin/tee", *(("-a",) if append else ()), path), text.encode(), path)


@dataclass(frozen=True)
class Case:
    """A rule's triggers and its look-alikes."""

    triggers: tuple[Step, ...]
    look_alikes: tuple[Step, ...]


def fill(text: str, places: Mapping[str, str]) -> str:
    """``text`` with each ``{NAME}`` of ``places`` replaced (not str.format: rules want names
    with braces in them)."""
    for name, value in places.items():
        text = text.replace("{" + name + "}", value)
    return text


@dataclass(frozen=True)
class Ran:
    """A step as it ran: the process, and the file it must be reported on."""

    child: Child
    path: str | None


def run_step(step: Step, places: Mapping[str, str]) -> Ran:
    argv = [fill(a, places) for a in step.argv]
    if step.copy_of is not None:
        Path(argv[0]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(step.copy_of, argv[0])
        os.chmod(argv[0], 0o755)
    if step.uid is None:
        child = act(argv, step.stdin)
    else:
        assert not step.stdin
        child = run_child(argv, user=(step.uid, _gid(step.uid)))
    return Ran(child, None if step.path is None else fill(step.path, places))


def _gid(uid: int) -> int:
    return pwd.getpwuid(uid).pw_gid


# ---------------------------------------------------------------------------------------------
# A module's run


@dataclass
class PackRun:
    """The module's one agent, the rules it runs (by file stem), the scratch places, and
    what ran under it per rule."""

    agent: AgentProc
    rules: dict[str, Rule]
    places: dict[str, str]
    triggers: dict[str, list[Ran]] = field(default_factory=dict)
    look_alikes: dict[str, list[Ran]] = field(default_factory=dict)


@contextmanager
def pack_run(base: Path, directories: Sequence[Path], files: Sequence[Path], probe: Path,
             cases: Mapping[str, Case], places: dict[str, str],
             before: Callable[[PackRun], None] | None = None) -> Iterator[PackRun]:
    """The module's agent on ``files`` (module_agent), with ``before`` (what the module runs
    itself) and every case's triggers and look-alikes run under it, then one barrier: every
    alert they raise is in when this yields."""
    loaded = load_paths(files)
    assert not loaded.refused, [str(e) for e in loaded.refused]
    with module_agent(base, directories, files, probe) as agent:
        run = PackRun(agent, by_stem(loaded.rules), places)
        if before is not None:
            before(run)
        for stem, case in cases.items():
            run.triggers[stem] = [run_step(s, places) for s in case.triggers]
            run.look_alikes[stem] = [run_step(s, places) for s in case.look_alikes]
        # The second probe comes in a later batch than the first, and a batch's alerts follow
        # its events.
        agent.settle(probe)
        agent.probe(probe)
        yield run


# ---------------------------------------------------------------------------------------------
# Reading the stream


def alert_of(agent: AgentProc, rule: Rule, ran: Ran, category: str) -> Event:
    """The alert of ``rule`` for ``ran``'s file, or for its exec when it names none, checked
    as a user reads it (``category``: the logsource category or service it names)."""
    def pred(e: Event) -> bool:
        return get(e, "rule.id") == rule.id and get(e, "process.pid") == ran.child.pid and (
            get(e, "event.action") == "exec" if ran.path is None
            else get(e, "file.path") == ran.path)

    a = agent.wait_for(pred, alerts=True, timeout=WAIT)[0]
    assert get(a, "event.kind") == "alert"
    assert get(a, "rule.name") == rule.title
    assert get(a, "vigil.rule.level") == rule.level
    assert get(a, "rule.ruleset") == ruleset(rule)
    assert get(a, "vigil.alert.category") == category
    assert get(a, "process.executable") == ran.child.exe
    if ran.path is None:
        assert get(a, "event.action") == "exec"
    else:
        assert is_file_event(a) and get(a, "file.path") == ran.path
    return a


def seen_by_agent(agent: AgentProc, ran: Ran) -> Event:
    """The agent saw ``ran``: its exec event (returned), and its file event if it changes a
    file."""
    def exec_pred(e: Event) -> bool:
        return get(e, "event.action") == "exec" and get(e, "process.pid") == ran.child.pid

    ev = agent.wait_for(exec_pred, timeout=WAIT)[-1]
    if ran.path is not None:
        def file_pred(e: Event) -> bool:
            return (is_file_event(e) and get(e, "process.pid") == ran.child.pid
                    and get(e, "file.path") == ran.path)
        agent.wait_for(file_pred, timeout=WAIT)
    return ev


def alerts_for(agent: AgentProc, rule: Rule, pid: int) -> list[Event]:
    return [a for a in agent.alerts if get(a, "rule.id") == rule.id
            and get(a, "process.pid") == pid]


def assert_silent(agent: AgentProc, rule: Rule, ran: Ran) -> Event:
    """``ran`` reached the agent and raised no alert of ``rule``; its exec event."""
    ev = seen_by_agent(agent, ran)
    fired = alerts_for(agent, rule, ran.child.pid)
    assert not fired, [(get(a, "event.action"), get(a, "file.path")) for a in fired]
    return ev


def by_stem(rules: Iterable[Rule]) -> dict[str, Rule]:
    return {Path(r.source).stem: r for r in rules}
