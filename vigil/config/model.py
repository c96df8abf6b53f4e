"""The configuration's model: one frozen, typed tree, and the names its values come from.

Owns the dataclasses (Config and its sections), the allowed values of the enumerated keys, the
ignore/restrict/nodiff ``Pattern`` and ``ConfigError``. Reading a file into this tree is
vigil.config.load; what the settings mean at run time belongs to their users (path matching:
vigil.fim.policy; rules: vigil.rules.ruleset; the agent reads the rest).
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import os
import re
from dataclasses import dataclass, field, replace
from fnmatch import translate
from pathlib import Path

from vigil.kernel.errors import InputError

CHECKS = ("size", "mode", "owner", "group", "mtime", "inode", "hashes", "xattrs", "ctime")
MOUNTS = ("include", "skip")  # a directory's `mounts`: walk into other filesystems below it?
HASHES = ("sha256", "sha1", "md5", "blake3")
OUTPUTS = ("auto", "pretty", "compact", "json", "ocsf")   # the terminal's (stdout) format
FILE_FORMATS = ("ecs", "ocsf")                 # outputs.file: JSON lines of either schema
SYSLOG_FORMATS = ("json", "line", "ocsf")      # outputs.syslog: the message part
SYSLOG_SCHEMES = ("unix", "udp", "tcp", "tls", "relp")
LEVELS = ("informational", "low", "medium", "high", "critical")  # Sigma's, least severe first
EMBEDDED_NAME = "<embedded default.yaml>"


class ConfigError(InputError):
    """A configuration file is wrong; the message says where ("FILE:LINE: ...")."""


@dataclass(frozen=True)
class Pattern:
    """One ignore/restrict/nodiff entry: a glob, or a regex when written ``re:...``.

    A glob without '/' matches the file name; a glob with '/' matches the whole path. A regex is
    searched in the whole path. Matching is on bytes (names need not be UTF-8).
    """

    text: str
    regex: re.Pattern[bytes] = field(compare=False, repr=False)
    basename_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Pattern:
        if text.startswith("re:"):
            rx = re.compile(os.fsencode(text[3:]))
            return cls(text, rx, False)
        return cls(text, re.compile(os.fsencode(translate(text))), "/" not in text)

    @property
    def is_regex(self) -> bool:
        return self.text.startswith("re:")

    def matches(self, path: bytes) -> bool:
        if self.basename_only:
            return self.regex.match(path.rsplit(b"/", 1)[-1]) is not None
        if self.is_regex:
            return self.regex.search(path) is not None
        return self.regex.match(path) is not None


@dataclass(frozen=True)
class DirectoryConfig:
    path: bytes
    recursive: bool = True
    depth: int | None = None  # levels below `path`; 0 = direct children only; None = unlimited
    realtime: bool = True
    check: frozenset[str] = frozenset(CHECKS)
    hashes: tuple[str, ...] = ("sha256",)
    report_changes: bool = False
    ignore: tuple[Pattern, ...] = ()
    restrict: tuple[Pattern, ...] = ()
    nodiff: tuple[Pattern, ...] = ()
    follow_symlinks: bool = False
    tags: tuple[str, ...] = ()
    mounts: str = "include"  # one of MOUNTS (pseudo filesystems are never walked)

    @property
    def max_depth(self) -> int | None:
        return 0 if not self.recursive else self.depth


@dataclass(frozen=True)
class ScanConfig:
    interval: int = 12 * 3600  # seconds; 0 = never
    max_files: int = 1_000_000
    hash_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_file_size: int = 1 << 30


@dataclass(frozen=True)
class DiffConfig:
    quota_mb: int = 64
    max_file_size: int = 1 << 20


@dataclass(frozen=True)
class RulesConfig:
    """The ``rules:`` section: which Sigma rules the agent evaluates and how loud they are."""

    builtin: bool = True                # the shipped pack (vigil/data/rules)
    paths: tuple[Path, ...] = ()        # more rule files or directories
    disabled: tuple[str, ...] = ()      # rule ids or titles never evaluated
    min_level: str = "low"              # rules below this level are not evaluated
    suppress_window: int = 60           # seconds; repeats of a rule by one process: one alert
    enabled: bool = True                # false: no rules at all (telemetry only)


@dataclass(frozen=True)
class ExecHashConfig:
    """The ``exec_hash:`` section: the sha256 of every executed image (vigil.enrich.exehash),
    within a budget of bytes read per second; larger files are not read."""

    enabled: bool = True
    max_bytes_per_second: int = 64 << 20
    max_file_size: int = 64 << 20


@dataclass(frozen=True)
class ShellConfig:
    """The ``shell:`` section: the command lines typed into interactive shells (a uprobe on
    bash's readline in every bash found: vigil.kernel.uprobes)."""

    enabled: bool = True


NET_KINDS = ("connect", "accept", "listen", "bind", "udp", "unix")
DEFAULT_UNIX_PATHS = (b"/run/docker.sock", b"/run/containerd/containerd.sock",
                      b"/run/podman/podman.sock")


@dataclass(frozen=True)
class NetworkConfig:
    """The ``network:`` section: which network events the kernel side reports and which it
    leaves out (README: "Network events")."""

    enabled: bool = True
    kinds: tuple[str, ...] = NET_KINDS
    exclude_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    exclude_ports: tuple[int, ...] = ()
    rate_limit: int = 0                 # events per second per process; 0 = no cap
    rate_burst: int | None = None       # events a process may send at once (default: rate)
    udp_flow_ttl: int = 60              # seconds a UDP flow stays known after its last datagram
    udp_flows: int = 65536              # flows the kernel remembers (an LRU map)
    unix_paths: tuple[bytes, ...] = DEFAULT_UNIX_PATHS

    @property
    def on(self) -> bool:
        return self.enabled and bool(self.kinds)


@dataclass(frozen=True)
class TlsConfig:
    """A syslog output's TLS (RFC 5425) settings. The server's certificate is always verified:
    against ``ca_file`` when given, else the system's store; ``server_name`` defaults to the
    address's host. ``cert_file``/``key_file``: a client certificate, when the server asks."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class SyslogOutput:
    """One ``outputs.syslog`` entry: RFC 5424 messages to ``address`` through an on-disk spool
    (vigil.outputs.syslog). ``address``: unix:///dev/log, udp://HOST:PORT, tcp://HOST:PORT or
    tls://HOST:PORT, split into ``scheme`` and ``host``/``port`` (or ``path`` for unix)."""

    address: str
    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""
    format: str = "json"                 # one of SYSLOG_FORMATS
    facility: int = 13                   # RFC 5424 facility number (13: log audit)
    app_name: str = "vigil"
    spool_dir: Path | None = None        # None: <state_dir>/spool/<name>
    spool_max_mb: int = 256              # oldest messages dropped (and counted) beyond this
    tls: TlsConfig = field(default_factory=TlsConfig)
    name: str = ""                       # unique per output: the spool's folder, the metrics

    @property
    def key(self) -> str:
        return self.name or f"{self.scheme}-{self.host or self.path}-{self.port}"


@dataclass(frozen=True)
class FileOutput:
    """One ``outputs.file`` entry: JSON lines appended to ``path`` (ECS or OCSF)."""

    path: Path
    format: str = "ecs"                  # one of FILE_FORMATS


@dataclass(frozen=True)
class OutputsConfig:
    """The ``outputs:`` section: where events go besides the terminal (several at once)."""

    syslog: tuple[SyslogOutput, ...] = ()
    file: tuple[FileOutput, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    """The ``metrics:`` section: a Prometheus endpoint (vigil.metrics). ``metrics: false``
    turns it off."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class HealthConfig:
    """The ``health:`` section: the end-to-end self check (vigil.health). ``directory``: None
    means <state_dir>/health."""

    enabled: bool = True
    interval: int = 600                  # seconds between checks after the first; 0 = at start
    timeout: int = 10                    # seconds the four events have to come back
    directory: Path | None = None


@dataclass(frozen=True)
class Config:
    directories: tuple[DirectoryConfig, ...] = ()
    exec_events: bool = True
    failed_errnos: tuple[str, ...] = ("EPERM", "EACCES", "EROFS")
    ring_buffer_mb: int = 16
    output: str = "auto"
    json_file: Path | None = None
    database: Path = Path("/var/lib/vigil/baseline.db")
    state_dir: Path = Path("/var/lib/vigil")
    scan: ScanConfig = field(default_factory=ScanConfig)
    diff: DiffConfig = field(default_factory=DiffConfig)
    ignore: tuple[Pattern, ...] = ()
    rules: RulesConfig = field(default_factory=RulesConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    shell: ShellConfig = field(default_factory=ShellConfig)
    exec_hash: ExecHashConfig = field(default_factory=ExecHashConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    source: str = EMBEDDED_NAME

    @property
    def health_dir(self) -> Path:
        return self.health.directory or self.state_dir / "health"

    def spool_dir(self, out: SyslogOutput) -> Path:
        return out.spool_dir or self.state_dir / "spool" / out.key

    @property
    def failed_errno_numbers(self) -> frozenset[int]:
        return frozenset(int(getattr(errno_mod, n)) for n in self.failed_errnos)

    def with_watch_overrides(self, paths: list[Path]) -> Config:
        """The CLI's ``--watch DIR``: those directories replace the list (recursive, realtime)."""
        dirs = []
        for p in paths:
            ap = Path(os.path.abspath(p))
            if not os.path.exists(ap):
                raise ConfigError(f"--watch: watched path {ap} does not exist")
            dirs.append(DirectoryConfig(path=os.fsencode(ap)))
        return replace(self, directories=tuple(dirs))
