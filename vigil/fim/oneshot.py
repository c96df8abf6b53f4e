"""``vigil scan --init`` / ``vigil scan --check``: AIDE-style one-shot integrity checks.

Owns the scan subcommand's options, its report (text or ECS JSON lines) and exit codes: 0 nothing
changed, 1 changes found, 2 error, 3 nothing changed in what could be checked but the check is
incomplete (files or directories unreadable, a stop at scan.max_files, a watched directory without
a baseline): an incomplete check never looks like a clean one. Needs no eBPF and no root: any
readable tree and a writable database path (``--db``) will do. Does not own the scanning itself
(vigil.fim.scanner); the CLI (vigil.cli) only wires ``configure_parser`` and ``main`` under
``scan``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from vigil.kernel.errors import VigilError

if TYPE_CHECKING:
    from vigil.config import Config

# The scanner is imported by the command, not here: `vigil run` builds this parser before it
# starts the kernel side, which the scanner's modules would delay.

EXIT_OK, EXIT_CHANGED, EXIT_ERROR, EXIT_INCOMPLETE = 0, 1, 2, 3


def configure_parser(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--init", action="store_true", help="build (or rebuild) the baseline")
    mode.add_argument("--check", action="store_true",
                      help="compare the disk with the baseline; exit 1 when something changed, "
                      "3 when nothing did but the check is incomplete")
    p.add_argument("--config", type=Path, metavar="FILE", help="configuration file (YAML)")
    p.add_argument("--watch", type=Path, action="append", metavar="DIR",
                   help="watch DIR instead of the configured directories (repeatable)")
    p.add_argument("--db", type=Path, metavar="PATH",
                   help="baseline database (default: the configuration's `database`)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="report format: readable lines, or ECS JSON lines")


def _report(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    from vigil.fim.model import SCAN_ACTIONS
    from vigil.fim.scanner import Scanner
    from vigil.fim.store import Store

    db = args.db or cfg.database
    try:
        # --init into a new file builds it aside and publishes it whole (vigil.fim.store)
        store = Store(db, build_new=bool(args.init))
    except VigilError as e:
        hint = "" if args.db else " (use --db PATH for a database you can write)"
        raise type(e)(f"{e}{hint}") from None
    with store:
        if args.check and store.last_complete_scan() is None:
            print(f"vigil scan: no baseline in {db}: run `vigil scan --init` first",
                  file=sys.stderr)
            return EXIT_ERROR
        scanner = Scanner(cfg, store, update=bool(args.init))
        host = {"hostname": os.uname().nodename}
        started = time.monotonic()
        changes = 0
        for ev in scanner.scan("manual-scan"):
            if args.init or ev.action in SCAN_ACTIONS:
                continue  # --init builds a baseline, it does not list changes
            changes += 1
            # The renderers are imported only when there is something to render: importing
            # the outputs costs a one-shot run more than scanning thousands of files.
            from vigil.outputs.ecs_fim import fim_to_ecs
            from vigil.outputs.pretty import fim_to_line
            if args.format == "json":
                out.write(json.dumps(fim_to_ecs(ev, host), ensure_ascii=False) + "\n")
            else:
                out.write(fim_to_line(ev) + "\n")
                if ev.diff and ev.diff != "binary":
                    out.write("".join(f"    {line}\n" for line in ev.diff.splitlines()))
        store.publish()
        stats = scanner.stats
        for msg in stats.error_samples:
            print(f"vigil scan: warning: {msg}", file=sys.stderr)
        if stats.errors > len(stats.error_samples):
            print(f"vigil scan: warning: ... and {stats.errors - len(stats.error_samples)} "
                  "more errors", file=sys.stderr)
        reasons = stats.reasons(cfg.scan.max_files)
        if reasons:
            what = "baseline" if args.init else "check"
            print(f"vigil scan: {what} incomplete: {'; '.join(reasons)}", file=sys.stderr)
        took = time.monotonic() - started
        summary = (f"{'baseline' if args.init else 'checked'}: {stats.seen} entries, "
                   f"{stats.hashed_bytes / 1e6:.1f} MB hashed in {took:.2f}s; "
                   f"{'' if args.init else f'{changes} changes; '}{stats.errors} errors"
                   f"{'; INCOMPLETE' if reasons else ''}")
        print(summary, file=sys.stderr if args.format == "json" else out)
        if args.check and changes:
            return EXIT_CHANGED
        if args.check and reasons:
            return EXIT_INCOMPLETE
        return EXIT_OK


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from vigil.config import load_config

    try:
        cfg = load_config(args.config)
        if args.watch:
            cfg = cfg.with_watch_overrides(args.watch)
        return _report(cfg, args, out or sys.stdout)
    except VigilError as e:
        print(f"vigil scan: {e}", file=sys.stderr)
        return EXIT_ERROR


def _standalone() -> int:
    p = argparse.ArgumentParser(prog="vigil scan", description=__doc__.split("\n")[0])
    configure_parser(p)
    return main(p.parse_args())


if __name__ == "__main__":
    sys.exit(_standalone())
