"""Network events as OCSF Network Activity (4001).

Owns the activities (a connect or accept that succeeded: Open; a connect refused: Refuse,
one that failed otherwise: Fail; listen: Listen; the first datagram of a UDP flow either
way: Traffic; bind: Other "Bind") and the endpoints: ``src_endpoint`` is who initiated, as
ECS's source (this host's end of a connect, the peer of an accepted connection), listen and
bind have only this host's end. ``connection_info`` says the direction, the protocol and
the IP version; a peer on the loopback network is the boundary "Localhost". A Unix socket's
path is the destination's ``name``.
"""

from __future__ import annotations

from typing import Any, Final

from vigil.outputs.ocsf_actor import who
from vigil.outputs.ocsf_base import OTHER, envelope, finish

NETWORK_ACTIVITY: Final = 4001
_ACTIVITIES: Final = {"connect": (1, "Open"), "accept": (1, "Open"), "listen": (7, "Listen"),
                      "bind": (OTHER, "Bind"), "udp-send": (6, "Traffic"),
                      "udp-receive": (6, "Traffic"), "unix-connect": (1, "Open")}
_DIRECTIONS: Final = {"egress": (2, "Outbound"), "ingress": (1, "Inbound")}
_PROTOCOLS: Final = {"tcp": 6, "udp": 17}


def _endpoint(e: dict[str, Any] | None) -> dict[str, Any] | None:
    if not e:
        return None
    out: dict[str, Any] = {}
    if "ip" in e:
        out["ip"] = e["ip"]
    if "port" in e:
        out["port"] = e["port"]
    return out if "ip" in out else None


def _loopback(ip: str | None) -> bool:
    return ip is not None and (ip.startswith("127.") or ip == "::1")


def net_event(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None
              ) -> dict[str, Any]:
    action = doc["event"].get("action", "")
    activity, name = _ACTIVITIES.get(action, (OTHER, action or "Other"))
    failed = doc["event"].get("outcome") == "failure"
    if failed and activity == 1:
        refused = (doc.get("error") or {}).get("code") == "ECONNREFUSED"
        activity, name = (5, "Refuse") if refused else (4, "Fail")
    out = envelope(NETWORK_ACTIVITY, activity, name, doc, time_ns)
    actor, _, um = who(doc)
    out["actor"] = actor
    net = doc.get("network") or {}
    transport = net.get("transport", "")
    ci: dict[str, Any] = {"protocol_name": transport}
    if transport in _PROTOCOLS:
        ci["protocol_num"] = _PROTOCOLS[transport]
    if net.get("type") == "ipv4":
        ci["protocol_ver_id"] = 4
    elif net.get("type") == "ipv6":
        ci["protocol_ver_id"] = 6
    direction = _DIRECTIONS.get(net.get("direction", ""))
    if direction is not None:
        ci["direction_id"], ci["direction"] = direction
        out["is_src_dst_assignment_known"] = True
    else:
        ci["direction_id"], ci["direction"] = 0, "Unknown"
    src = _endpoint(doc.get("source"))
    dst = _endpoint(doc.get("destination"))
    if transport == "unix":
        path = ((doc.get("vigil") or {}).get("network") or {}).get("path") \
            or (doc.get("destination") or {}).get("address", "")
        dst = {"name": path}
    if src is not None:
        out["src_endpoint"] = src
    if dst is not None:
        out["dst_endpoint"] = dst
        if _loopback(dst.get("ip")):
            ci["boundary_id"], ci["boundary"] = 1, "Localhost"
    elif src is None:   # OCSF wants one endpoint at least: this host's end, by name
        out["src_endpoint"] = {"hostname": str((host or doc.get("host") or {}).get(
            "hostname") or "localhost")}
    out["connection_info"] = ci
    return finish(out, doc, host, um)
