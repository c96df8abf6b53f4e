"""The ``vigil`` command: parses arguments, builds the pipeline, nothing else.

Every error a user can cause ends here as one sentence on stderr and exit code 2; events go to
stdout (or a file), diagnostics to stderr, never mixed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from vigil.kernel.backend import EVENT_BUFFERS
from vigil.kernel.errors import VerifierError, VigilError
from vigil.kernel.hooks import BACKENDS

if TYPE_CHECKING:
    from vigil.config import Config
    from vigil.kernel.choose import EarlyStart
    from vigil.rules.detector import Detector
    from vigil.rules.ruleset import RuleSet

log = logging.getLogger("vigil")


def _with_args(config: Config, args: argparse.Namespace) -> Config:
    """The command line's overrides applied to a configuration (at start and at each reload)."""
    if args.watch:
        config = config.with_watch_overrides(args.watch)
    if args.no_exec:
        config = replace(config, exec_events=False)
    if args.no_network:
        config = replace(config, network=replace(config.network, enabled=False))
    if args.no_shell:
        config = replace(config, shell=replace(config.shell, enabled=False))
    if args.db:
        config = replace(config, database=args.db)
    if args.no_metrics:
        config = replace(config, metrics=replace(config.metrics, enabled=False))
    return config


def _run(args: argparse.Namespace) -> int:
    from vigil.config import load_config
    from vigil.kernel.btf_source import resolve_btf
    from vigil.kernel.choose import EarlyStart, settings_for

    config = _with_args(load_config(args.config), args)
    fmt = args.output or config.output
    if fmt == "auto":
        fmt = "pretty" if sys.stdout.isatty() else "json"
    # The BTF libbpf relocates against: --btf/VIGIL_BTF, the kernel's own, a vmlinux file, or
    # the shipped tailored BTF (vigil.kernel.btf_source). Only "kernel" allows BTF-based hooks.
    # Said always (like the backend line): it explains why the LSM and fentry backends are
    # skipped, and the kernel matrix's tailored-BTF cells check it.
    btf = resolve_btf(args.btf)
    if btf.kind != "kernel":
        print(f"vigil: using {btf.describe()}", file=sys.stderr, flush=True)
    # The kernel side starts now, on a thread (its verifier runs without Python's lock) while
    # the rest is imported and built; without root, Agent.run says why it cannot start.
    early = EarlyStart(settings_for(config, btf.custom_path, args.event_buffer), args.backend) \
        if os.geteuid() == 0 else None
    try:
        return _run_agent(args, config, fmt, btf.custom_path, early)
    finally:
        if early is not None:
            early.cancel()   # a backend the agent never took (an error on the way) is closed


