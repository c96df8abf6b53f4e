"""One short line per event, for a person watching a busy host (``-o compact``).

Owns the compact line: time of day (the clock every terminal line shows), a one-character kind,
who (``user/comm[pid]``), what (path, command, peer), and on demand the process's ancestors::

    13:04:05.123 + root/bash[1200] /etc/cron.d/job
    13:04:05.130 E alice/curl[1250] /usr/bin/curl -s http://198.51.100.2/  < bash[1200] < sshd[990]
    13:04:05.140 N alice/curl[1250] connect tcp -> 198.51.100.2:443
    13:04:05.150 ! HIGH Curl to a pipe: alice/curl[1250] curl -s http://198.51.100.2/

Kinds: file ``+`` created, ``~`` modified, ``-`` deleted, ``>`` renamed, ``*`` attributes
changed, ``?`` a failed attempt; ``E`` exec, ``X`` exit, ``N`` network, ``$`` shell command,
``P`` privilege change, ``T`` tampering, ``I`` file integrity (FIM), ``!`` alert, ``L`` lost
events. Names are shown with non-printable bytes escaped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from vigil.events.model import (
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileOp,
    LostEvents,
    NetEvent,
    Process,
    ShellEvent,
)
from vigil.events.security import CredEvent, CredOp
from vigil.fim.model import SCAN_ACTIONS, FimEvent
from vigil.outputs.ancestry import Lineage
from vigil.outputs.base import Output, write_all
from vigil.outputs.termtext import (
    FIM_STYLE,
    LEVEL_STYLE,
    TITLE_STYLE,
    Clock,
    Paint,
    alert_target,
    doc_get,
    endpoint,
    errname,
    exit_how,
    file_what,
    fim_parts,
    lost_what,
    security_what,
    shown,
    text,
)
from vigil.rules.alert import Alert

# (symbol, style); the action word is said only where the symbol does not say it all
_FILE_KIND = {FileOp.CREATE: "+", FileOp.MKDIR: "+", FileOp.LINK: "+", FileOp.SYMLINK: "+",
              FileOp.MKNOD: "+", FileOp.MODIFY: "~", FileOp.TRUNCATE: "~", FileOp.DELETE: "-",
              FileOp.RMDIR: "-", FileOp.RENAME: ">", FileOp.CHMOD: "*", FileOp.CHOWN: "*",
              FileOp.SETXATTR: "*", FileOp.REMOVEXATTR: "*", FileOp.OPEN: "?"}
_FILE_STYLE = {"+": "green", "~": "yellow", "-": "red", ">": "magenta", "*": "cyan", "?": "red"}
_PLAIN = frozenset({FileOp.CREATE, FileOp.MODIFY, FileOp.DELETE, FileOp.RENAME})
_CRED_IDS = ("uid", "euid", "gid", "egid")


class CompactSink:
    """Writes one short line per event to ``fd``. ``colour``: styled for a terminal;
    ``show_exit``: False leaves process exits out; ``ancestry``: each line with a process ends
    with its ancestors (``< bash[1200] < sshd[990] < systemd[1]``), from the events seen and
    /proc (``lineage``: one to share, or a new one)."""

    def __init__(self, fd: int, *, colour: bool, show_exit: bool = True,
                 ancestry: bool = False, lineage: Lineage | None = None) -> None:
        self._fd = fd
        self._paint = Paint(colour)
        self._clock = Clock()
        self._show_exit = show_exit
        self._lineage = (lineage or Lineage()) if ancestry else None

    def line(self, ev: Output) -> str:
        """The line of one event, without its newline."""
        sym, style, who, what, proc = self._parts(ev)
        tail = ""
        if self._lineage is not None and proc is not None:
            chain = self._lineage.ancestors(proc)
            if chain:
                tail = "  " + self._paint("dim", " ".join(
                    "< ..." if pid == 0 else f"< {shown(name)}[{pid}]" for pid, name in chain))
        who = f"{who} " if who else ""
        return f"{self._clock.stamp(ev.timestamp_ns)} {self._paint(style, sym)} {who}{what}{tail}"

    def _who(self, p: Process) -> str:
        user = p.user_name or str(p.uid)
        if p.euid != p.uid:
            user += f"({p.euser_name or p.euid})"
        ctr = f"@{p.container_id[:12]}" if p.container_id else ""
        return text(f"{user}/") + f"{shown(p.comm)}[{p.pid}]" + text(ctr)

    def _parts(self, ev: Output) -> tuple[str, str, str, str, Process | None]:
        """symbol, its style, who, what, and the process whose ancestors to show."""
        if isinstance(ev, Alert):
            return self._alert(ev)
        if isinstance(ev, FimEvent):
            action, rest = fim_parts(ev)
            who = self._who(ev.process) if ev.process is not None else \
                ("" if ev.action in SCAN_ACTIONS else f"({ev.source})")
            style = FIM_STYLE.get(ev.action, "cyan")
            return "I", style, who, self._paint(style, action) + " " + " ".join(rest), ev.process
        if isinstance(ev, FileEvent):
            return self._file(ev)
        if isinstance(ev, LostEvents):
            return "L", "bold red", "", self._paint("bold red", "lost " + lost_what(ev)), None
        p = ev.process
        if isinstance(ev, ExecEvent):
            args = ev.process.args or []
            what = " ".join(shown(a) for a in [ev.process.executable or (args or [b"?"])[0],
                                               *args[1:]])
            return "E", "blue", self._who(ev.process), what, p
        if isinstance(ev, ExitEvent):
            return "X", "dim", self._who(ev.process), exit_how(ev), p
        if isinstance(ev, NetEvent):
            return "N", "red" if ev.failed else "cyan", self._who(ev.process), net_short(ev), p
        if isinstance(ev, ShellEvent):
            what = shown(ev.command) + (" [cut]" if ev.truncated else "")
            return "$", "yellow", self._who(ev.process), what, p
        if isinstance(ev, CredEvent):
            bad = ev.op is CredOp.ESCALATION
            return "P", "bold red" if bad else "magenta", self._who(ev.process), \
                f"{ev.op.action} {cred_short(ev)}", p
        return "T", "bold red", self._who(ev.process), \
            f"{ev.op.action} {security_what(ev)}".rstrip(), p

    def _file(self, ev: FileEvent) -> tuple[str, str, str, str, Process | None]:
        sym = "?" if ev.failed else _FILE_KIND.get(ev.op, "*")
        what = file_what(ev)
        if ev.failed:
            what = f"{ev.op.name.lower()} {what} {errname(ev.errno)}"
        elif ev.op not in _PLAIN:
            what = f"{ev.op.action} {what}"
        return sym, _FILE_STYLE[sym], self._who(ev.process), what, ev.process

    def _alert(self, a: Alert) -> tuple[str, str, str, str, Process | None]:
        """``! HIGH title: user/comm[pid] what`` in the level's colour."""
        style = LEVEL_STYLE.get(a.rule.level, "bold")
        head = self._paint(style, a.rule.level.upper()) + " " + self._paint(
            TITLE_STYLE.get(a.rule.level, "bold"), text(a.rule.title))
        times = f" (x{a.count} more)" if a.repeat else ""
        if not a.event and a.group:
            return "!", style, "", f"{head}{times}: " + text(
                f"{a.count} events of " + ", ".join(f"{k}={v}" for k, v in a.group.items())), None
        d = a.event
        user = doc_get(d, "user", "name") or doc_get(d, "user", "id")
        who = text(f"{user}/{doc_get(d, 'process', 'name')}[{doc_get(d, 'process', 'pid')}]")
        return "!", style, "", f"{head}{times}: {who} {text(str(alert_target(d)))}", \
            _alert_process(d)

    def emit(self, events: Sequence[Output]) -> None:
        lines = []
        for ev in events:
            if self._lineage is not None:
                proc = getattr(ev, "process", None)
                if isinstance(proc, Process):
                    self._lineage.learn(proc)
            if not self._show_exit and isinstance(ev, ExitEvent):
                continue
            if (day := self._clock.day_line(ev.timestamp_ns)) is not None:
                lines.append(self._paint("dim", day) + "\n")
            lines.append(self.line(ev) + "\n")
        if lines:
            write_all(self._fd, "".join(lines).encode())

    def close(self) -> None:
        pass


