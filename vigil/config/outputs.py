"""The ``outputs:``, ``metrics:`` and ``health:`` sections: where events go besides the
terminal (syslog, files), the Prometheus endpoint and the end-to-end self check.

Owns their keys' checks (an address is parsed here: a wrong scheme or port is the config's
FILE:LINE error, not a connection failure at run time); what they do is vigil.outputs.syslog,
vigil.metrics and vigil.health.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import yaml

from vigil.config.model import (
    FILE_FORMATS,
    SYSLOG_FORMATS,
    SYSLOG_SCHEMES,
    FileOutput,
    HealthConfig,
    MetricsConfig,
    OutputsConfig,
    SyslogOutput,
    TlsConfig,
)
from vigil.config.nodes import Ctx, abs_path, choice, duration, non_negative

_SYSLOG = ("address", "format", "facility", "app_name", "spool_dir", "spool_max_mb", "tls",
           "name")
_TLS = ("ca_file", "cert_file", "key_file", "server_name")
_FILE = ("path", "format")
_ADDRESS = re.compile(r"^(?P<scheme>[a-z]+)://(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:/\[\]]*))"
                      r"(?::(?P<port>\d{1,5}))?$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_APP = re.compile(r"^[!-~]{1,48}$")    # RFC 5424 APP-NAME: printable US-ASCII, no space


def _entries(ctx: Ctx, node: yaml.Node, key: str) -> list[yaml.Node]:
    """One mapping or a list of them."""
    if isinstance(node, yaml.MappingNode):
        return [node]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    raise ctx.error(node, f"'{key}' must be a mapping or a list of mappings")


def _address(ctx: Ctx, node: yaml.Node) -> dict[str, Any]:
    text: str = ctx.typed(node, "address", str)
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path.startswith("/") or "\0" in path:
            raise ctx.error(node, f"'address': a unix address is unix:///ABSOLUTE/PATH, "
                                  f"got {text[:120]!r}")
        return {"scheme": "unix", "path": path}
    m = _ADDRESS.match(text)
    if m is None or m["scheme"] not in SYSLOG_SCHEMES:
        raise ctx.error(node, "'address' must be unix:///dev/log, udp://HOST:PORT, "
                              "tcp://HOST:PORT, tls://HOST:PORT or relp://HOST:PORT, "
                              f"got {text[:120]!r}")
    host = m["v6"] or m["host"]
    if m["v6"]:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ctx.error(node, f"'address': {host!r} is not an IPv6 address") from None
    if not host:
        raise ctx.error(node, f"'address' names no host: {text[:120]!r}")
    if m["port"] is None:
        raise ctx.error(node, f"'address' needs a port ({m['scheme']}://{host}:PORT)")
    port = int(m["port"])
    if not 0 < port < 65536:
        raise ctx.error(node, f"'address': port {port} is out of range")
    return {"scheme": m["scheme"], "host": host, "port": port}


def _tls(ctx: Ctx, node: yaml.Node) -> TlsConfig:
    m = ctx.mapping(node, "tls", _TLS)
    kw: dict[str, Any] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        if key in m:
            p = abs_path(ctx, m[key], key)
            if not p.is_file():
                raise ctx.error(m[key], f"'{key}': {p} is not a readable file")
            kw[key] = p
    if ("cert_file" in kw) != ("key_file" in kw):
        raise ctx.error(node, "'tls': cert_file and key_file go together")
    if "server_name" in m:
        kw["server_name"] = ctx.typed(m["server_name"], "server_name", str)
    return TlsConfig(**kw)


def _syslog(ctx: Ctx, node: yaml.Node) -> SyslogOutput:
    m = ctx.mapping(node, "a syslog output", _SYSLOG)
    if "address" not in m:
        raise ctx.error(node, "a syslog output needs 'address'")
    kw: dict[str, Any] = {"address": ctx.value(m["address"]), **_address(ctx, m["address"])}
    if "format" in m:
        kw["format"] = choice(ctx, m["format"], "format", SYSLOG_FORMATS)
    if "facility" in m:
        fac = non_negative(ctx, m["facility"], "facility")
        if fac > 23:
            raise ctx.error(m["facility"], f"'facility' is a number 0..23, got {fac}")
        kw["facility"] = fac
    if "app_name" in m:
        app = ctx.typed(m["app_name"], "app_name", str)
        if not _APP.match(app):
            raise ctx.error(m["app_name"], "'app_name' is 1 to 48 printable ASCII characters "
                                           "without spaces")
        kw["app_name"] = app
    if "spool_dir" in m:
        kw["spool_dir"] = abs_path(ctx, m["spool_dir"], "spool_dir")
    if "spool_max_mb" in m:
        kw["spool_max_mb"] = non_negative(ctx, m["spool_max_mb"], "spool_max_mb", 1)
    if "tls" in m:
        if kw["scheme"] != "tls":
            raise ctx.error(m["tls"], "'tls' settings need a tls:// address")
        kw["tls"] = _tls(ctx, m["tls"])
    if "name" in m:
        name = ctx.typed(m["name"], "name", str)
        if not _NAME.match(name):
            raise ctx.error(m["name"], "'name' is 1 to 64 of A-Z a-z 0-9 _ . -")
        kw["name"] = name
    return SyslogOutput(**kw)


def parse_outputs(ctx: Ctx, node: yaml.Node) -> OutputsConfig:
    if ctx.value(node) is None:
        return OutputsConfig()
    m = ctx.mapping(node, "outputs", ("syslog", "file"))
    syslog: list[SyslogOutput] = []
    files: list[FileOutput] = []
    if "syslog" in m and ctx.value(m["syslog"]) is not None:
        keys: set[str] = set()
        for item in _entries(ctx, m["syslog"], "syslog"):
            out = _syslog(ctx, item)
            if out.key in keys:
                raise ctx.error(item, f"two syslog outputs share the name {out.key!r}: give "
                                      "one a 'name' (it names its spool)")
            keys.add(out.key)
            syslog.append(out)
    if "file" in m and ctx.value(m["file"]) is not None:
        for item in _entries(ctx, m["file"], "file"):
            fm = ctx.mapping(item, "a file output", _FILE)
            if "path" not in fm:
                raise ctx.error(item, "a file output needs 'path'")
            fkw: dict[str, Any] = {"path": abs_path(ctx, fm["path"], "path")}
            if "format" in fm:
                fkw["format"] = choice(ctx, fm["format"], "format", FILE_FORMATS)
            if any(f.path == fkw["path"] for f in files):
                raise ctx.error(item, f"file output {fkw['path']} is listed twice")
            files.append(FileOutput(**fkw))
    return OutputsConfig(tuple(syslog), tuple(files))


def parse_metrics(ctx: Ctx, node: yaml.Node) -> MetricsConfig:
    v = ctx.value(node)
    if isinstance(v, bool):
        return MetricsConfig(enabled=v)
    m = ctx.mapping(node, "metrics", ("enabled", "address", "port"))
    kw: dict[str, Any] = {}
    if "enabled" in m:
        kw["enabled"] = ctx.typed(m["enabled"], "enabled", bool)
    if "address" in m:
        addr = ctx.typed(m["address"], "address", str)
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ctx.error(m["address"], f"'address' must be an IP address to listen on, "
                                          f"got {addr[:80]!r}") from None
        kw["address"] = addr
    if "port" in m:
        port = non_negative(ctx, m["port"], "port", 1)
        if port > 65535:
            raise ctx.error(m["port"], f"'port' is out of range: {port}")
        kw["port"] = port
    return MetricsConfig(**kw)


def parse_health(ctx: Ctx, node: yaml.Node) -> HealthConfig:
    v = ctx.value(node)
    if isinstance(v, bool):
        return HealthConfig(enabled=v)
    m = ctx.mapping(node, "health", ("enabled", "interval", "timeout", "directory"))
    kw: dict[str, Any] = {}
    if "enabled" in m:
        kw["enabled"] = ctx.typed(m["enabled"], "enabled", bool)
    if "interval" in m:
        kw["interval"] = duration(ctx, m["interval"], "interval")
    if "timeout" in m:
        t = duration(ctx, m["timeout"], "timeout")
        if t < 1:
            raise ctx.error(m["timeout"], "'timeout' must be at least 1s")
        kw["timeout"] = t
    if "directory" in m and ctx.value(m["directory"]) is not None:
        kw["directory"] = abs_path(ctx, m["directory"], "directory")
    return HealthConfig(**kw)