def _run_agent(args: argparse.Namespace, config: Config, fmt: str, btf_path: str | None,
               early: EarlyStart | None) -> int:
    from vigil.agent import Agent
    from vigil.losses import RunSummary
    from vigil.outputs.factory import Terminal, build_sinks

    detector, reload = _detection(args, config)
    sinks = build_sinks(config, Terminal(fmt, sys.stdout.fileno(), colour=sys.stdout.isatty(),
                                         show_exit=not args.no_exit, ancestry=args.ancestry))
    agent = Agent(config, sinks, btf_path=btf_path, fim=not args.no_fim,
                  backend=args.backend, event_buffer=args.event_buffer, detector=detector,
                  reload=reload, early=early)
    metrics = None
    if config.metrics.enabled:
        from vigil.metrics import Metrics
        from vigil.metrics_agent import snapshot_of

        metrics = Metrics(config.metrics, snapshot_of(agent))
        try:
            metrics.start()
        except VigilError as err:   # the agent's job is detection: it goes on without
            print(f"vigil: {err}; no Prometheus endpoint this run", file=sys.stderr,
                  flush=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        agent.request_reload()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    def stopped(summary: RunSummary) -> None:
        for sink in sinks:
            sink.close()
        print(summary.line(), file=sys.stderr, flush=True)

    try:
        agent.run(args.duration, on_stop=stopped)
    finally:
        for sink in sinks:
            sink.close()
        if metrics is not None:
            metrics.close()
    return 0


def _detection(args: argparse.Namespace, config: Config) -> tuple[
        Detector | None, Callable[[], tuple[Config, RuleSet | None]]]:
    """The rule set of ``config`` and ``--rules``, said on stderr (refusals one by one), the
    detector running it, and how SIGHUP rebuilds both (the configuration file read again)."""
    from vigil.config import load_config
    from vigil.rules.detector import Detector
    from vigil.rules.ruleset import build_ruleset

    def ruleset_of(cfg: Config) -> RuleSet:
        rules = replace(cfg.rules, enabled=cfg.rules.enabled and not args.no_rules)
        # the loaded rule files cached in the state directory (keyed by their bytes)
        return build_ruleset(rules, args.rules or (), cache_dir=cfg.state_dir / "cache")

    on = not args.no_rules and config.rules.enabled

    def reload() -> tuple[Config, RuleSet | None]:
        cfg = _with_args(load_config(args.config), args)
        return cfg, (ruleset_of(cfg) if on else None)

    if not on:
        return None, reload
    ruleset = ruleset_of(config)
    for e in ruleset.refused:
        print(f"vigil: rule refused: {e}", file=sys.stderr)
    for name in ruleset.unknown_disabled:
        print(f"vigil: rules.disabled names no loaded rule: {name!r}", file=sys.stderr)
    print(f"vigil: {ruleset.describe() if ruleset.rules else 'no detection rules loaded'}",
          file=sys.stderr, flush=True)
    return Detector(ruleset, config.rules.suppress_window), reload


def _doctor(args: argparse.Namespace) -> int:
    from vigil.config import load_config
    from vigil.doctor import collect, render

    config = load_config(args.config)
    report = collect(config)
    live = None
    if args.live and report.can_run:
        from vigil.doctor_live import live_check

        live = live_check(config)
    if args.json:
        d = report.to_dict()
        if args.live:
            d["health_check"] = None if live is None else {
                "ok": live.ok, "latency_seconds": live.latency, "missing": list(live.missing),
                "error": live.error}
        print(json.dumps(d, indent=2))
    else:
        print(render(report))
        if args.live:
            print("\nLive health check\n  " + (live.describe() if live is not None else
                                                "no verdict: the agent stopped first"))
    if args.live and (live is None or not live.ok):
        return 1
    return 0 if report.can_run else 1


def _scan(args: argparse.Namespace) -> int:
    from vigil.fim import oneshot

    return oneshot.main(args)


def _config_check(args: argparse.Namespace) -> int:
    from vigil.config import check_config_main

    return check_config_main(args.file)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vigil", description="Who changed what, live: "
                                "file changes, execs and their who-data, from eBPF.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more diagnostics")
    sub = p.add_subparsers(dest="command", required=True)

    # -v works before or after the subcommand (SUPPRESS: the subcommand must not reset it)
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                         help="more diagnostics")

    run = sub.add_parser("run", help="stream live events", parents=[verbose])
    run.add_argument("--config", type=Path, metavar="FILE", help="configuration (YAML)")
    run.add_argument("--watch", type=Path, action="append", metavar="DIR",
                     help="watch DIR (recursively) instead of the configured directories")
    run.add_argument("-o", "--output", choices=("pretty", "compact", "json", "ocsf"),
                     help="the terminal's format: pretty lines (default on a terminal), "
                     "compact lines, ECS JSON lines (default otherwise) or OCSF JSON lines")
    run.add_argument("--no-exit", action="store_true",
                     help="pretty/compact: do not show process exits (they are still sent to "
                     "the other outputs and seen by the rules)")
    run.add_argument("--ancestry", action="store_true",
                     help="compact: show each process's ancestry (parent < grandparent ...)")
    run.add_argument("--no-metrics", action="store_true",
                     help="no Prometheus endpoint (the configuration's metrics section off)")
    run.add_argument("--duration", type=float, metavar="SECONDS",
                     help="stop cleanly after this many seconds")
    run.add_argument("--no-exec", action="store_true", help="do not report execs and exits")
    run.add_argument("--no-network", action="store_true",
                     help="no network events (the configuration's network section off)")
    run.add_argument("--no-shell", action="store_true",
                     help="no shell commands (the configuration's shell section off)")
    run.add_argument("--no-fim", action="store_true",
                     help="raw file events only: no baseline, hashes or diffs")
    run.add_argument("--db", type=Path, metavar="PATH",
                     help="baseline database (default: the configuration's `database`)")
    run.add_argument("--btf", metavar="FILE", help="kernel BTF to use instead of the running "
                     "kernel's (default: $VIGIL_BTF, the kernel's, a vmlinux file, or the "
                     "shipped tailored BTF)")
    run.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                     help="kernel hooks to use (default: the best that works here; see "
                     "`vigil doctor`)")
    run.add_argument("--event-buffer", choices=EVENT_BUFFERS, default="auto",
                     help="how events reach the agent: the BPF ring buffer or per-CPU perf "
                     "buffers (default: the ring where the kernel has it, Linux 5.8+)")
    run.add_argument("--rules", type=Path, action="append", metavar="PATH",
                     help="also evaluate the Sigma rules in this file or directory "
                     "(repeatable; beside the configuration's `rules:`)")
    run.add_argument("--no-rules", action="store_true",
                     help="no detection rules: events only")
    run.set_defaults(func=_run)

    doctor = sub.add_parser("doctor", help="what this kernel supports and what Vigil will use",
                            parents=[verbose])
    doctor.add_argument("--json", action="store_true", help="machine-readable report")
    doctor.add_argument("--live", action="store_true",
                        help="also run the end-to-end health check now: load the programs, "
                        "change a file in the health directory, wait for the four events")
    doctor.add_argument("--config", type=Path, metavar="FILE",
                        help="configuration whose watch list to show (default: embedded)")
    doctor.set_defaults(func=_doctor)

    from vigil.fim import oneshot

    scan = sub.add_parser("scan", help="one-shot baseline (--init) or check (--check)",
                          parents=[verbose])
    oneshot.configure_parser(scan)
    scan.set_defaults(func=_scan)

    from vigil.btfhub import cli as btf_cli

    btf = sub.add_parser("btf", help="BTF tools: fetch, extract, gen, check, which")
    btf_cli.configure_parser(btf, verbose)

    from vigil.rules import cli as rules_cli

    rules = sub.add_parser("rules", help="Sigma detection rules: check, list, test",
                           parents=[verbose])
    rules_cli.configure_parser(rules)

    from vigil import service

    service.add_service_parser(sub)

    config = sub.add_parser("config", help="configuration tools")
    csub = config.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_config_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else
        logging.WARNING,
        format="vigil: %(message)s", stream=sys.stderr)
    try:
        rc: int = args.func(args)
        return rc
    except VerifierError as e:
        print(f"vigil: {e}", file=sys.stderr)
        if args.verbose:
            print(e.log, file=sys.stderr)
        else:
            print("vigil: run with -v for the full verifier log", file=sys.stderr)
        return e.exit_code
    except VigilError as e:
        print(f"vigil: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
