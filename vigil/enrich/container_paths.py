"""Which container a cgroup path names: the runtime, the container id, the Kubernetes pod uid.

Owns the pure parsing of cgroup paths (cgroup v2 ``0::/path`` lines and v1
``N:controllers:/path`` lines of /proc/PID/cgroup) into a ``CgroupMatch``. No file is read here:
the runtimes' state (names, images) is ``vigil.enrich.container_state``'s, the cache and the
cgroup-id lookups ``vigil.enrich.containers``'.

The layouts recognised, one path component at a time from the root down; the outermost container
wins (the one the host's runtime knows; a container nested in it is part of what it does):

- docker: ``docker-<64hex>.scope`` (systemd driver), ``/docker/<64hex>`` (cgroupfs driver)
- containerd: ``cri-containerd-<64hex>.scope`` (CRI, systemd driver), ``nerdctl-<64hex>.scope``
- cri-o: ``crio-<64hex>[.scope]`` (``crio-conmon-<id>`` is its monitor, not the container)
- podman: ``libpod-<64hex>[.scope]`` (``libpod-conmon-<id>`` is its monitor), rootful or
  rootless (under ``user@UID.service``)
- Kubernetes with the cgroupfs driver: ``/kubepods/<qos>/pod<uid>/<64hex>``: the runtime is not
  in the path (``runtime`` is ``"cri"``; the state on disk tells which one)
- systemd-nspawn: ``machine-<escaped name>.scope`` (libvirt's ``machine-qemu…`` VMs are not
  containers; libvirt's ``machine-lxc…`` are lxc)
- lxc / LXD: ``lxc.payload.<name>``, ``lxc.payload/<name>``, ``/lxc/<name>`` (``lxc.monitor``
  is the monitor)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

DOCKER: Final = "docker"
CONTAINERD: Final = "containerd"
CRIO: Final = "cri-o"
PODMAN: Final = "podman"
NSPAWN: Final = "systemd-nspawn"
LXC: Final = "lxc"
CRI: Final = "cri"  # a Kubernetes container whose runtime the path does not say

MAX_PATH: Final = 4096  # a longer cgroup path is not parsed (the kernel's PATH_MAX)
MAX_NAME: Final = 256   # a machine or lxc name longer than this is not taken

_HEX64 = r"([0-9a-f]{64})"
# One component -> (runtime, id). Monitors never match: their prefix is followed by "conmon-".
_SCOPES: Final = (
    (re.compile(rf"docker-{_HEX64}\.scope"), DOCKER),
    (re.compile(rf"cri-containerd-{_HEX64}\.scope"), CONTAINERD),
    (re.compile(rf"nerdctl-{_HEX64}\.scope"), CONTAINERD),
    (re.compile(rf"crio-{_HEX64}(?:\.scope)?"), CRIO),
    (re.compile(rf"libpod-{_HEX64}(?:\.scope)?"), PODMAN),
)
_BARE_ID: Final = re.compile(_HEX64)
_POD_CGROUPFS: Final = re.compile(r"pod([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})")
_POD_SYSTEMD: Final = re.compile(
    r"kubepods(?:-[a-z]+)?-pod([0-9a-f]{8}(?:_[0-9a-f]{4}){3}_[0-9a-f]{12})\.slice")
_MACHINE: Final = re.compile(r"machine-(.+)\.scope")
_LXC_PAYLOAD: Final = re.compile(r"lxc\.payload\.(.+)")
_NAME_OK: Final = re.compile(r"[\w.@:+-]+", re.ASCII)
_ESCAPE: Final = re.compile(r"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True, slots=True)
class CgroupMatch:
    """What a cgroup path says: ``id`` is the runtime's container id (64 hex digits), or the
    machine's / lxc container's name for systemd-nspawn and lxc."""

    runtime: str
    id: str
    pod_uid: str | None = None


def unescape_unit(name: str) -> str | None:
    """A systemd unit name part unescaped (``\\x2d`` -> ``-``, ``\\x5c`` -> ``\\``); None when
    the result is not printable text (an escape of a control character, a bad sequence)."""
    try:
        out = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)
    except ValueError:
        return None
    return out if out.isprintable() else None


def _machine(comp: str) -> CgroupMatch | None:
    m = _MACHINE.fullmatch(comp)
    if m is None:
        return None
    name = unescape_unit(m.group(1))
    if not name or len(name) > MAX_NAME or name.startswith("libpod"):
        return None  # podman's machine-libpod_pod_<id>.slice is a slice, but be sure
    if name.startswith("qemu-"):
        return None  # a libvirt virtual machine: its qemu process runs on the host
    lxc = re.fullmatch(r"lxc-\d+-(.+)", name)  # libvirt-lxc: machine-lxc\x2dPID\x2dNAME.scope
    if lxc:
        return CgroupMatch(LXC, lxc.group(1))
    return CgroupMatch(NSPAWN, name)


def parse_path(path: str) -> CgroupMatch | None:
    """The container a cgroup path (``/system.slice/docker-<id>.scope``...) names, or None."""
    if not path.startswith("/") or len(path) > MAX_PATH:
        return None
    comps = [c for c in path.split("/") if c]
    pod_uid: str | None = None
    for i, comp in enumerate(comps):
        parent = comps[i - 1] if i else ""
        if (m := _POD_SYSTEMD.fullmatch(comp)) is not None:
            pod_uid = m.group(1).replace("_", "-")
            continue
        if (m := _POD_CGROUPFS.fullmatch(comp)) is not None and i >= 1 \
                and comps[0] in ("kubepods", "kubepods.slice"):
            pod_uid = m.group(1)
            continue
        for rx, runtime in _SCOPES:
            if (m := rx.fullmatch(comp)) is not None:
                return CgroupMatch(runtime, m.group(1), pod_uid)
        if (m := _BARE_ID.fullmatch(comp)) is not None:
            if parent == "docker":
                return CgroupMatch(DOCKER, m.group(1), pod_uid)
            if pod_uid is not None:
                return CgroupMatch(CRI, m.group(1), pod_uid)
        if parent == "machine.slice" and (nm := _machine(comp)) is not None:
            return nm
        if (m := _LXC_PAYLOAD.fullmatch(comp)) is not None:
            return _named(LXC, m.group(1))
        if parent in ("lxc", "lxc.payload") and i == 1:
            return _named(LXC, comp)
    return None


def _named(runtime: str, name: str) -> CgroupMatch | None:
    if len(name) > MAX_NAME or _NAME_OK.fullmatch(name) is None:
        return None
    return CgroupMatch(runtime, name)


def parse_proc_cgroup(text: str) -> tuple[str | None, CgroupMatch | None]:
    """(the cgroup v2 path, the container) of /proc/PID/cgroup's text. The v2 line decides; a
    host whose containers are in v1 hierarchies only (the v2 path names none) falls back to the
    v1 lines, ``name=systemd``'s first. A malformed line is skipped."""
    v2: str | None = None
    v1: list[tuple[bool, str]] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif hid.isdigit():
            v1.append((controllers != "name=systemd", path))
    if v2 is not None and (found := parse_path(v2)) is not None:
        return v2, found
    for _, path in sorted(v1, key=lambda c: c[0]):
        if (found := parse_path(path)) is not None:
            return v2, found
    return v2, None
