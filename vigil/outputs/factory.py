"""The sinks of a run, from the command line and the configuration.

Owns which sink serves which destination: the terminal (stdout: pretty, compact, ECS or OCSF
JSON lines), ``json_file`` (ECS lines), every ``outputs.file`` (ECS or OCSF lines) and every
``outputs.syslog`` (RFC 5424 through a spool). Opening one that cannot be opened is the
user's error (exit 2), said before any program is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vigil.config import Config
from vigil.kernel.errors import VigilError
from vigil.outputs.base import Sink


@dataclass(frozen=True)
class Terminal:
    """What the terminal shows: ``fmt`` one of pretty, compact, json, ocsf."""

    fmt: str
    fd: int
    colour: bool = False
    show_exit: bool = True
    ancestry: bool = False


def terminal_sink(t: Terminal) -> Sink:
    from vigil.outputs.jsonl import JsonLinesSink

    if t.fmt == "pretty":
        from vigil.outputs.pretty import PrettySink
        return PrettySink(t.fd, colour=t.colour, show_exit=t.show_exit)
    if t.fmt == "compact":
        from vigil.outputs.compact import CompactSink
        return CompactSink(t.fd, colour=t.colour, show_exit=t.show_exit, ancestry=t.ancestry)
    return JsonLinesSink(t.fd, fmt="ocsf" if t.fmt == "ocsf" else "ecs")


def build_sinks(config: Config, terminal: Terminal | None) -> list[Sink]:
    """Every sink of the run, the terminal's LAST: a batch reaches the durable outputs (the
    syslog spools, the files) before a pipe that may block or a reader that may die. Closes
    what it opened on an error."""
    from vigil.outputs.syslog import SyslogSink

    sinks: list[Sink] = []
    try:
        if config.json_file is not None:
            sinks.append(_file(config.json_file, "ecs"))
        for f in config.outputs.file:
            sinks.append(_file(f.path, f.format))
        for s in config.outputs.syslog:
            sinks.append(SyslogSink(s, config.spool_dir(s)))
        if terminal is not None:
            sinks.append(terminal_sink(terminal))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _file(path: os.PathLike[str], fmt: str) -> Sink:
    from vigil.outputs.jsonl import JsonLinesSink

    try:
        return JsonLinesSink.to_file(path, fmt=fmt)   # type: ignore[arg-type]
    except OSError as e:
        raise VigilError(f"cannot open output file {os.fspath(path)}: {e.strerror}") from None
