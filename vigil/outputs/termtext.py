"""What the terminal views share (vigil.outputs.pretty, vigil.outputs.compact): colours, the
escaping of names, the one clock every line kind shows, and the words that say what an event
(file, file integrity, network, privilege, tampering, exit, loss) or an alert is about.

Names are shown with non-printable bytes escaped: a newline in a file name must not forge a
second line, an escape sequence in a command line must not repaint the terminal.
"""

from __future__ import annotations

import errno as errno_mod
import os
import time

from vigil.events.model import ExitEvent, FileEvent, LostEvents, NetEvent
from vigil.events.security import CredEvent, Creds, SecEvent, SecOp
from vigil.fim.model import SCAN_ACTIONS, FimEvent
from vigil.outputs.ecs_sec import cap_names
from vigil.rules.alert import Alert

# SGR codes; a style is space-separated names ("bold red", "bold white on_red")
_SGR = {"bold": "1", "dim": "2", "reverse": "7", "red": "31", "green": "32", "yellow": "33",
        "blue": "34", "magenta": "35", "cyan": "36", "white": "37", "on_red": "41"}
_RESET = "\033[0m"

LEVEL_STYLE = {"critical": "bold white on_red", "high": "bold red", "medium": "yellow",
               "low": "cyan", "informational": "dim"}
FIM_STYLE = {"added": "green", "deleted": "red", "modified": "yellow", "renamed": "magenta",
             "attributes-changed": "cyan", "scan-failed": "red", "scan-incomplete": "yellow",
             "baseline-established": "dim"}
TITLE_STYLE = {"critical": "bold white on_red", "high": "bold red", "medium": "bold yellow",
               "low": "bold cyan", "informational": "dim"}


class Paint:
    """Styles text when ``on`` (the terminal is a terminal), else returns it unchanged."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self._codes: dict[str, str] = {}

    def __call__(self, style: str, s: str) -> str:
        if not self.on or not style:
            return s
        code = self._codes.get(style)
        if code is None:
            code = self._codes[style] = "\033[" + ";".join(_SGR[n] for n in style.split()) + "m"
        return f"{code}{s}{_RESET}"

    def padded(self, style: str, s: str, width: int) -> str:
        """``s`` left-aligned in ``width`` columns, styled: the padding counts the visible text
        only, so columns line up alike with and without colour."""
        return self(style, s) + " " * max(0, width - len(s))


def shown(b: bytes | None) -> str:
    """Bytes as text with anything non-printable escaped (\\n, \\x1b, \\xff, ...)."""
    if b is None:
        return "?"
    return text(b.decode("utf-8", "backslashreplace"))


def text(s: str) -> str:
    """A string (from an ECS document, a rule) with anything non-printable escaped."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def errname(errno: int) -> str:
    return errno_mod.errorcode.get(errno, str(errno))


