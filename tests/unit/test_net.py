"""Network events without the kernel: the config's network section (and its FILE:LINE errors),
the kernel settings made from it, decoding of network records and their ECS rendering."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

import pytest
from test_config import error_of, write
from test_decode import CLOCK, proc_bytes

from vigil.config import load_config
from vigil.config.model import NetworkConfig
from vigil.events import layout
from vigil.events.layout import Decoder
from vigil.events.model import NetEvent, NetOp
from vigil.kernel import net
from vigil.outputs.ecs import to_ecs
from vigil.outputs.pretty import net_what

DIRS = "directories:\n  - path: /etc\n"


def test_network_section_defaults_and_every_key(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, DIRS)).network == NetworkConfig()
    cfg = load_config(write(tmp_path, DIRS + """network:
  kinds: [connect, udp]
  exclude_cidrs: [10.0.0.0/8, "fd00::/8", 192.168.1.7]
  exclude_ports: [53]
  rate_limit: 100
  rate_burst: 500
  udp_flow_ttl: 2m
  udp_flows: 1024
  unix_paths: [/run/x.sock]
""")).network
    assert cfg.kinds == ("connect", "udp")
    assert cfg.exclude_cidrs == (ipaddress.ip_network("10.0.0.0/8"),
                                 ipaddress.ip_network("fd00::/8"),
                                 ipaddress.ip_network("192.168.1.7/32"))
    assert (cfg.exclude_ports, cfg.rate_limit, cfg.rate_burst, cfg.udp_flow_ttl,
            cfg.udp_flows, cfg.unix_paths) == ((53,), 100, 500, 120, 1024, (b"/run/x.sock",))


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("network:\n  kinds: [conect]\n", 2, "did you mean 'connect'"),
    ("network:\n  exclude_cidrs:\n    - 10.0.0.0/8\n    - 10.0.0/33\n", 4,
     "'10.0.0/33' is not a network"),
    ("network:\n  exclude_ports: [0]\n", 2, "0 is not a port"),
    ("network:\n  exclude_ports: [http]\n", 2, "must be an integer"),
    ("network:\n  rate_limit: -1\n", 2, "'rate_limit' must be >= 0"),
    ("network:\n  rate_burst: 0\n", 2, "'rate_burst' must be >= 1"),
    ("network:\n  udp_flows: 10\n", 2, "'udp_flows' must be >= 64"),
    ("network:\n  unix_paths: [run/x.sock]\n", 2, "must be an absolute path"),
    ("network:\n  udp_flow_ttl: soon\n", 2, "'udp_flow_ttl' must be seconds"),
    ("network:\n  enabeld: false\n", 2, "did you mean 'enabled'"),
    ("network: [connect]\n", 1, "network must be a mapping"),
])
def test_network_section_errors(tmp_path: Path, text: str, line: int, needle: str) -> None:
    msg = error_of(tmp_path, DIRS + text)
    assert msg.startswith(f"{line + 2}: "), msg
    assert needle in msg, msg


def test_too_many_filter_entries_is_an_error(tmp_path: Path) -> None:
    ports = ", ".join(str(p) for p in range(1, net_max() + 2))
    text = DIRS + f"network:\n  exclude_ports: [{ports}]\n"
    assert "at most 1024 entries" in error_of(tmp_path, text)


def net_max() -> int:
    from vigil.config.network import MAX_FILTERS
    return MAX_FILTERS


def test_kernel_settings() -> None:
    assert net.rodata(None) == {"cfg_net_ops": 0}
    assert net.rodata(NetworkConfig(enabled=False)) == {"cfg_net_ops": 0}
    assert net.rodata(NetworkConfig(kinds=())) == {"cfg_net_ops": 0}
    all_ops = net.ops_mask(NetworkConfig())
    assert all_ops == sum(1 << op for op in NetOp)
    udp = (1 << NetOp.UDP_SEND) | (1 << NetOp.UDP_RECV)
    assert net.ops_mask(NetworkConfig(kinds=("udp",))) == udp
    r = net.rodata(NetworkConfig(rate_limit=1000, rate_burst=50, exclude_ports=(53,),
                                 udp_flow_ttl=30))
    assert r["cfg_net_interval_ns"] == 1_000_000 and r["cfg_net_tau_ns"] == 49 * 1_000_000
    assert r["cfg_net_filter_ports"] == 1 and r["cfg_net_filter_cidrs"] == 0
    assert r["cfg_net_flow_ttl_ns"] == 30 * 10**9
    assert "cfg_net_interval_ns" not in net.rodata(NetworkConfig())   # no cap by default
    # a burst defaults to one second's worth
    assert net.rodata(NetworkConfig(rate_limit=10))["cfg_net_tau_ns"] == 9 * 10**8


def test_excluded_networks_share_one_trie() -> None:
    """IPv4 networks are keyed as IPv4-mapped IPv6 (the kernel looks IPv4 addresses up so)."""
    k4 = net.cidr_key(ipaddress.ip_network("10.0.0.0/8"))
    assert struct.unpack("=I16s", k4) == (104, b"\0" * 10 + b"\xff\xff\x0a\0\0\0")
    k6 = net.cidr_key(ipaddress.ip_network("fd00::/8"))
    assert struct.unpack("=I16s", k6) == (8, b"\xfd" + b"\0" * 15)


def net_record(op: int, family: int, laddr: bytes, lport: int, raddr: bytes, rport: int,
               ret: int = 0, path: bytes = b"", proto: int = 6) -> bytes:
    tail = layout.NET_TAIL.pack(op, ret, family, proto, lport, rport, laddr.ljust(16, b"\0"),
                                raddr.ljust(16, b"\0"), 0xFFFF0000DEAD0000, len(path), 0)
    body = proc_bytes() + tail + path
    return layout.HDR.pack(layout.Kind.NET, 0, layout.HDR_SIZE + len(body), 9) + body


V4 = socket.inet_pton(socket.AF_INET, "10.1.2.3")
PEER = socket.inet_pton(socket.AF_INET, "198.51.100.2")


def test_connect_decodes_and_renders_as_egress() -> None:
    ev = Decoder(CLOCK).decode(net_record(1, socket.AF_INET, V4, 41000, PEER, 443, ret=-111))
    assert isinstance(ev, NetEvent) and ev.op is NetOp.CONNECT and ev.errno == 111
    doc = to_ecs(ev, {"name": "h"})
    assert doc["event"]["category"] == ["network"] and doc["event"]["outcome"] == "failure"
    assert doc["source"] == {"ip": "10.1.2.3", "address": "10.1.2.3", "port": 41000}
    assert doc["destination"]["ip"] == "198.51.100.2" and doc["destination"]["port"] == 443
    assert doc["network"] == {"transport": "tcp", "iana_number": "6", "type": "ipv4",
                              "direction": "egress"}
    assert doc["error"]["code"] == "ECONNREFUSED"
    assert "sock" not in str(doc["vigil"]["network"])   # no kernel address in the output
    assert net_what(ev) == "connect tcp 10.1.2.3:41000 -> 198.51.100.2:443 ECONNREFUSED"


def test_accept_source_is_the_peer_and_mapped_addresses_are_ipv4() -> None:
    mapped = b"\0" * 10 + b"\xff\xff" + PEER
    local6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    ev = Decoder(CLOCK).decode(net_record(2, socket.AF_INET6, local6, 22, mapped, 50000))
    assert isinstance(ev, NetEvent)
    doc = to_ecs(ev, {})
    assert doc["source"]["ip"] == "198.51.100.2" and doc["source"]["port"] == 50000
    assert doc["destination"]["ip"] == "2001:db8::1" and doc["destination"]["port"] == 22
    assert doc["network"]["direction"] == "ingress" and doc["network"]["type"] == "ipv4"


def test_listen_has_no_peer_and_unix_has_a_path() -> None:
    ev = Decoder(CLOCK).decode(net_record(3, socket.AF_INET, b"", 8080, b"", 0))
    doc = to_ecs(ev, {})   # type: ignore[arg-type]
    assert doc["source"] == {"ip": "0.0.0.0", "address": "0.0.0.0", "port": 8080}
    assert "destination" not in doc and "direction" not in doc["network"]
    ev = Decoder(CLOCK).decode(net_record(7, socket.AF_UNIX, b"", 0, b"", 0,
                                          path=b"/run/\xffdocker.sock", proto=0))
    doc = to_ecs(ev, {})   # type: ignore[arg-type]
    assert doc["network"] == {"transport": "unix", "direction": "egress"}
    assert doc["vigil"]["network"]["path"] == "/run/\ufffddocker.sock"
    assert doc["vigil"]["network"]["path_bytes_b64"]


def test_damaged_network_records_are_counted_not_raised() -> None:
    d = Decoder(CLOCK)
    good = net_record(1, socket.AF_INET, V4, 1, PEER, 2)
    assert d.decode(good[:-1]) is None                                  # short
    assert d.decode(net_record(99, socket.AF_INET, V4, 1, PEER, 2)) is None   # unknown op
    long_path = bytearray(net_record(7, 1, b"", 0, b"", 0, path=b"/x"))
    struct.pack_into("=I", long_path, layout.NET_EVENT_SIZE - 8, 500)   # path_len past the end
    assert d.decode(bytes(long_path)) is None
    assert dict(d.malformed) == {"short": 1, "unknown-op": 1, "bad-length": 1}


def test_net_ops_match_header() -> None:
    from test_layout import _c_enum
    c = _c_enum("VIGIL_NET_")
    assert c.pop("OP_MAX") == max(NetOp) + 1
    assert c == {op.name: op.value for op in NetOp}


def test_address_text_is_ipaddress_text() -> None:
    """inet_ntop's text (the fast path) is ipaddress's, IPv4-mapped and -compatible included."""
    import random

    from vigil.events.model import ip_text
    rng = random.Random(13)
    for i in range(20_000):
        raw = bytes(rng.getrandbits(8) for _ in range(16))
        if i % 3 == 0:
            raw = b"\0" * 12 + raw[12:]
        elif i % 3 == 1:
            raw = raw[:2] + b"\0" * 12 + raw[14:]
        want = ipaddress.ip_address(raw)
        if raw[:12] == b"\0" * 10 + b"\xff\xff":
            want = ipaddress.ip_address(raw[12:])
        assert ip_text(socket.AF_INET6, raw) == str(want)
        assert ip_text(socket.AF_INET, raw) == str(ipaddress.ip_address(raw[:4]))
    assert ip_text(socket.AF_UNIX, b"\0" * 16) is None
