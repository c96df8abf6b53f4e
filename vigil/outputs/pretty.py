"""One readable, optionally coloured line per event, for a person at a terminal.

Owns the line format. Names are shown with non-printable bytes escaped (a newline in a file name
must not forge a second line).
"""

from __future__ import annotations

import errno as errno_mod
import os
import time
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
from vigil.events.security import CredEvent, CredOp, Creds, SecEvent, SecOp
from vigil.fim.model import SCAN_ACTIONS, FimEvent
from vigil.outputs.base import Output, write_all
from vigil.outputs.ecs import iso
from vigil.outputs.ecs_sec import cap_names
from vigil.rules.alert import Alert

_RESET = "\033[0m"
_COLOURS = {"red": "\033[31m", "green": "\033[32m", "yellow": "\033[33m", "blue": "\033[34m",
            "magenta": "\033[35m", "cyan": "\033[36m", "dim": "\033[2m", "bold": "\033[1m"}
_LEVEL_COLOUR = {"critical": "red", "high": "red", "medium": "yellow", "low": "cyan",
                 "informational": "dim"}
_OP_COLOUR = {FileOp.DELETE: "red", FileOp.RMDIR: "red", FileOp.CREATE: "green",
              FileOp.MKDIR: "green", FileOp.MODIFY: "yellow", FileOp.RENAME: "magenta"}


def shown(b: bytes | None) -> str:
    """Bytes as text with anything non-printable escaped (\\n, \\xff, ...)."""
    if b is None:
        return "?"
    s = b.decode("utf-8", "backslashreplace")
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


class PrettySink:
    def __init__(self, fd: int, *, colour: bool) -> None:
        self._fd = fd
        self._colour = colour

    def _c(self, name: str, s: str) -> str:
        return f"{_COLOURS[name]}{s}{_RESET}" if self._colour else s

    def _who(self, p: Process) -> str:
        user = p.user_name or str(p.uid)
        if p.euid != p.uid:
            user += f"(euid {p.euser_name or p.euid})"
        if p.auid not in (p.uid, 0xFFFFFFFF):
            user += f"[login {p.auid}]"
        exe = shown(p.executable) if p.executable else shown(p.comm)
        return self._c("dim", f"by {user} pid {p.pid} ({shown(p.comm)}) {exe} "
                              f"ppid {p.ppid}")

    def line(self, ev: Output) -> str:
        if isinstance(ev, FimEvent):
            return fim_to_line(ev, marker="FIM ")
        if isinstance(ev, Alert):
            return self._alert(ev)
        if isinstance(ev, FileEvent):
            ts = ev.timestamp_ns
            what = ev.op.action
            colour = _OP_COLOUR.get(ev.op, "cyan")
            if ev.failed:
                what = f"FAILED {ev.op.name.lower()} {errno_mod.errorcode.get(ev.errno, ev.errno)}"
                colour = "red"
            target = f" -> {shown(ev.target_path)}" if ev.target_path is not None else ""
            if ev.flags & 3:  # PATH_TRUNC | PATH2_TRUNC: the kernel knew only part of it
                target += " [path truncated by the kernel]"
            if ev.sysctl is not None and "new" in ev.sysctl:   # a security knob (vigil.sysctl)
                target += f" [{ev.sysctl.get('old', '?')} -> {ev.sysctl['new']}]"
            body = f"{self._c(colour, what.upper() if ev.failed else what):<20} " \
                   f"{shown(ev.path)}{target} {self._who(ev.process)}"
        elif isinstance(ev, ExecEvent):
            ts = ev.timestamp_ns
            args = " ".join(shown(a) for a in ev.process.args or [])
            body = f"{self._c('blue', 'exec'):<20} {shown(ev.process.executable)} " \
                   f"[{args}] {self._who(ev.process)}"
        elif isinstance(ev, NetEvent):
            ts = ev.timestamp_ns
            body = f"{self._c('red' if ev.failed else 'cyan', net_what(ev)):<20} " \
                   f"{self._who(ev.process)}"
        elif isinstance(ev, ShellEvent):
            ts = ev.timestamp_ns
            cut = " [cut]" if ev.truncated else ""
            tty = f" on {ev.tty}" if ev.tty_name else ""
            body = f"{self._c('yellow', 'shell-command'):<20} {shown(ev.command)}{cut}{tty} " \
                   f"{self._who(ev.process)}"
        elif isinstance(ev, (CredEvent, SecEvent)):
            ts = ev.timestamp_ns
            alarming = isinstance(ev, SecEvent) or ev.op is CredOp.ESCALATION
            body = f"{self._c('red' if alarming else 'magenta', ev.op.action):<20} " \
                   f"{security_what(ev)} {self._who(ev.process)}"
        elif isinstance(ev, ExitEvent):
            ts = ev.timestamp_ns
            how = f"signal {ev.signal}" if ev.signal else f"status {ev.status}"
            body = f"{self._c('dim', 'exit'):<20} pid {ev.process.pid} " \
                   f"({shown(ev.process.comm)}) {how}"
        else:
            ts = ev.timestamp_ns
            body = self._c("bold", f"LOST {ev.count} {ev.kind} events")
        clock = time.strftime("%H:%M:%S", time.localtime(ts / 1e9))
        return f"{clock}.{ts // 1_000_000 % 1000:03d} {body}"

    def _alert(self, a: Alert) -> str:
        """``ALERT HIGH  title  what happened (the matched event's one line)  [rule]``."""
        level = self._c("bold", self._c(_LEVEL_COLOUR.get(a.rule.level, "bold"),
                                        f"ALERT {a.rule.level.upper():<8}"))
        times = f" (x{a.count} more since {iso(a.first_ns)[11:19]})" if a.repeat else ""
        ts = a.timestamp_ns
        clock = time.strftime("%H:%M:%S", time.localtime(ts / 1e9))
        return (f"{clock}.{ts // 1_000_000 % 1000:03d} {level} {self._c('bold', a.rule.title)}"
                f"{times}: {alert_what(a)} [{a.rule.id or a.rule.where}]")

    def emit(self, events: Sequence[Output]) -> None:
        if events:
            write_all(self._fd, "".join(self.line(ev) + "\n" for ev in events).encode())

    def close(self) -> None:
        pass


