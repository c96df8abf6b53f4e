"""What every OCSF event of Vigil shares: the schema version, the class and activity
envelope, ``metadata`` (product, profiles, the ECS dataset and action it came from),
``device`` (this host), the outcome (``status_*``) and ``unmapped``.

Owns the OCSF vocabulary used by the per-class modules (vigil.outputs.ocsf_file,
ocsf_process, ocsf_net, ocsf_sec, ocsf_finding): class and category numbers and names,
severities, and the rule that what OCSF has no attribute for stays under ``unmapped``
(``unmapped.vigil`` is the ECS document's ``vigil`` object, under the same names).

Everything here is rendered from an ECS document (vigil.outputs.ecs): the shared parts
(metadata, device) are built once and shared between documents, which are never changed in
place afterwards.
"""

from __future__ import annotations

from typing import Any, Final

import vigil

OCSF_VERSION: Final = "1.8.0"
# the profiles whose attributes Vigil's documents use: device and actor everywhere (host),
# time_dt (datetime), process.euid/egid/auid/group (the Linux extension's users profile),
# process.container (container)
PROFILES: Final = ("host", "datetime", "linux/linux_users", "container")
PRODUCT: Final = {"name": "Vigil", "vendor_name": "Vigil", "version": vigil.__version__,
                  "lang": "en"}

CATEGORIES: Final = {1: "System Activity", 2: "Findings", 4: "Network Activity",
                     6: "Application Activity"}
CLASSES: Final = {
    0: "Base Event",
    1001: "File System Activity",
    1002: "Kernel Extension Activity",
    1003: "Kernel Activity",
    1004: "Memory Activity",
    1007: "Process Activity",
    1009: "Script Activity",
    2004: "Detection Finding",
    4001: "Network Activity",
    6007: "Scan Activity",
    6008: "Application Error",
}
SEVERITIES: Final = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
                     5: "Critical", 6: "Fatal"}
INFORMATIONAL: Final = 1
SUCCESS: Final = 1
FAILURE: Final = 2
OTHER: Final = 99

_ARCH: Final = {"x86_64": 1, "i386": 1, "i686": 1, "aarch64": 2, "armv7l": 2, "armv6l": 2,
                "riscv64": 3}


def envelope(class_uid: int, activity_id: int, activity_name: str, doc: dict[str, Any],
             time_ns: int, severity_id: int = INFORMATIONAL) -> dict[str, Any]:
    """The attributes every class has, from the ECS document ``doc`` of the same event."""
    category_uid = class_uid // 1000
    class_name = CLASSES[class_uid]
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": CATEGORIES.get(category_uid, "Uncategorized"),
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {activity_name}",
        "time": time_ns // 1_000_000,
        "severity_id": severity_id,
        "severity": SEVERITIES[severity_id],
        "metadata": metadata(doc),
    }
    ts = doc.get("@timestamp")
    if ts:   # microseconds, where time has milliseconds
        out["time_dt"] = ts
    event = doc.get("event") or {}
    outcome = event.get("outcome")
    if outcome == "success":
        out["status_id"], out["status"] = SUCCESS, "Success"
    elif outcome == "failure":
        out["status_id"], out["status"] = FAILURE, "Failure"
    err = doc.get("error")
    if err:
        out["status_code"] = err["code"]
        out["status_detail"] = err["message"]
    return out


_METADATA: dict[tuple[object, object], dict[str, Any]] = {}


def metadata(doc: dict[str, Any]) -> dict[str, Any]:
    """``metadata``: the product, the schema version and profiles, and where in Vigil's own
    vocabulary the event comes from (``log_name``: the ECS dataset, ``event_code``: the ECS
    action). Shared between documents of the same dataset and action."""
    event = doc.get("event") or {}
    key = (event.get("dataset"), event.get("action"))
    hit = _METADATA.get(key)
    if hit is None:
        hit = {"version": OCSF_VERSION, "product": PRODUCT, "profiles": list(PROFILES)}
        if isinstance(key[0], str):
            hit["log_name"] = key[0]
        if isinstance(key[1], str):
            hit["event_code"] = key[1]
        if len(_METADATA) < 1024:
            _METADATA[key] = hit
    return hit


def with_labels(meta: dict[str, Any], tags: list[str]) -> dict[str, Any]:
    """``metadata`` with ``labels`` (a FIM directory's tags): a copy, the shared one stays."""
    return {**meta, "labels": list(tags)} if tags else meta


_DEVICES: dict[int, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}


def device(host: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(``device``, what of the ECS ``host`` OCSF has no attribute for), built once per host
    object (the caller keeps one for the agent's life)."""
    if not host:
        return None, {}
    hit = _DEVICES.get(id(host))
    if hit is None or hit[0] is not host:
        dev, rest = _device(host)
        if len(_DEVICES) >= 64:
            _DEVICES.clear()
        hit = _DEVICES[id(host)] = (host, dev, rest)   # the host kept: its id stays its own
    return hit[1], hit[2]


def _device(host: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    dev: dict[str, Any] = {"type_id": 0, "type": "Unknown"}
    rest: dict[str, Any] = {}
    for key, value in host.items():
        if key in ("hostname", "name") and isinstance(value, str) and value:
            dev[key] = value
        elif key == "os" and isinstance(value, dict):
            os_: dict[str, Any] = {"name": "Linux", "type_id": 200, "type": "Linux"}
            for k, v in value.items():
                if k == "kernel":
                    os_["kernel_release"] = v
                elif k == "version":
                    os_["version"] = str(v)
                elif k == "name":
                    os_["name"] = str(v)
                else:
                    rest.setdefault("os", {})[k] = v
            dev["os"] = os_
        elif key == "architecture" and isinstance(value, str):
            arch = _ARCH.get(value, OTHER)
            dev["hw_info"] = {"cpu_architecture_id": arch, "cpu_architecture":
                              {1: "x86", 2: "ARM", 3: "RISC-V"}.get(arch, value)}
            if arch == OTHER:
                rest["architecture"] = value
        else:
            rest[key] = value
    if "hostname" not in dev and "name" not in dev:
        dev["name"] = "unknown"
    return dev, rest


def finish(out: dict[str, Any], doc: dict[str, Any], host: dict[str, Any] | None,
           unmapped: dict[str, Any] | None = None) -> dict[str, Any]:
    """Adds ``device`` (this host) and ``unmapped``: the ECS ``vigil`` object, what of the
    host and of the event OCSF has no attribute for (``unmapped`` here, by ECS name)."""
    dev, host_rest = device(host if host is not None else doc.get("host"))
    if dev is not None:
        out["device"] = dev
    um: dict[str, Any] = dict(unmapped) if unmapped else {}
    vig = doc.get("vigil")
    if vig:
        um["vigil"] = vig
    if host_rest:
        um["host"] = host_rest
    if um:
        out["unmapped"] = um
    return out


def put(um: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """``um[path[0]][path[1]]... = value``: the levels below ``um`` are copied, never changed
    (they may be shared with other documents)."""
    d = um
    for p in path[:-1]:
        d[p] = dict(d.get(p) or {})
        d = d[p]
    d[path[-1]] = value


def ms(ns: int | None) -> int | None:
    return None if ns is None else ns // 1_000_000
