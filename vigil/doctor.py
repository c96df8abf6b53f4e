"""`vigil doctor`: what this host offers eBPF-wise and which backend Vigil will use, and why.

Owns collecting the facts (through vigil.kernel.probes/mounts/libbpf) and rendering them as
compact text; to_dict() is what the CLI prints for --json. It does not parse arguments
(vigil.cli) and does not probe anything itself: every answer comes from a measurement.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from vigil import ownfiles, sysctl, watchlist
from vigil.config import Config, load_config
from vigil.fim import mounts as fim_mounts
from vigil.kernel import libbpf, mounts, probes, sec_hooks, uprobes
from vigil.kernel.backend import BackendSettings, choose_event_buffer
from vigil.kernel.btf_source import BtfSource, resolve_btf
from vigil.kernel.choose import plan_backends
from vigil.kernel.errors import VigilError


@dataclass
class BackendChoice:
    chosen: str | None
    reason: str
    rejected: dict[str, str] = field(default_factory=dict)  # backend -> why not
    blind_spots: tuple[str, ...] = ()  # what the chosen backend cannot see
    available: list[str] = field(default_factory=list)  # every backend that can run, best first
    notes: list[str] = field(default_factory=list)


@dataclass
class DoctorReport:
    kernel_release: str
    architecture: str
    btf_source: str | None  # the kernel's own BTF, when it has one
    btf_size: int | None
    lockdown: str | None
    active_lsms: list[str] | None
    bpf_lsm_active: bool | None
    libbpf_version: str | None
    probes: list[probes.Probe]
    ringbuf: bool | None
    backend: BackendChoice
    event_buffer: str = "ring"  # what `vigil run` would read events from: ring or perf
    event_buffer_reason: str = ""
    mounted_now: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # The BTF `vigil run` would relocate against here (vigil.kernel.btf_source: --btf is not a
    # doctor option, VIGIL_BTF and VIGIL_BTF_ARCHIVE are honoured), and its kind: kernel, file,
    # tailored; None when there is none.
    btf_in_use: str | None = None
    btf_in_use_kind: str | None = None
    # The kernel's watch list for the configuration: roots and symlink aliases (vigil.watchlist)
    watch_roots: list[str] = field(default_factory=list)
    aliases: list[dict[str, str]] = field(default_factory=list)
    # Filesystems mounted below watched directories that the baseline walk does not enter
    # (vigil.fim.mounts: `mounts: skip`, and pseudo filesystems always)
    fim_mounts_skipped: list[str] = field(default_factory=list)
    # Shell commands (vigil.kernel.uprobes): whether the config asks for them, why the kernel
    # cannot take uprobes ("" when it can), and per binary found: where its readline is, or
    # why it cannot be hooked
    shell_enabled: bool = True
    shell_unavailable: str = ""
    shell_binaries: list[dict[str, str]] = field(default_factory=list)
    # Always watched, whatever the configuration says: Vigil's own files (vigil.ownfiles; the
    # rules `vigil run --rules` adds are not known here) and the kernel's security knobs
    # (vigil.sysctl) this kernel has, with their values now
    own_files: list[dict[str, str]] = field(default_factory=list)
    sysctl_knobs: list[dict[str, str]] = field(default_factory=list)

    @property
    def can_run(self) -> bool:
        return self.backend.chosen is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["can_run"] = self.can_run
        return d


def _choose(btf: BtfSource | None, btf_error: str) -> BackendChoice:
    """The backend `vigil run` would start: the best whose probes passed and whose hooked
    functions' prototypes are known in the BTF it would use (vigil.kernel.choose.plan_backends;
    a BTF that is not the kernel's own rules out the LSM and fentry backends)."""
    if btf is None:
        return BackendChoice(None, f"no BTF to relocate the programs against: {btf_error}")
    try:
        cands = plan_backends(BackendSettings(btf_custom_path=btf.custom_path))
    except VigilError as e:
        return BackendChoice(None, f"cannot plan backends: {e}")
    available = [p.backend for p in cands.plans]
    if not cands.plans:
        return BackendChoice(None, "Vigil cannot run here: every backend is ruled out (below)",
                             cands.rejected)
    best = cands.plans[0]
    return BackendChoice(best.backend, "its probes passed and its hook prototypes are known",
                         cands.rejected, best.blind_spots + sec_hooks.module_gap(), available,
                         list(best.notes))


def _watch_list(config: Config) -> tuple[list[str], list[dict[str, str]]]:
    roots = [os.fsdecode(p) for p in watchlist.kernel_watch_paths(config)]
    aliases = [{"link": os.fsdecode(a.link), "target": os.fsdecode(a.target),
                "found_by": a.found_by} for a in watchlist.static_aliases(config)]
    return roots, aliases


def _own_files(config: Config) -> list[dict[str, str]]:
    from vigil.rules.ruleset import rule_paths

    if not config.rules.enabled:
        return []
    return [{"path": os.fsdecode(f.path), "what": f.what,
             "kind": "directory" if f.is_dir else "file"}
            for f in ownfiles.configured_sources(config, rule_paths(config.rules))]


