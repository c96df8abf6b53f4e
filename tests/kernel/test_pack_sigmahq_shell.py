"""SigmaHQ's keyword rules of the built-in pack (``rules/linux/builtin``), each fired by lines
typed into a real interactive bash under the real agent.

Per rule, one bash on a pseudo-terminal (as the unprivileged test user) is typed every keyword
of the rule (a ``|all`` list as one line), each as a comment (``# <keyword>``, its wildcards
filled with a letter): bash runs nothing of it, but its readline returns the line, which is
what the rules read (a keyword is found anywhere in the typed line). What is proven: every
line reaches the agent as a ``shell-command`` event of that bash, the rule engine (which
tests/rules/test_differential.py holds to pySigma's SQL backend) matches every line to the
rule, and the agent raises that rule's alert for that bash (once: repeats by one process are
suppressed). A test checks that every keyword rule of the pack is tested here.
"""

from __future__ import annotations

import pytest
from agent_proc import AgentProc, Event, UserIds, get
from shell_pty import interactive_bash

from vigil.rules.loader import builtin_rules_dir, load_paths
from vigil.rules.matcher import Engine
from vigil.rules.model import Rule, StringValue, Wildcard
from vigil.rules.shellview import SHELL_KEY, is_shell_rule

pytestmark = [pytest.mark.root]

RULES = [r for r in load_paths([builtin_rules_dir() / "sigmahq"]).rules if is_shell_rule(r)]
ENGINE = Engine.build(RULES)


def _text(v: object) -> str:
    assert isinstance(v, StringValue), v
    return "".join("x" if isinstance(p, Wildcard) else p for p in v.parts)


def typed_lines(rule: Rule) -> list[str]:
    out = []
    for s in rule.searches.values():
        for alt in s.alternatives:
            for it in alt:
                texts = [_text(v) for v in it.values]
                out += [" ".join(texts)] if it.all else texts
    return [f"# {t}" for t in out]


def test_every_keyword_rule_of_the_pack_is_here() -> None:
    assert len(RULES) == 9
    assert all(typed_lines(r) for r in RULES)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.source.rsplit("/", 1)[-1])
def test_rule_fires_on_typed_lines(agent: AgentProc, test_user: UserIds, rule: Rule) -> None:
    lines = typed_lines(rule)
    for line in lines:
        assert rule in ENGINE.match(SHELL_KEY, {"command": line}), line
    s = interactive_bash(lines, user=test_user.ids)

    def of_bash(ev: Event) -> bool:
        return get(ev, "event.action") == "shell-command" and get(ev, "process.pid") == s.pid

    evs = agent.wait_for(of_bash, count=len(lines) + 1)   # + exit
    assert [get(e, "vigil.shell.command") for e in evs] == [*lines, "exit"]
    [alert] = agent.wait_for(lambda a: get(a, "rule.id") == rule.id
                             and get(a, "process.pid") == s.pid, alerts=True)
    assert get(alert, "vigil.shell.command") == lines[0]
    assert get(alert, "process.executable") == "/usr/bin/bash"
    assert get(alert, "user.id") == str(test_user.uid)
