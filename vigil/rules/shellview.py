"""The shell-command view: Sigma's category-less Linux keyword rules over typed command lines.

SigmaHQ's ``rules/linux/builtin/`` rules name ``logsource: {product: linux}`` and nothing else,
and search ``keywords`` only: text anywhere in a log line, written for shell histories and
syslog. Vigil has no log lines, but it has what those rules mostly look for: the command lines
typed into interactive shells (``event.action: shell-command``, vigil.kernel.uprobes). Owns
which rules read that view (``is_shell_rule``: product linux, neither category nor service,
keyword searches only), its engine key, and an ECS shell event -> its one record, whose only
value is the typed line: a keyword is found in that text and nowhere else (not in the shell's
own command line or other who-data). A category-less rule with field conditions is not one of
them: it keeps its coverage warning and never matches (vigil.rules.fieldmap).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from vigil.rules.model import LogSource, Rule

SHELL_KEY: Final = "linux:shell"   # never a Sigma category or service name (a colon)
DATASET: Final = "vigil.shell"
COMMAND: Final = "command"          # the record's one field (keywords read any field's value)


def is_shell_logsource(ls: LogSource) -> bool:
    return ls.product == "linux" and ls.category is None and ls.service is None


def is_shell_rule(rule: Rule) -> bool:
    """A category-less Linux rule whose searches are all keywords (field-less)."""
    return is_shell_logsource(rule.logsource) and bool(rule.searches) and all(
        item.field is None
        for s in rule.searches.values() for alt in s.alternatives for item in alt)


def is_shell_event(doc: Mapping[str, Any]) -> bool:
    event = doc.get("event")
    return type(event) is dict and event.get("dataset") == DATASET \
        and event.get("outcome") != "failure"


def shell_record(doc: Mapping[str, Any]) -> dict[str, str]:
    """The typed line, as the rules' only text."""
    vigil = doc.get("vigil")
    shell = vigil.get("shell") if type(vigil) is dict else None
    cmd = shell.get("command") if type(shell) is dict else None
    return {COMMAND: cmd} if isinstance(cmd, str) else {}