def _endpoint(ip: str | None, port: int) -> str:
    if ip is None:
        return "?"
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _ids(c: Creds) -> str:
    return f"uid={c.uid} euid={c.euid} gid={c.gid} egid={c.egid}"


def security_what(ev: CredEvent | SecEvent) -> str:
    """A privilege change as before -> after; a tampering event's object."""
    if isinstance(ev, CredEvent):
        prog = f" via {shown(ev.path)}" if ev.path is not None else ""
        caps = ""
        if not ev.inferred and ev.old.cap_effective != ev.new.cap_effective:
            gained = cap_names(ev.new.cap_effective & ~ev.old.cap_effective)
            lost = cap_names(ev.old.cap_effective & ~ev.new.cap_effective)
            caps = " [" + " ".join([*(f"+{c}" for c in gained[:4]), *(
                f"-{c}" for c in lost[:4])]) + (" ..." if len(gained) + len(lost) > 8 else "") \
                + "]"
        return f"{_ids(ev.old)} -> {_ids(ev.new)}{caps}{prog}"
    parts = []
    if ev.name:
        parts.append(shown(ev.name))
    if ev.path is not None:
        parts.append(shown(ev.path))
    if ev.path2 is not None:
        parts.append(f"({shown(ev.path2)})")
    if ev.target is not None:
        exe = shown(ev.target.executable or ev.target.comm or b"?")
        parts.append(f"target pid {ev.target.pid} {exe}")
    if ev.op is SecOp.SIGNAL:
        parts.append(f"signal {ev.arg1}")
    if ev.failed:
        parts.append(f"FAILED {errno_mod.errorcode.get(ev.errno, ev.errno)}")
    return " ".join(parts)


