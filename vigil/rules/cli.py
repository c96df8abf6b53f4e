"""``vigil rules check|list|test``: the rule engine's commands (vigil/cli.py delegates here).

Owns the arguments and what the three commands print; loading, filtering, compiling and
matching are the package's other modules. Exit status: ``check`` 0 when every document (rule,
correlation, filter) loaded, 2 when some were refused (each named with FILE:LINE and the
reason: bad input, as everywhere in Vigil) or a path cannot be read; ``list`` and ``test`` 2
on unreadable paths or a bad events file, else 0. All three apply the Sigma filters; ``check``
and ``list`` count and show correlations and filters; ``test`` replays recorded events through
the agent's own detection stage (vigil.rules.detector), correlations included, and prints the
alerts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigil.rules.errors import RuleError

if TYPE_CHECKING:
    from vigil.rules.correlation import Correlation
    from vigil.rules.filters import Filter
    from vigil.rules.loader import LoadResult
    from vigil.rules.matcher import Engine

# The engine is imported by the commands, not here: `vigil run` builds this parser before it
# starts the kernel side, and the rules' modules would delay that start (they are imported
# later, while the verifier runs).


def _load(paths: list[Path] | None) -> tuple[LoadResult, Engine]:
    from vigil.rules.correlation import resolve
    from vigil.rules.filters import apply_filters
    from vigil.rules.loader import builtin_rules_dir, load_paths
    from vigil.rules.ruleset import compile_rules

    result = load_paths(paths or [builtin_rules_dir()])
    result.rules, result.warnings = apply_filters(result.rules, result.filters)
    engine, result.rules, errors = compile_rules(result.rules)
    result.refused.extend(errors)
    # a correlation whose rule the compiler refused is refused too
    result.correlations, errors = resolve(result.correlations, result.rules)
    result.refused.extend(errors)
    return result, engine


def _more(result: LoadResult) -> str:
    """", C correlations, F filters" when the files hold any (the line stays as it was)."""
    c, f = len(result.correlations), len(result.filters)
    if not c and not f:
        return ""
    return f", {c} correlation{'s' if c != 1 else ''}, {f} filter{'s' if f != 1 else ''}"


def _check(args: argparse.Namespace) -> int:
    result, _ = _load(args.paths)
    for e in result.refused:
        print(f"{e}", file=sys.stderr)
    for r in result.with_warnings:
        for line, w in r.warnings:
            print(f"{r.source}:{line}: warning: {w}", file=sys.stderr)
    docs: list[Correlation | Filter] = [*result.correlations, *result.filters]
    for d in docs:
        for line, w in d.warnings:
            print(f"{d.source}:{line}: warning: {w}", file=sys.stderr)
    for w in result.warnings:
        print(w, file=sys.stderr)
    _watching(result, args.config)
    print(f"{len(result.rules)} loaded, {len(result.refused)} refused, "
          f"{len(result.with_warnings)} with unmapped fields{_more(result)}")
    return 2 if result.refused else 0


def _watching(result: LoadResult, config: Path | None) -> None:
    """Rule-driven watching (vigil.rules.watchpaths) for the configuration's directories:
    the paths the kernel will watch for file rules, and the file rules it cannot serve."""
    from vigil.config import load_config
    from vigil.rules.watchpaths import watch_paths
    from vigil.watchlist import realtime_roots

    paths, unserved = watch_paths(result.rules, realtime_roots(load_config(config)))
    for w in paths:
        print(f"note: watched for the rules only: {os.fsdecode(w.prefix)} "
              f"({'; '.join(w.rules)})", file=sys.stderr)
    for r, why in unserved:
        print(f"{r.where}: note: '{r.title}' cannot be served by watching: {why}",
              file=sys.stderr)


def _quiet_pipe(fn: Any) -> Any:
    """A reader that goes away (``vigil rules list | head``) ends the output, not in a
    traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            rc: int = fn(args)
            sys.stdout.flush()
            return rc
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    return run