def collect(config: Config | None = None) -> DoctorReport:
    """Measure everything (mounting tracefs/bpffs/securityfs first when root); the watch list
    is the one ``config`` gives (default: the embedded configuration)."""
    problems: list[str] = []
    mounted_now: list[str] = []
    if os.geteuid() == 0:
        try:
            mounted_now = [str(p) for p in mounts.ensure_mounted()]
        except VigilError as e:
            problems.append(str(e))
    else:
        problems.append("not running as root: probes that need privileges are inconclusive")
    try:
        major, minor = libbpf.version()
        libbpf_version: str | None = f"{major}.{minor}"
    except VigilError as e:
        libbpf_version = None
        problems.append(str(e))
    in_use: BtfSource | None = None
    btf_error = ""
    try:
        in_use = resolve_btf()
    except VigilError as e:
        btf_error = str(e)
        problems.append(btf_error)
    probes.use_btf(in_use.custom_path if in_use else None)
    results = {p.name: p for p in probes.run_all()}
    event_buffer, why = choose_event_buffer()
    btf = probes.KERNEL_BTF
    uname = os.uname()
    cfg = config if config is not None else load_config(None)
    roots, aliases = _watch_list(cfg)
    shell = [{"hook": t.hook.name, "binary": t.binary, "status": t.status,
              "probe_on": t.attach_path or "", "found_in": t.found_in, "detail": t.detail}
             for t in uprobes.plan()] if cfg.shell.enabled else []
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
        backend=_choose(in_use, btf_error),
        event_buffer=event_buffer,
        event_buffer_reason=why,
        mounted_now=mounted_now,
        problems=problems,
        btf_in_use=in_use.describe() if in_use else None,
        btf_in_use_kind=in_use.kind if in_use else None,
        watch_roots=roots,
        aliases=aliases,
        fim_mounts_skipped=fim_mounts.describe_skipped(cfg),
        shell_enabled=cfg.shell.enabled,
        shell_unavailable=uprobes.unavailable(),
        shell_binaries=shell,
        own_files=_own_files(cfg),
        sysctl_knobs=sysctl.SysctlWatch().described(),
    )


def _yn(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _shell_lines(r: DoctorReport) -> list[str]:
    if not r.shell_enabled:
        return ["shell         off (the configuration's shell section)"]
    if r.shell_unavailable:
        return [f"shell         not reported: {r.shell_unavailable}"]
    ok = [b for b in r.shell_binaries if b["status"] == "ready"]
    out = [f"shell         commands typed into {len(ok)} of {len(r.shell_binaries)} bash "
           "binaries found (a uretprobe on readline)"]
    for b in r.shell_binaries:
        on = f" -> {b['probe_on']}" if b["probe_on"] not in ("", b["binary"]) else ""
        if b["status"] == "ready":
            out.append(f"  ok  {b['binary']}{on}: readline in {b['found_in']}")
        else:
            out.append(f"  no  {b['binary']}: {b['status']} ({b['detail']})")
    return out


_WEAKENS = {"lower": "lower", "higher": "higher", "zero": "0", "bits": "a function is allowed",
            "any": "changed"}


def _always_watched(r: DoctorReport) -> list[str]:
    """Vigil's own files and the security knobs: watched whatever the configuration says."""
    if r.own_files:
        out = [f"own files     {len(r.own_files)} paths always watched for the rules "
               "(vigil.protected: self; a change by another process is an alert)"]
        out += [f"  {f['what']:<12}{f['path']}{'/' if f['kind'] == 'directory' else ''}"
                for f in r.own_files]
    else:
        out = ["own files     not watched: detection rules are off"]
    out.append(f"sysctl        {len(r.sysctl_knobs)} security knobs always watched, every "
               "backend (a write is reported old -> new: vigil.sysctl)")
    out += [f"  {k['name']:<34}{k['value']:<12}weaker when {_WEAKENS[k['weakens']]}"
            for k in r.sysctl_knobs]
    return out


def render(report: DoctorReport) -> str:
    r = report
    btf = f"{r.btf_source} ({(r.btf_size or 0) / 1e6:.1f} MB)" if r.btf_source else "none"
    lines = [
        f"kernel        {r.kernel_release} ({r.architecture})",
        f"kernel BTF    {btf}",
        f"BTF in use    {r.btf_in_use or 'none'}",
        f"lockdown      {r.lockdown or 'unknown (securityfs not readable)'}",
        f"LSMs          {','.join(r.active_lsms) if r.active_lsms is not None else 'unknown'}"
        f"  (BPF LSM active: {_yn(r.bpf_lsm_active)})",
        f"libbpf        {r.libbpf_version or 'missing'}",
        f"ring buffer   {_yn(r.ringbuf)}",
        f"event buffer  {r.event_buffer} ({r.event_buffer_reason})",
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
    if len(b.available) > 1:
        lines.append(f"  also possible: {', '.join(b.available[1:])}")
    for name, why in b.rejected.items():
        lines.append(f"  not {name}: {why}")
    lines.extend(f"  note: {n}" for n in b.notes)
    for gap in b.blind_spots:
        lines.append(f"  cannot see: {gap}")
    lines.append(f"watch list    {len(r.watch_roots)} roots, {len(r.aliases)} symlink aliases "
                 "(symlinks into watched trees, matched like the trees)")
    lines.extend(f"  alias {a['link']} -> {a['target']} ({a['found_by']})" for a in r.aliases)
    lines.append("  and, while running: symlinks the baseline walks record in watched trees, "
                 "and new ones as they are created")
    lines.append(f"FIM mounts    {len(r.fim_mounts_skipped) or 'no'} filesystems mounted below "
                 "watched directories left out of the baseline (`mounts: skip`, pseudo "
                 "filesystems)")
    lines.extend(f"  skipped {m}" for m in r.fim_mounts_skipped)
    lines.extend(_shell_lines(r))
    lines.extend(_always_watched(r))
    lines.extend(f"problem       {p}" for p in r.problems)
    return "\n".join(lines)
