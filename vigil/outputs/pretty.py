"""One readable, optionally coloured line per event, for a person at a terminal (``-o pretty``).

Owns the pretty line: the time of day (vigil.outputs.termtext.Clock, the same for every line
kind), what happened in a column of its own, the object, and who did it::

    13:04:05.123 created            /etc/cron.d/job by root pid 100 (bash) /usr/bin/bash ppid 1
    13:04:05.124 ALERT HIGH         Curl to a pipe: exec curl -o - http://x by root pid 100 ...

and ``fim_to_line``, the file-integrity line ``vigil scan`` reports with (RFC 3339 times: a
report outlives the terminal). Names are shown with non-printable bytes escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from vigil.events.model import (
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileOp,
    NetEvent,
    Process,
    ShellEvent,
)
from vigil.events.security import CredEvent, CredOp, SecEvent
from vigil.fim.model import SCAN_ACTIONS, FimEvent
from vigil.outputs.base import Output, write_all
from vigil.outputs.ecs import iso
from vigil.outputs.termtext import (
    FIM_STYLE,
    LEVEL_STYLE,
    TITLE_STYLE,
    Clock,
    Paint,
    alert_what,
    errname,
    exit_how,
    file_what,
    fim_parts,
    lost_what,
    net_what,
    security_what,
    shown,
    text,
)
from vigil.rules.alert import Alert

__all__ = ["PrettySink", "alert_what", "fim_to_line", "net_what", "security_what", "shown"]

WIDTH = 18   # the "what happened" column, visible characters
_OP_STYLE = {FileOp.DELETE: "red", FileOp.RMDIR: "red", FileOp.CREATE: "green",
             FileOp.MKDIR: "green", FileOp.MODIFY: "yellow", FileOp.RENAME: "magenta"}


class PrettySink:
    """Writes one line per event to ``fd``; ``colour``: styled for a terminal; ``show_exit``:
    False leaves process exits out (half the lines, rarely wanted)."""

    def __init__(self, fd: int, *, colour: bool, show_exit: bool = True) -> None:
        self._fd = fd
        self._paint = Paint(colour)
        self._clock = Clock()
        self._show_exit = show_exit

    def _who(self, p: Process) -> str:
        user = p.user_name or str(p.uid)
        if p.euid != p.uid:
            user += f"(euid {p.euser_name or p.euid})"
        if p.auid not in (p.uid, 0xFFFFFFFF):
            user += f"[login {p.auid}]"
        exe = shown(p.executable) if p.executable else shown(p.comm)
        ctr = f" in container {text(p.container_id[:12])}" if p.container_id else ""
        return self._paint("dim", f"by {text(user)} pid {p.pid} ({shown(p.comm)}) {exe} "
                                  f"ppid {p.ppid}{ctr}")

    def line(self, ev: Output) -> str:
        """The line of one event, without its newline."""
        return f"{self._clock.stamp(ev.timestamp_ns)} {self._body(ev)}"

    def _col(self, style: str, what: str) -> str:
        return self._paint.padded(style, what, WIDTH)

    def _body(self, ev: Output) -> str:
        if isinstance(ev, Alert):
            return self._alert(ev)
        if isinstance(ev, FimEvent):
            action, rest = fim_parts(ev)
            if ev.process is not None:
                rest.append(self._who(ev.process))
            elif ev.action not in SCAN_ACTIONS:
                rest.append(f"by unknown ({ev.source})")
            return f"{self._col(FIM_STYLE.get(ev.action, 'cyan'), 'FIM ' + action)} " \
                   + " ".join(rest)
        if isinstance(ev, FileEvent):
            return f"{self._file_col(ev)} {file_what(ev)} {self._who(ev.process)}"
        if isinstance(ev, ExecEvent):
            args = " ".join(shown(a) for a in ev.process.args or [])
            return f"{self._col('blue', 'exec')} {shown(ev.process.executable)} [{args}] " \
                   f"{self._who(ev.process)}"
        if isinstance(ev, NetEvent):
            return f"{self._col('red' if ev.failed else 'cyan', net_what(ev))} " \
                   f"{self._who(ev.process)}"
        if isinstance(ev, ShellEvent):
            cut = " [cut]" if ev.truncated else ""
            tty = f" on {text(ev.tty)}" if ev.tty_name else ""
            return f"{self._col('yellow', 'shell-command')} {shown(ev.command)}{cut}{tty} " \
                   f"{self._who(ev.process)}"
        if isinstance(ev, (CredEvent, SecEvent)):
            alarming = isinstance(ev, SecEvent) or ev.op is CredOp.ESCALATION
            return f"{self._col('bold red' if alarming else 'magenta', ev.op.action)} " \
                   f"{security_what(ev)} {self._who(ev.process)}"
        if isinstance(ev, ExitEvent):
            return f"{self._col('dim', 'exit')} {exit_how(ev)} {self._who(ev.process)}"
        return f"{self._col('bold red', 'LOST')} {lost_what(ev)}"

    def _file_col(self, ev: FileEvent) -> str:
        if ev.failed:
            return self._col("red", f"FAILED {ev.op.name} {errname(ev.errno)}")
        return self._col(_OP_STYLE.get(ev.op, "cyan"), ev.op.action)

    def _alert(self, a: Alert) -> str:
        """``ALERT HIGH  title: what happened (the matched event's line) [rule]``, in the
        level's colour, bold from high up."""
        style = LEVEL_STYLE.get(a.rule.level, "bold")
        times = f" (x{a.count} more since {self._clock.stamp(a.first_ns)})" if a.repeat else ""
        title = self._paint(TITLE_STYLE.get(a.rule.level, "bold"), text(a.rule.title))
        return (f"{self._col(style, f'ALERT {a.rule.level.upper()}')} {title}{times}: "
                f"{alert_what(a)} {self._paint('dim', f'[{text(a.rule.id or a.rule.where)}]')}")

    def emit(self, events: Sequence[Output]) -> None:
        lines = []
        for ev in events:
            if not self._show_exit and isinstance(ev, ExitEvent):
                continue
            if (day := self._clock.day_line(ev.timestamp_ns)) is not None:
                lines.append(self._paint("dim", day) + "\n")
            lines.append(self.line(ev) + "\n")
        if lines:
            write_all(self._fd, "".join(lines).encode())

    def close(self) -> None:
        pass


def fim_to_line(ev: FimEvent, marker: str = "") -> str:
    """One readable line per file-integrity change, as ``vigil scan`` reports it."""
    action, parts = fim_parts(ev)
    if ev.action not in SCAN_ACTIONS:
        if ev.process is not None:
            p = ev.process
            who = p.user_name or str(p.uid)
            by = f"by {shown(p.executable or p.comm)} pid {p.pid} user {who}"
        else:
            by = f"by unknown ({ev.source})"
        parts.insert(len(parts) - bool(ev.diff == "binary") - bool(ev.diff_unavailable), by)
    return "  ".join([iso(ev.timestamp_ns), f"{marker}{action:<18}", *parts])
