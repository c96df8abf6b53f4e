"""The kernel side's network settings: the network section of the config turned into the
.rodata values and filter maps of bpf/net.bpf.h.

Owns which programs are the network part (``net_*``), the op bits of each configured kind, the
rate cap's parameters (the generic cell rate algorithm: an interval per event and a tolerance
for bursts) and the keys of the excluded networks (IPv4 as IPv4-mapped IPv6, one trie for
both). Does not load anything (vigil.kernel.backend does).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final, Protocol

from vigil.config.model import NetworkConfig
from vigil.events.model import NetOp

NET_PROGRAM_PREFIX: Final = "net_"
_KIND_OPS: Final = {
    "connect": (NetOp.CONNECT,),
    "accept": (NetOp.ACCEPT,),
    "listen": (NetOp.LISTEN,),
    "bind": (NetOp.BIND,),
    "udp": (NetOp.UDP_SEND, NetOp.UDP_RECV),
    "unix": (NetOp.UNIX_CONNECT,),
}
_NS: Final = 1_000_000_000
_U16 = struct.Struct("=H")
_CIDR_KEY = struct.Struct("=I16s")
_MAPPED_PREFIX: Final = b"\0" * 10 + b"\xff\xff"


class _Map(Protocol):
    def update(self, key: bytes, value: bytes, flags: int = ...) -> None: ...


class _Maps(Protocol):
    def map(self, name: str) -> _Map: ...


def is_net_program(name: str) -> bool:
    return name.startswith(NET_PROGRAM_PREFIX)


def ops_mask(cfg: NetworkConfig | None) -> int:
    """The cfg_net_ops bits: 1 << op for each op of the configured kinds (0: network off)."""
    if cfg is None or not cfg.on:
        return 0
    return sum(1 << op for kind in cfg.kinds for op in _KIND_OPS[kind])


def rodata(cfg: NetworkConfig | None) -> dict[str, int]:
    if cfg is None or not cfg.on:
        return {"cfg_net_ops": 0}
    out = {"cfg_net_ops": ops_mask(cfg),
           "cfg_net_filter_ports": int(bool(cfg.exclude_ports)),
           "cfg_net_filter_cidrs": int(bool(cfg.exclude_cidrs)),
           "cfg_net_flow_ttl_ns": cfg.udp_flow_ttl * _NS}
    if cfg.rate_limit:
        interval = max(1, _NS // cfg.rate_limit)
        burst = cfg.rate_burst or cfg.rate_limit
        out.update(cfg_net_interval_ns=interval, cfg_net_tau_ns=(burst - 1) * interval)
    return out


def cidr_key(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    if net.version == 4:
        return _CIDR_KEY.pack(96 + net.prefixlen, _MAPPED_PREFIX + net.network_address.packed)
    return _CIDR_KEY.pack(net.prefixlen, net.network_address.packed)


def fill_maps(obj: _Maps, cfg: NetworkConfig | None, watch_key: object) -> None:
    """Writes the excluded ports and networks and the Unix socket paths into the kernel's
    maps. ``watch_key``: bytes -> the LPM key of a path (vigil.kernel.backend.watch_key)."""
    if cfg is None or not cfg.on:
        return
    ports = obj.map("net_ports")
    for port in cfg.exclude_ports:
        ports.update(_U16.pack(port), b"\1")
    cidrs = obj.map("net_cidrs")
    for net in cfg.exclude_cidrs:
        cidrs.update(cidr_key(net), b"\1")
    unix = obj.map("unix_watched")
    for i, path in enumerate(cfg.unix_paths):
        unix.update(watch_key(path), struct.pack("=II", 1, i))  # type: ignore[operator]
