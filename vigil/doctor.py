"""`vigil doctor`: what this host offers eBPF-wise and which backend Vigil will use, and why.

Owns collecting the facts (through vigil.kernel.probes/mounts/libbpf) and rendering them as
compact text; to_dict() is what the CLI prints for --json. It does not parse arguments
(vigil.cli) and does not probe anything itself: every answer comes from a measurement.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from vigil.kernel import libbpf, mounts, probes
from vigil.kernel.backend import TRACEPOINT_BLIND_SPOTS
from vigil.kernel.errors import VigilError
from vigil.kernel.ringbuf import ORDERED_ARCHES

# Backends from best to most universal: (name, probes it needs, implemented yet).
_BACKENDS: list[tuple[str, tuple[str, ...], bool]] = [
    ("lsm", ("lsm", "ringbuf"), False),
    ("fentry", ("fentry", "ringbuf"), False),
    ("kprobe", ("kprobe", "ringbuf"), False),
    ("tracepoint", ("tracepoint", "ringbuf"), True),
]


@dataclass
class BackendChoice:
    chosen: str | None
    reason: str
    rejected: dict[str, str] = field(default_factory=dict)  # backend -> why not
    blind_spots: tuple[str, ...] = ()  # what the chosen backend cannot see


@dataclass
class DoctorReport:
    kernel_release: str
    architecture: str
    btf_source: str | None
    btf_size: int | None
    lockdown: str | None
    active_lsms: list[str] | None
    bpf_lsm_active: bool | None
    libbpf_version: str | None
    probes: list[probes.Probe]
    ringbuf: bool | None
    backend: BackendChoice
    mounted_now: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def can_run(self) -> bool:
        return self.backend.chosen is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["can_run"] = self.can_run
        return d


def _choose(results: dict[str, probes.Probe]) -> BackendChoice:
    rejected: dict[str, str] = {}
    unknown: list[probes.Probe] = []
    for name, needs, implemented in _BACKENDS:
        failed = [results[n] for n in needs if results[n].available is False]
        unsure = [results[n] for n in needs if results[n].available is None]
        if failed:
            rejected[name] = "; ".join(f"{p.name} probe: {p.detail}" for p in failed)
        elif unsure:
            # The details are in the probe list already; repeating them per backend is noise.
            names = ", ".join(p.name for p in unsure)
            rejected[name] = f"cannot tell: {names} probe(s) inconclusive"
            unknown.extend(unsure)
        elif not implemented:
            rejected[name] = "kernel supports it, but Vigil does not implement it yet"
        else:
            spots = TRACEPOINT_BLIND_SPOTS if name == "tracepoint" else ()
            return BackendChoice(name, "its probes passed", rejected, spots)
    if unknown:
        return BackendChoice(None, f"cannot tell whether Vigil can run here ({unknown[0].detail})",
                             rejected)
    return BackendChoice(None, "Vigil cannot run here: no implemented backend passed its probes",
                         rejected)


def collect() -> DoctorReport:
    """Measure everything (mounting tracefs/bpffs/securityfs first when root)."""
    problems: list[str] = []
    mounted_now: list[str] = []
    if os.geteuid() == 0:
        try:
            mounted_now = [str(p) for p in mounts.ensure_mounted()]
        except VigilError as e:
            problems.append(str(e))
    else:
        problems.append("not running as root: probes that need privileges are inconclusive")
    if platform.machine() not in ORDERED_ARCHES:
        problems.append(f"the ring buffer reader needs a strongly ordered CPU (x86); this is "
                        f"{platform.machine()}: `vigil run` will refuse to start")
    try:
        major, minor = libbpf.version()
        libbpf_version: str | None = f"{major}.{minor}"
    except VigilError as e:
        libbpf_version = None
        problems.append(str(e))
    results = {p.name: p for p in probes.run_all()}
    btf = probes.KERNEL_BTF
    uname = os.uname()
    return DoctorReport(
        kernel_release=uname.release,
        architecture=uname.machine,
        btf_source=str(btf) if btf.is_file() else None,
        btf_size=btf.stat().st_size if btf.is_file() else None,
        lockdown=probes.lockdown_mode(),
        active_lsms=probes.active_lsms(),
        bpf_lsm_active=probes.bpf_lsm_active(),
        libbpf_version=libbpf_version,
        probes=list(results.values()),
        ringbuf=probes.have_ringbuf() if libbpf_version else None,
        backend=_choose(results),
        mounted_now=mounted_now,
        problems=problems,
    )


def _yn(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def render(report: DoctorReport) -> str:
    r = report
    btf = f"{r.btf_source} ({(r.btf_size or 0) / 1e6:.1f} MB)" if r.btf_source else "none"
    lines = [
        f"kernel        {r.kernel_release} ({r.architecture})",
        f"kernel BTF    {btf}",
        f"lockdown      {r.lockdown or 'unknown (securityfs not readable)'}",
        f"LSMs          {','.join(r.active_lsms) if r.active_lsms is not None else 'unknown'}"
        f"  (BPF LSM active: {_yn(r.bpf_lsm_active)})",
        f"libbpf        {r.libbpf_version or 'missing'}",
        f"ring buffer   {_yn(r.ringbuf)}",
    ]
    if r.mounted_now:
        lines.append(f"mounted       {', '.join(r.mounted_now)}")
    lines.append("probes")
    width = max(len(p.name) for p in r.probes) if r.probes else 0
    for p in r.probes:
        mark = {True: "ok  ", False: "no  ", None: "??  "}[p.available]
        lines.append(f"  {mark}{p.name:<{width}}  {p.detail}")
    b = r.backend
    if b.chosen:
        lines.append(f"backend       {b.chosen} ({b.reason})")
    else:
        lines.append(f"backend       none: {b.reason}")
    for name, why in b.rejected.items():
        lines.append(f"  not {name}: {why}")
    for gap in b.blind_spots:
        lines.append(f"  cannot see: {gap}")
    lines.extend(f"problem       {p}" for p in r.problems)
    return "\n".join(lines)
