"""Typed events: what the rest of Vigil sees once raw kernel records are decoded.

Owns the event classes and their vocabulary (kinds, file operations). Does not own the binary
layout (see ``vigil.events.layout``) nor any output format (see ``vigil.outputs``).

Paths are ``bytes``: Linux file names are bytes, and a monitor that decodes them early loses the
names an attacker is most likely to use (invalid UTF-8, newlines). Outputs decide how to render.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vigil.enrich.containers import ContainerInfo

SCHEMA_VERSION = 1


class FileOp(enum.IntEnum):
    """File operations; values are shared with the BPF side (bpf/vigil_events.h)."""

    CREATE = 1
    MODIFY = 2  # closed after being opened for writing (inotify's IN_CLOSE_WRITE)
    DELETE = 3
    RMDIR = 4
    RENAME = 5
    CHMOD = 6
    CHOWN = 7
    TRUNCATE = 8
    LINK = 9
    SYMLINK = 10
    MKDIR = 11
    SETXATTR = 12
    REMOVEXATTR = 13
    MKNOD = 14
    OPEN = 15  # only ever reported as a failed attempt (ret < 0)

    @property
    def action(self) -> str:
        """The ECS ``event.action`` word for this operation."""
        return _ACTIONS[self]


_ACTIONS = {
    FileOp.CREATE: "created",
    FileOp.MODIFY: "modified",
    FileOp.DELETE: "deleted",
    FileOp.RMDIR: "directory-deleted",
    FileOp.RENAME: "renamed",
    FileOp.CHMOD: "mode-changed",
    FileOp.CHOWN: "owner-changed",
    FileOp.TRUNCATE: "truncated",
    FileOp.LINK: "hardlink-created",
    FileOp.SYMLINK: "symlink-created",
    FileOp.MKDIR: "directory-created",
    FileOp.SETXATTR: "xattr-changed",
    FileOp.REMOVEXATTR: "xattr-removed",
    FileOp.MKNOD: "created",
    FileOp.OPEN: "opened",
}


@dataclass(slots=True)
class Process:
    """Who did it: the acting task as the kernel saw it, enriched from the process table.

    ``start_time`` is the task's boot-time start in clock ticks (as /proc/PID/stat field 22), so
    (pid, start_time) identifies a process across PID reuse, like psutil's (pid, create_time).
    """

    pid: int
    tid: int
    ppid: int
    start_time: int
    parent_start_time: int
    uid: int
    gid: int
    euid: int
    egid: int
    auid: int  # login uid; 0xFFFFFFFF when unset
    session_id: int
    comm: bytes
    cgroup_id: int
    mnt_ns: int
    executable: bytes | None = None
    args: list[bytes] | None = None
    parent_executable: bytes | None = None
    parent_args: list[bytes] | None = None
    user_name: str | None = None
    group_name: str | None = None
    euser_name: str | None = None
    container: ContainerInfo | None = None   # vigil.enrich.containers, from the cgroup
    enriched: bool = False  # set once the pipeline has filled the fields above
    # what an output made of this process once it was enriched (vigil.outputs.ecs: its ECS
    # who-data parts), for the next event of the same process; never part of equality
    rendered: object = field(default=None, repr=False, compare=False)
    rendered_json: tuple[bytes, bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def container_id(self) -> str | None:
        return self.container.id if self.container is not None else None

    @property
    def entity_id(self) -> str:
        """A stable identifier of this process instance (ECS ``process.entity_id``)."""
        return f"{self.pid}-{self.start_time}"

    @property
    def parent_entity_id(self) -> str:
        return f"{self.ppid}-{self.parent_start_time}"


@dataclass(slots=True)
class FileEvent:
    """A file operation on a watched path, successful (``errno == 0``) or a failed attempt."""

    timestamp_ns: int  # wall clock, ns since the epoch
    op: FileOp
    path: bytes
    process: Process
    errno: int = 0
    target_path: bytes | None = None  # rename/link: the new name; symlink: the link's content
    mode: int | None = None  # chmod/create/mkdir/mknod: the mode asked for
    owner_uid: int | None = None  # chown: new owner (None when unchanged)
    owner_gid: int | None = None
    inode: int | None = None
    device: int | None = None
    flags: int = 0  # vigil.events.layout.Flag bits (truncated paths, ...)
    source: str = "kernel"  # "kernel", "rescan", "startup-scan"
    file_id: int = 0  # modify: identity of the open file the kernel saw closed
    # set by the agent, not the kernel: "self" for one of Vigil's own files (vigil.ownfiles);
    # a security knob's write (vigil.sysctl): name, old, new, weakened
    protected: str | None = None
    sysctl: dict[str, object] | None = None

    @property
    def failed(self) -> bool:
        return self.errno != 0


@dataclass(slots=True)
class ExecEvent:
    """A program started: ``process`` as the exec left it (new executable and arguments).

    ``cwd`` is the working directory it starts in, as the kernel names it (from the mount
    namespace's root, like the executable): the path a removed directory had, the last
    components of one deeper than the kernel walks (``flags`` has CWD_TRUNC then); None when
    the kernel knew none. Not a Process field: the process may change directory later, and
    its other events share that object.

    ``sha256`` is the executed image's hash (vigil.enrich.exehash), or ``hash_skipped`` says
    why there is none; both None when exec hashing is off.
    """

    timestamp_ns: int
    process: Process
    flags: int = 0
    cwd: bytes | None = None
    # keyword-only: set after decoding, never part of a record's positional fields
    sha256: str | None = field(default=None, kw_only=True)
    hash_skipped: str | None = field(default=None, kw_only=True)
    # the executed file as the kernel found it at the exec: device (the kernel's dev_t),
    # inode and change time; None when the record names no file
    exe_dev: int | None = field(default=None, kw_only=True)
    exe_ino: int | None = field(default=None, kw_only=True)
    exe_ctime_ns: int | None = field(default=None, kw_only=True)


@dataclass(slots=True)
class ExitEvent:
    timestamp_ns: int
    process: Process
    exit_code: int  # the wait status: exit status << 8 | signal
    flags: int = 0

    @property
    def status(self) -> int:
        return (self.exit_code >> 8) & 0xFF

    @property
    def signal(self) -> int:
        return self.exit_code & 0x7F


class NetOp(enum.IntEnum):
    """Network operations; values are shared with the BPF side (bpf/vigil_events.h)."""

    CONNECT = 1  # outbound TCP connect, with its outcome
    ACCEPT = 2
    LISTEN = 3
    BIND = 4
    UDP_SEND = 5  # the first datagram of a UDP flow, sent ...
    UDP_RECV = 6  # ... or received
    UNIX_CONNECT = 7

    @property
    def action(self) -> str:
        """The ECS ``event.action`` word."""
        return self.name.lower().replace("_", "-").replace("recv", "receive")

    @property
    def egress(self) -> bool | None:
        """True when this host's process initiated it, False when a peer did, None for
        listen and bind (no peer)."""
        return _EGRESS[self]


_EGRESS = {NetOp.CONNECT: True, NetOp.ACCEPT: False, NetOp.LISTEN: None, NetOp.BIND: None,
           NetOp.UDP_SEND: True, NetOp.UDP_RECV: False, NetOp.UNIX_CONNECT: True}
_MAPPED = b"\0" * 10 + b"\xff\xff"
_ZERO12 = b"\0" * 12


def ip_text(family: int, raw: bytes) -> str | None:
    """The address as text (an IPv4-mapped IPv6 address as the IPv4 address it carries).
    inet_ntop: a quarter of ipaddress's cost, the same text (RFC 5952 for IPv6)."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        head = raw[:12]
        if head == _MAPPED:
            return socket.inet_ntop(socket.AF_INET, raw[12:16])
        if head == _ZERO12:   # ::, ::1 and the old IPv4-compatible ::a.b.c.d, which glibc
            return str(ipaddress.IPv6Address(raw[:16]))   # spells otherwise
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return None


@dataclass(slots=True)
class NetEvent:
    """Network activity of a process: ``local``/``remote`` are raw addresses as the kernel
    holds them (16 bytes, IPv4 in the first 4), ports in host order. ``errno``: a failed connect
    (refused, timed out, unreachable) or bind. ``path``: a Unix socket's path."""

    timestamp_ns: int
    op: NetOp
    process: Process
    family: int
    protocol: int  # IPPROTO_TCP, IPPROTO_UDP, 0 (Unix)
    local_addr: bytes
    local_port: int
    remote_addr: bytes
    remote_port: int
    errno: int = 0
    path: bytes | None = None
    flags: int = 0
    sock_id: int = 0  # the kernel's socket: events of one socket share it (never output)

    @property
    def failed(self) -> bool:
        return self.errno != 0

    @property
    def local_ip(self) -> str | None:
        return ip_text(self.family, self.local_addr)

    @property
    def remote_ip(self) -> str | None:
        return ip_text(self.family, self.remote_addr)

    @property
    def ip_version(self) -> str | None:
        """'ipv4' or 'ipv6' (an IPv4-mapped address is IPv4); None for Unix sockets."""
        ip = self.remote_ip if self.op.egress is not None else self.local_ip
        if ip is None:
            return None
        return "ipv6" if ":" in ip else "ipv4"


@dataclass(slots=True)
class ShellEvent:
    """A command line an interactive shell read (its line editor returned it), with the
    shell's who-data. ``tty_major``/``tty_minor``/``tty_name``: its controlling terminal (0, 0
    and "" without one); ``session_leader``: the pid of its session's leader (0: unknown);
    ``truncated``: the line was longer than the kernel side keeps."""

    timestamp_ns: int
    process: Process
    command: bytes
    tty_major: int = 0
    tty_minor: int = 0
    tty_name: str = ""
    session_leader: int = 0
    truncated: bool = False

    @property
    def tty(self) -> str:
        """The terminal as ps and /dev name it: the kernel's "pts3" is /dev/pts/3."""
        n = self.tty_name
        return f"pts/{n[3:]}" if n.startswith("pts") and n[3:].isdigit() else n


@dataclass(slots=True)
class LostEvents:
    """The kernel side could not deliver ``count`` events of ``kind`` (ring buffer full)."""

    timestamp_ns: int
    kind: str
    count: int
    extra: dict[str, int] = field(default_factory=dict)


# Privilege and tampering events live in their own module, which builds on Process above.
from vigil.events.security import CredEvent, SecEvent  # noqa: E402

Event = (FileEvent | ExecEvent | ExitEvent | NetEvent | CredEvent | SecEvent | ShellEvent
         | LostEvents)