class Clock:
    """The one time format of every line: local time of day, ``HH:MM:SS.mmm``. The date (and
    the zone the times are in) is a line of its own, written before the first event of each day
    (``day_line``), so that the time of day never needs it."""

    def __init__(self) -> None:
        self._sec = -1
        self._hms = ""
        self._day: tuple[int, int] = (0, 0)

    def stamp(self, ns: int) -> str:
        sec, frac = divmod(ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._hms = time.strftime("%H:%M:%S", time.localtime(sec))
        return f"{self._hms}.{frac // 1_000_000:03d}"

    def day_line(self, ns: int) -> str | None:
        """``-- Monday 2026-12-07 (times are UTC+01:00) --`` when ``ns`` falls on a later local
        day than any line before it, else None."""
        t = time.localtime(ns // 1_000_000_000)
        day = (t.tm_year, t.tm_yday)
        if day <= self._day:
            return None
        self._day = day
        z = time.strftime("%z", t)
        return f"-- {time.strftime('%A %Y-%m-%d', t)} (times are UTC{z[:3]}:{z[3:]}) --"


def endpoint(ip: str | None, port: int) -> str:
    if ip is None:
        return "?"
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def net_what(ev: NetEvent) -> str:
    """``connect tcp 10.0.0.1:41000 -> 198.51.100.2:443 ECONNREFUSED``."""
    if ev.path is not None:
        where = f"unix {shown(ev.path)}"
    else:
        proto = {6: "tcp", 17: "udp"}.get(ev.protocol, str(ev.protocol))
        where = f"{proto} {endpoint(ev.local_ip, ev.local_port)}"
        if ev.op.egress is not None:
            arrow = "->" if ev.op.egress else "<-"
            where += f" {arrow} {endpoint(ev.remote_ip, ev.remote_port)}"
    failed = f" {errname(ev.errno)}" if ev.failed else ""
    return f"{ev.op.action} {where}{failed}"


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
        parts.append(f"FAILED {errname(ev.errno)}")
    return " ".join(parts)


def alert_what(a: Alert) -> str:
    """The one line of what an alert is about: the matched event's, or a correlation's group
    and count when a window closed with no event."""
    if not a.event and a.group:
        return text(f"{a.count} events of " + ", ".join(f"{k}={v}" for k, v in a.group.items()))
    return _what(a.event)


def doc_get(doc: dict[str, object], *path: str) -> object:
    """A field of an ECS document by its dotted path's parts; None when absent."""
    cur: object = doc
    for p in path:
        cur = cur.get(p) if isinstance(cur, dict) else None
    return cur


def alert_target(doc: dict[str, object]) -> object:
    """What the matched event acted on: the command line, typed line, peer or file."""
    dataset = doc_get(doc, "event", "dataset")
    if dataset == "vigil.process":
        return doc_get(doc, "process", "command_line") or doc_get(doc, "process", "executable")
    if dataset == "vigil.shell":
        return doc_get(doc, "vigil", "shell", "command")
    if dataset == "vigil.network":
        target = doc_get(doc, "destination", "address") or doc_get(doc, "source", "address")
        port = doc_get(doc, "destination", "port") or doc_get(doc, "source", "port")
        return target if port is None else f"{target} port {port}"
    target = doc_get(doc, "file", "path")
    if (old := doc_get(doc, "vigil", "file", "original_path")) is not None:
        return f"{old} -> {target}"
    return target


def _what(doc: dict[str, object]) -> str:
    """The one line of what a matched ECS event says happened, and by whom."""
    action = doc_get(doc, "event", "action") or "?"
    who = doc_get(doc, "user", "name") or doc_get(doc, "user", "id")
    exe = doc_get(doc, "process", "executable") or doc_get(doc, "process", "name")
    return text(f"{action} {alert_target(doc)} by {who} pid {doc_get(doc, 'process', 'pid')} "
                f"{exe}")


def file_what(ev: FileEvent) -> str:
    """A file event's object: the path, a rename's or link's new name, what Vigil knows more."""
    what = shown(ev.path)
    if ev.target_path is not None:
        what += f" -> {shown(ev.target_path)}"
    if ev.flags & 3:  # PATH_TRUNC | PATH2_TRUNC: the kernel knew only part of it
        what += " [path truncated by the kernel]"
    if ev.sysctl is not None and "new" in ev.sysctl:   # a security knob (vigil.sysctl)
        what += text(f" [{ev.sysctl.get('old', '?')} -> {ev.sysctl['new']}]")
    if ev.protected == "self":
        what += " [Vigil's own file]"
    return what


def exit_how(ev: ExitEvent) -> str:
    return f"signal {ev.signal}" if ev.signal else f"status {ev.status}"


def lost_what(ev: LostEvents) -> str:
    extra = " (" + ", ".join(f"{k} {v}" for k, v in ev.extra.items()) + ")" if ev.extra else ""
    return text(f"{ev.count} {ev.kind} events{extra}")


def fim_parts(ev: FimEvent) -> tuple[str, list[str]]:
    """A file-integrity change as its action and what follows it, who-data left out."""
    if ev.action in SCAN_ACTIONS:
        return ev.action, _scan_parts(ev)
    parts = [shown(ev.path)]
    if ev.old_path is not None:
        parts.append(f"(from {shown(ev.old_path)})")
    if ev.changed_attributes:
        parts.append("[" + ", ".join(ev.changed_attributes) + "]")
    if ev.diff == "binary":
        parts.append("(binary content changed)")
    if ev.diff_unavailable:
        parts.append(f"(no diff: {ev.diff_unavailable})")
    return ev.action, parts


def _scan_parts(ev: FimEvent) -> list[str]:
    """baseline-established / scan-incomplete / scan-failed: what the scan did, not a file."""
    sc = ev.scan or {}
    if ev.action == "baseline-established":
        parts = [shown(ev.path), f"[{sc.get('files', '?')} files in "
                                 f"{sc.get('duration_s', 0):.1f}s, recorded silently]"]
    else:
        parts = [text(str(sc.get("reason", "?")))]
        if sc.get("roots"):
            parts.append("(" + ", ".join(shown(os.fsencode(r)) for r in sc["roots"]) + ")")
    parts.append(f"({ev.source})")
    return parts