def net_short(ev: NetEvent) -> str:
    """``connect tcp -> 198.51.100.2:443``: the peer (the local address when none)."""
    if ev.path is not None:
        where = f"unix {shown(ev.path)}"
    else:
        proto = {6: "tcp", 17: "udp"}.get(ev.protocol, str(ev.protocol))
        if ev.op.egress is None:
            where = f"{proto} {endpoint(ev.local_ip, ev.local_port)}"
        else:
            where = f"{proto} {'->' if ev.op.egress else '<-'} " \
                    f"{endpoint(ev.remote_ip, ev.remote_port)}"
    return f"{ev.op.action} {where}" + (f" {errname(ev.errno)}" if ev.failed else "")


def cred_short(ev: CredEvent) -> str:
    """The ids that changed (``uid 1000->0 euid 1000->0``), capabilities when only they did,
    and the setuid program."""
    ids = " ".join(f"{n} {getattr(ev.old, n)}->{getattr(ev.new, n)}" for n in _CRED_IDS
                   if getattr(ev.old, n) != getattr(ev.new, n))
    if not ids:
        ids = "capabilities" if ev.old.cap_effective != ev.new.cap_effective else "no change"
    return ids + (f" via {shown(ev.path)}" if ev.path is not None else "")


def _alert_process(doc: dict[str, object]) -> Process | None:
    """A stand-in Process for the matched event's (pid, start and parent's, from the ECS
    entity ids), enough to look its ancestors up."""
    try:
        pid, start = (int(x) for x in str(doc_get(doc, "process", "entity_id")).split("-"))
        ppid, pstart = (int(x) for x in str(
            doc_get(doc, "process", "parent", "entity_id")).split("-"))
    except ValueError:
        return None
    parent_exe = doc_get(doc, "process", "parent", "executable")
    return Process(pid=pid, tid=pid, ppid=ppid, start_time=start, parent_start_time=pstart,
                   uid=0, gid=0, euid=0, egid=0, auid=0, session_id=0, comm=b"", cgroup_id=0,
                   mnt_ns=0, parent_executable=os.fsencode(parent_exe)
                   if isinstance(parent_exe, str) else None)