def net_what(ev: NetEvent) -> str:
    """``connect tcp 10.0.0.1:41000 -> 198.51.100.2:443 ECONNREFUSED``."""
    if ev.path is not None:
        where = f"unix {shown(ev.path)}"
    else:
        proto = {6: "tcp", 17: "udp"}.get(ev.protocol, str(ev.protocol))
        where = f"{proto} {_endpoint(ev.local_ip, ev.local_port)}"
        if ev.op.egress is not None:
            arrow = "->" if ev.op.egress else "<-"
            where += f" {arrow} {_endpoint(ev.remote_ip, ev.remote_port)}"
    failed = f" {errno_mod.errorcode.get(ev.errno, ev.errno)}" if ev.failed else ""
    return f"{ev.op.action} {where}{failed}"


def alert_what(a: Alert) -> str:
    """The one line of what an alert is about: the matched event's, or a correlation's group
    and count when a window closed with no event."""
    if not a.event and a.group:
        return f"{a.count} events of " + ", ".join(f"{k}={v}" for k, v in a.group.items())
    return _what(a.event)


def _what(doc: dict[str, object]) -> str:
    """The one line of what a matched ECS event says happened, and by whom."""
    def get(*path: str) -> object:
        cur: object = doc
        for p in path:
            cur = cur.get(p) if isinstance(cur, dict) else None
        return cur

    action = get("event", "action") or "?"
    if get("event", "dataset") == "vigil.process":
        target = get("process", "command_line") or get("process", "executable")
    elif get("event", "dataset") == "vigil.shell":
        target = get("vigil", "shell", "command")
    elif get("event", "dataset") == "vigil.network":
        target = get("destination", "address") or get("source", "address")
        if (port := get("destination", "port") or get("source", "port")) is not None:
            target = f"{target} port {port}"
    else:
        target = get("file", "path")
        if (old := get("vigil", "file", "original_path")) is not None:
            target = f"{old} -> {target}"
    who = get("user", "name") or get("user", "id")
    exe = get("process", "executable") or get("process", "name")
    return shown(f"{action} {target} by {who} pid {get('process', 'pid')} {exe}".encode())


def fim_to_line(ev: FimEvent, marker: str = "") -> str:
    """One readable line per file-integrity change (also ``vigil scan``'s text report); the live
    output marks it apart from the raw kernel events with ``marker``."""
    if ev.action in SCAN_ACTIONS:
        return _scan_line(ev, marker)
    parts = [iso(ev.timestamp_ns), f"{marker}{ev.action:<18}", shown(ev.path)]
    if ev.old_path is not None:
        parts.append(f"(from {shown(ev.old_path)})")
    if ev.changed_attributes:
        parts.append("[" + ", ".join(ev.changed_attributes) + "]")
    if ev.process is not None:
        p = ev.process
        who = p.user_name or str(p.uid)
        parts.append(f"by {shown(p.executable or p.comm)} pid {p.pid} user {who}")
    else:
        parts.append(f"by unknown ({ev.source})")
    if ev.diff == "binary":
        parts.append("(binary content changed)")
    if ev.diff_unavailable:
        parts.append(f"(no diff: {ev.diff_unavailable})")
    return "  ".join(parts)


def _scan_line(ev: FimEvent, marker: str) -> str:
    """baseline-established / scan-incomplete / scan-failed: what the scan did, not a file."""
    sc = ev.scan or {}
    parts = [iso(ev.timestamp_ns), f"{marker}{ev.action:<18}"]
    if ev.action == "baseline-established":
        parts += [shown(ev.path), f"[{sc.get('files', '?')} files in "
                                  f"{sc.get('duration_s', 0):.1f}s, recorded silently]"]
    else:
        parts.append(str(sc.get("reason", "?")))
        if sc.get("roots"):
            parts.append("(" + ", ".join(shown(os.fsencode(r)) for r in sc["roots"]) + ")")
    parts.append(f"({ev.source})")
    return "  ".join(parts)