@_quiet_pipe
def _list(args: argparse.Namespace) -> int:
    from vigil.rules.shellview import is_shell_rule

    result, _ = _load(args.paths)
    for e in result.refused:
        print(f"{e}", file=sys.stderr)
    rules = sorted(result.rules, key=lambda r: (r.logsource.category or "", r.title))
    if args.json:   # correlations and filters follow the rules, told apart by "kind"
        print(json.dumps([{"kind": "rule", **r.summary()} for r in rules]
                         + [c.summary() for c in result.correlations]
                         + [f.summary() for f in result.filters], indent=2))
        return 0
    for r in rules:
        mark = " (unmapped fields)" if r.warnings else ""
        mark += " (filtered)" if r.filters else ""
        where = r.logsource.category or r.logsource.service \
            or ("shell commands" if is_shell_rule(r) else "-")
        print(f"{r.level or '-':<13} {where:<19} "
              f"{r.id or '-':<36}  {r.title}{mark}")
    for c in result.correlations:
        print(f"{c.level or '-':<13} {'correlation':<19} {c.id or c.name or '-':<36}  "
              f"{c.title} ({c.type}, {c.timespan_text}, {c.condition_text()})")
    for f in result.filters:
        print(f"{'-':<13} {'filter':<19} {f.id or f.name or '-':<36}  {f.title} "
              f"(on {', '.join(f.rules)})")
    print(f"{len(rules)} rules{_more(result)}", file=sys.stderr)
    return 0


def _events(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise RuleError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise RuleError(f"{path}: not UTF-8 text: {e}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise RuleError(f"not a JSON event: {e.msg}", source=str(path), line=n) from None
        if not isinstance(doc, dict):
            raise RuleError("not a JSON object", source=str(path), line=n)
        out.append((n, doc))
    return out


def _when(doc: dict[str, Any]) -> int:
    """A recorded event's time (ns) from its ``@timestamp``; 0 when it has none."""
    ts = doc.get("@timestamp")
    if not isinstance(ts, str):
        return 0
    try:
        t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return 0
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


@_quiet_pipe
def _test(args: argparse.Namespace) -> int:
    """The recorded events through the agent's own detection stage (vigil.rules.detector):
    filters, correlations (in the events' time; the windows still open at the end are judged
    then), one alert per event and rule; no suppression, every level."""
    from vigil.config import RulesConfig
    from vigil.outputs.ecs_alert import alert_to_ecs
    from vigil.rules.detector import Detector
    from vigil.rules.loader import builtin_rules_dir
    from vigil.rules.ruleset import build_ruleset

    paths = tuple(args.paths) or (builtin_rules_dir(),)
    ruleset = build_ruleset(RulesConfig(builtin=False, paths=paths, min_level="informational",
                                        suppress_window=0))
    for e in ruleset.refused:
        print(f"{e}", file=sys.stderr)
    events = _events(args.events)
    detector = Detector(ruleset, 0, host={})
    fired: set[str] = set()
    alerts = 0
    last = 0
    for n, doc in events:
        last = max(last, ts := _when(doc))
        for a in detector.process_documents([(ts, doc)]):
            alerts += 1
            fired.add(a.rule.where)
            _show(args, a, f"{args.events}:{n}", alert_to_ecs(a))
    for a in detector.close(last + 10 ** 18):
        alerts += 1
        fired.add(a.rule.where)
        _show(args, a, f"{args.events}:end", alert_to_ecs(a))
    print(f"{len(events)} events, {alerts} alerts of {len(fired)} rules "
          f"({ruleset.describe()})", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace, a: Any, where: str, doc: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({"at": where, "alert": doc}))
        return
    from vigil.outputs.pretty import alert_what

    what = alert_what(a).replace("\r", "\\r").replace("\n", "\\n")   # one line each
    print(f"{where}: {a.rule.level}: {a.rule.title} [{a.rule.id or a.rule.where}] "
          f"{a.category}: {what}")


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="rules_command", required=True)
    check = sub.add_parser("check", help="load rules and report every problem with FILE:LINE")
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                       help="rule files or directories (searched for *.yml, *.yaml)")
    check.add_argument("--config", type=Path, metavar="FILE",
                       help="configuration whose watched directories the file rules' paths "
                       "are compared with (default: embedded)")
    check.set_defaults(func=_check)
    lst = sub.add_parser("list", help="the rules that load (default: the built-in pack)")
    lst.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    lst.add_argument("--json", action="store_true", help="machine-readable list")
    lst.set_defaults(func=_list)
    test = sub.add_parser("test", help="replay recorded events (vigil run -o json) through "
                          "rules and print the matches")
    test.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                      help="rule files or directories (default: the built-in pack)")
    test.add_argument("--events", type=Path, required=True, metavar="FILE.jsonl")
    test.add_argument("--json", action="store_true", help="one JSON object per match")
    test.set_defaults(func=_test)
