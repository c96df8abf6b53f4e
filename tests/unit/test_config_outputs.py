"""The ``outputs:``, ``metrics:`` and ``health:`` sections (vigil.config.outputs): what they
parse to, and every wrong value refused with its FILE:LINE."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.config import ConfigError, load_config
from vigil.config.reload import fim_changed, restart_needed


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "vigil.yaml"
    p.write_text(f"directories:\n  - path: {tmp_path}\nstate_dir: {tmp_path}/state\n" + text)
    return load_config(p)


def test_syslog_outputs_and_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cfg = load(tmp_path, f"""outputs:
  syslog:
    - address: tcp://127.0.0.1:6514
    - address: "tls://[::1]:6514"
      format: ocsf
      tls: {{ca_file: {ca}, server_name: siem.example}}
    - {{address: unix:///dev/log, format: line, name: local, facility: 4}}
    - address: udp://syslog.example.org:514
      spool_max_mb: 8
    - address: relp://127.0.0.1:2514
  file: {{path: {tmp_path}/events.ocsf, format: ocsf}}
metrics: false
health: {{interval: 5m, timeout: 20s, directory: {tmp_path}/h}}
""")
    tcp, tls, unix, udp, relp = cfg.outputs.syslog
    assert (relp.scheme, relp.host, relp.port) == ("relp", "127.0.0.1", 2514)
    assert (tcp.scheme, tcp.host, tcp.port, tcp.format) == ("tcp", "127.0.0.1", 6514, "json")
    assert (tls.scheme, tls.host, tls.format, tls.tls.ca_file) == ("tls", "::1", "ocsf", ca)
    assert tls.tls.server_name == "siem.example"
    assert (unix.scheme, unix.path, unix.facility, unix.key) == ("unix", "/dev/log", 4, "local")
    assert udp.spool_max_mb == 8 and udp.host == "syslog.example.org"
    assert cfg.spool_dir(tcp) == tmp_path / "state" / "spool" / "tcp-127.0.0.1-6514"
    assert cfg.outputs.file[0].format == "ocsf"
    assert not cfg.metrics.enabled
    assert (cfg.health.interval, cfg.health.timeout, cfg.health_dir) == (300, 20, tmp_path / "h")


def test_defaults() -> None:
    cfg = load_config(None)
    assert cfg.outputs.syslog == () and cfg.outputs.file == ()
    assert (cfg.metrics.enabled, cfg.metrics.address, cfg.metrics.port) == (
        True, "127.0.0.1", 9108)
    assert cfg.health.enabled and cfg.health_dir == cfg.state_dir / "health"


@pytest.mark.parametrize("text,line,needle", [
    ("outputs:\n  syslog: {address: tcp://h}\n", 5, "needs a port"),
    ("outputs:\n  syslog: {address: http://h:1}\n", 5, "'address' must be"),
    ("outputs:\n  syslog: {address: tcp://h:70000}\n", 5, "out of range"),
    ("outputs:\n  syslog: {address: unix://dev/log}\n", 5, "unix:///ABSOLUTE"),
    ("outputs:\n  syslog: {address: 'tcp://[zz]:1'}\n", 5, "'address' must be"),
    ("outputs:\n  syslog:\n    - address: tcp://h:1\n      format: cef\n", 7, "'format'"),
    ("outputs:\n  syslog:\n    - address: tcp://h:1\n      tls: {}\n", 7, "tls://"),
    ("outputs:\n  syslog:\n    - address: tls://h:1\n      tls: {ca_file: /nonexistent}\n",
     7, "not a readable file"),
    ("outputs:\n  syslog:\n    - address: tcp://h:1\n    - address: tcp://h:1\n", 7,
     "share the name"),
    ("outputs:\n  syslog: {address: tcp://h:1, facility: 24}\n", 5, "0..23"),
    ("outputs:\n  syslog: {address: tcp://h:1, app_name: 'a b'}\n", 5, "app_name"),
    ("outputs:\n  sylog: []\n", 5, "sylog"),
    ("outputs:\n  file: {format: ocsf}\n", 5, "needs 'path'"),
    ("outputs:\n  file: {path: rel, format: ocsf}\n", 5, "absolute"),
    ("metrics: {port: 0}\n", 4, "'port' must be >= 1"),
    ("metrics: {address: localhost}\n", 4, "IP address"),
    ("health: {timeout: 0}\n", 4, "at least 1s"),
    ("health: {interval: soon}\n", 4, "'interval'"),
])
def test_errors_name_the_line(tmp_path: Path, text: str, line: int, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    msg = str(e.value)
    assert f"vigil.yaml:{line}:" in msg and needle in msg, msg


def test_reload_says_what_needs_a_restart(tmp_path: Path) -> None:
    a = load(tmp_path, "ring_buffer_mb: 16\n")
    b = load(tmp_path, "ring_buffer_mb: 32\nignore: ['*.tmp']\n")
    assert restart_needed(a, b) == ["ring_buffer_mb"]
    assert fim_changed(a, b) and not fim_changed(a, a)
