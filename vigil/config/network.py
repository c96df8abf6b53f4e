"""The ``network:`` section of a configuration: which network events the kernel side reports
(kinds), which it leaves out (networks, ports) and how many one process may send (a rate cap).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import yaml

from vigil.config.model import NET_KINDS, NetworkConfig
from vigil.config.nodes import Ctx, abs_path, duration, non_negative, subset

_KEYS = ("enabled", "kinds", "exclude_cidrs", "exclude_ports", "rate_limit", "rate_burst",
         "udp_flow_ttl", "udp_flows", "unix_paths")
MAX_FILTERS = 1024  # entries of the kernel's filter maps (bpf/net.bpf.h)


def parse_network(ctx: Ctx, node: yaml.Node) -> NetworkConfig:
    m = ctx.mapping(node, "network", _KEYS)
    kw: dict[str, Any] = {}
    if "enabled" in m:
        kw["enabled"] = ctx.typed(m["enabled"], "enabled", bool)
    if "kinds" in m:
        kw["kinds"] = tuple(subset(ctx, m["kinds"], "kinds", NET_KINDS))
    if "exclude_cidrs" in m:
        nets = []
        for text, item in ctx.str_list(m["exclude_cidrs"], "exclude_cidrs"):
            try:
                nets.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ctx.error(item, f"'exclude_cidrs': {text[:80]!r} is not a network such "
                                      "as 10.0.0.0/8 or fd00::/8") from None
        kw["exclude_cidrs"] = tuple(_limited(ctx, m["exclude_cidrs"], "exclude_cidrs", nets))
    if "exclude_ports" in m:
        node_ports = m["exclude_ports"]
        if not isinstance(node_ports, yaml.SequenceNode):
            raise ctx.error(node_ports, "'exclude_ports' must be a list")
        ports = []
        for item in node_ports.value:
            port = ctx.typed(item, "exclude_ports", int)
            if not 0 < port < 65536:
                raise ctx.error(item, f"'exclude_ports': {port} is not a port (1-65535)")
            ports.append(port)
        kw["exclude_ports"] = tuple(_limited(ctx, node_ports, "exclude_ports", ports))
    if "rate_limit" in m:
        kw["rate_limit"] = non_negative(ctx, m["rate_limit"], "rate_limit")
    if "rate_burst" in m and ctx.value(m["rate_burst"]) is not None:
        kw["rate_burst"] = non_negative(ctx, m["rate_burst"], "rate_burst", 1)
    if "udp_flow_ttl" in m:
        kw["udp_flow_ttl"] = duration(ctx, m["udp_flow_ttl"], "udp_flow_ttl")
    if "udp_flows" in m:
        kw["udp_flows"] = non_negative(ctx, m["udp_flows"], "udp_flows", 64)
    if "unix_paths" in m:
        paths = [os.fsencode(abs_path(ctx, item, "unix_paths"))
                 for _, item in ctx.str_list(m["unix_paths"], "unix_paths")]
        kw["unix_paths"] = tuple(_limited(ctx, m["unix_paths"], "unix_paths", paths))
    return NetworkConfig(**kw)


def _limited(ctx: Ctx, node: yaml.Node, key: str, items: list[Any]) -> list[Any]:
    if len(items) > MAX_FILTERS:
        raise ctx.error(node, f"'{key}': at most {MAX_FILTERS} entries, got {len(items)}")
    return items
