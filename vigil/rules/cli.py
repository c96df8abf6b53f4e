"""``vigil rules check|list|test``: the rule engine's commands (vigil/cli.py delegates here).

Owns the arguments and what the three commands print; loading, compiling and matching are
the package's other modules. Exit status: ``check`` 0 when every rule loaded, 2 when some were
refused (each named with FILE:LINE and the reason: bad input, as everywhere in Vigil) or a
path cannot be read; ``list`` and ``test`` 2 on unreadable paths or a bad events file, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vigil.rules.errors import RuleError
from vigil.rules.fieldmap import ecs_to_records
from vigil.rules.loader import LoadResult, builtin_rules_dir, load_paths
from vigil.rules.matcher import Engine


def _load(paths: list[Path] | None) -> tuple[LoadResult, Engine]:
    result = load_paths(paths or [builtin_rules_dir()])
    engine = Engine.build(result.rules)
    if engine.errors:   # refused by the compiler: no longer counted as loaded
        bad = {(e.source, e.line) for e in engine.errors}
        result.rules = [r for r in result.rules if (r.source, r.line) not in bad]
        result.refused.extend(engine.errors)
    return result, engine


def _check(args: argparse.Namespace) -> int:
    result, _ = _load(args.paths)
    for e in result.refused:
        print(f"{e}", file=sys.stderr)
    for r in result.with_warnings:
        for line, w in r.warnings:
            print(f"{r.source}:{line}: warning: {w}", file=sys.stderr)
    print(f"{len(result.rules)} loaded, {len(result.refused)} refused, "
          f"{len(result.with_warnings)} with unmapped fields")
    return 2 if result.refused else 0


def _quiet_pipe(fn: Any) -> Any:
    """A reader that goes away (``vigil rules list | head``) ends the output, not in a
    traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            rc: int = fn(args)
            sys.stdout.flush()
            return rc
        except BrokenPipeError:
            import os
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    return run


@_quiet_pipe
def _list(args: argparse.Namespace) -> int:
    result, _ = _load(args.paths)
    for e in result.refused:
        print(f"{e}", file=sys.stderr)
    rules = sorted(result.rules, key=lambda r: (r.logsource.category or "", r.title))
    if args.json:
        print(json.dumps([r.summary() for r in rules], indent=2))
        return 0
    for r in rules:
        mark = " (unmapped fields)" if r.warnings else ""
        print(f"{r.level or '-':<13} {r.logsource.category or r.logsource.service or '-':<19} "
              f"{r.id or '-':<36}  {r.title}{mark}")
    print(f"{len(rules)} rules", file=sys.stderr)
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


@_quiet_pipe
def _test(args: argparse.Namespace) -> int:
    result, engine = _load(args.paths)
    for e in result.refused:
        print(f"{e}", file=sys.stderr)
    events = _events(args.events)
    matches = 0
    fired: set[str] = set()
    for n, doc in events:
        for category, rec in ecs_to_records(doc):
            for rule in engine.match(category, rec):
                matches += 1
                fired.add(rule.where)
                if args.json:
                    print(json.dumps({"line": n, "category": category, "rule": rule.summary(),
                                      "record": rec}))
                else:
                    what = rec.get("CommandLine") or rec.get("TargetFilename") or \
                        rec.get("Image") or ""
                    what = what.replace("\r", "\\r").replace("\n", "\\n")   # one line each
                    print(f"{args.events}:{n}: {rule.level or '-'}: {rule.title} "
                          f"[{rule.id}] {category}: {what}")
    print(f"{len(events)} events, {matches} matches of {len(fired)} rules "
          f"({len(result.rules)} loaded, {len(result.refused)} refused)", file=sys.stderr)
    return 0


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="rules_command", required=True)
    check = sub.add_parser("check", help="load rules and report every problem with FILE:LINE")
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                       help="rule files or directories (searched for *.yml, *.yaml)")
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
