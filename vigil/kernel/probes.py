"""Feature probes: learn what this kernel can do by trying it, never by parsing its version.

Like cilium/ebpf's features/ package: each probe loads one tiny program from
bpf/probes.bpf.c, attaches it, detaches it and reports a Probe(name, available, detail).
`available` is None when the answer is inconclusive (not root, libbpf missing, tracefs not
mounted); only conclusive answers are cached, so a later call as root measures again.
Detaching a tracepoint waits for an RCU grace period (~70 ms): the answer is known at attach,
so the teardown (detach, unload) runs on a background thread (``settle`` waits for it).
Also owns the small host facts read from files (kernel BTF, active LSMs, lockdown).
It does not choose a backend (vigil.doctor reports; the pipeline decides) and does not mount
anything (vigil.kernel.mounts).
"""

from __future__ import annotations

import errno as _errno
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vigil.kernel import libbpf, mounts
from vigil.kernel.errors import (
    BpfPermissionError,
    KernelError,
    LibbpfMissingError,
    VerifierError,
    errno_name,
)
from vigil.kernel.loader import BpfObjectSpec, Link, LoadedObject, bundled_object

KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")
RINGBUF_MAP = "probe_events"
PERFBUF_MAP = "probe_perf"


@dataclass(frozen=True)
class Probe:
    name: str
    available: bool | None  # None: could not tell (see detail)
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Spec:
    program: str
    since: str  # mainline release that brought it, for "needs X" messages
    needs_btf: bool = False
    needs_tracefs: bool = False


_SPECS: dict[str, _Spec] = {
    "tracepoint": _Spec("probe_tracepoint", "4.7", needs_tracefs=True),
    "raw_tp": _Spec("probe_raw_tp", "4.17"),
    "tp_btf": _Spec("probe_tp_btf", "5.5", needs_btf=True),
    "kprobe": _Spec("probe_kprobe", "4.1"),
    "fentry": _Spec("probe_fentry", "5.5", needs_btf=True),
    "lsm": _Spec("probe_lsm", "5.7", needs_btf=True),
    "ringbuf": _Spec("probe_ringbuf", "5.8", needs_tracefs=True),
    "perfbuf": _Spec("probe_perfbuf", "4.7", needs_tracefs=True),
    "d_path": _Spec("probe_d_path", "5.10", needs_btf=True),
}
PROBE_NAMES = tuple(_SPECS)
_cache: dict[str, Probe] = {}
# The BTF file libbpf relocates the probe object against (its d_path probe reads a kernel
# field), where the kernel has no BTF of its own: see use_btf().
_btf_custom_path: str | None = None


def use_btf(custom_path: str | None) -> None:
    """Probe with the BTF the agent will use (BtfSource.custom_path: None for the kernel's
    own). Without it, on a kernel built without BTF every probe would fail: libbpf needs some
    BTF to open an object that carries CO-RE relocations."""
    global _btf_custom_path
    if custom_path != _btf_custom_path:
        _btf_custom_path = custom_path
        _cache.clear()


# --- host facts read from files -------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def have_kernel_btf() -> bool:
    return KERNEL_BTF.is_file()


def active_lsms() -> list[str] | None:
    """The kernel's active LSMs in order, or None when securityfs is not readable."""
    text = _read(mounts.SECURITYFS / "lsm")
    return None if text is None else [x for x in text.split(",") if x]


def bpf_lsm_active() -> bool | None:
    lsms = active_lsms()
    return None if lsms is None else "bpf" in lsms


BPF_JIT_SYSCTL = Path("/proc/sys/net/core/bpf_jit_enable")


def bpf_jit_enabled() -> bool | None:
    """net.core.bpf_jit_enable != 0 (None if unknown)."""
    text = _read(BPF_JIT_SYSCTL)
    return None if text is None else text != "0"


def lockdown_mode() -> str | None:
    """'none', 'integrity' or 'confidentiality' (the bracketed one), None if unknown."""
    text = _read(mounts.SECURITYFS / "lockdown")
    if not text:
        return None
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return None


def have_ringbuf() -> bool | None:
    """Ring buffer maps exist and a program can write to one."""
    try:
        # Unprivileged, libbpf's map probe reports "no" for any EPERM: only trust it as root.
        if not libbpf.libbpf_probe_bpf_map_type(libbpf.BPF_MAP_TYPE_RINGBUF) \
                and os.geteuid() == 0:
            return False
    except LibbpfMissingError:
        return None
    except KernelError:
        pass  # the map-type probe itself failed; the program probe will tell
    return probe("ringbuf").available


# --- program probes -------------------------------------------------------------------------


def clear_cache() -> None:
    _cache.clear()


def probe(name: str) -> Probe:
    """Measure one feature (see PROBE_NAMES); conclusive answers are cached per process."""
    if name not in _SPECS:
        raise ValueError(f"unknown probe {name!r} (known: {', '.join(_SPECS)})")
    if name in _cache:
        return _cache[name]
    result = _measure(name, _SPECS[name])
    if result.available is not None:
        _cache[name] = result
    return result


def run_all() -> list[Probe]:
    return [probe(name) for name in _SPECS]


def _measure(name: str, spec: _Spec) -> Probe:
    if spec.needs_btf and not have_kernel_btf():
        return Probe(name, False, f"needs kernel BTF ({KERNEL_BTF}, Linux {spec.since}+ with "
                                  "CONFIG_DEBUG_INFO_BTF), this kernel has none")
    if spec.needs_tracefs and mounts.tracefs_root() is None:
        return Probe(name, None, "tracefs is not mounted, so tracepoints cannot be attached "
                                 "(vigil.kernel.mounts.ensure_mounted() mounts it)")
    path = bundled_object("probes")
    phase = "open"
    try:
        with BpfObjectSpec.open(path, btf_custom_path=_btf_custom_path) as spec_obj:
            for prog in spec_obj.programs:
                spec_obj.set_autoload(prog.name, prog.name == spec.program)
            if name == "ringbuf":
                # Ring buffer sizes must be a multiple of the page size (64 KiB on some arm64).
                spec_obj.set_max_entries(RINGBUF_MAP, os.sysconf("SC_PAGE_SIZE"))
            else:  # other probes must not fail because ring buffers are missing
                spec_obj.set_autocreate(RINGBUF_MAP, False)
            if name != "perfbuf":
                spec_obj.set_autocreate(PERFBUF_MAP, False)
            phase = "load"
            obj = spec_obj.load()
        try:
            phase = "attach"
            link = obj.attach(spec.program)
        except BaseException:
            obj.close()
            raise
        _tear_down(link, obj)
    except LibbpfMissingError as e:
        return Probe(name, None, str(e))
    except KernelError as e:
        return _failure(name, spec, phase, e)
    return _success(name)


_teardowns: list[threading.Thread] = []


def _tear_down(link: Link, obj: LoadedObject) -> None:
    """A probe's detach and unload, on a daemon thread: the kernel's part releases the GIL,
    and a process that exits first loses nothing (its fds close)."""
    def work() -> None:
        try:
            link.destroy()
        finally:
            obj.close()

    t = threading.Thread(target=work, name="vigil-probe-teardown", daemon=True)
    _teardowns[:] = [x for x in _teardowns if x.is_alive()]
    _teardowns.append(t)
    t.start()


def settle(timeout: float | None = None) -> None:
    """Waits until every probe program is detached and unloaded."""
    for t in list(_teardowns):
        t.join(timeout)


def _success(name: str) -> Probe:
    if name == "lsm" and bpf_lsm_active() is False:
        # The program loads and attaches, but the hooks never run unless "bpf" is in lsm=.
        return Probe(name, False, "loads and attaches, but the BPF LSM is not active "
                                  f"(active LSMs: {','.join(active_lsms() or [])}; "
                                  "needs lsm=...,bpf on the kernel command line)")
    return Probe(name, True, "loaded and attached")


def _failure(name: str, spec: _Spec, phase: str, e: KernelError) -> Probe:
    err = e.errno
    code = errno_name(err) if err else type(e).__name__
    since = f" (arrived in Linux {spec.since})"
    if phase == "open":  # a problem with our object file, not with the kernel
        return Probe(name, None, f"cannot open the probe object: {e}")
    if isinstance(e, BpfPermissionError) or err in (_errno.EPERM, _errno.EACCES):
        if os.geteuid() != 0:
            return Probe(name, None, f"{code} at {phase}: not root, cannot tell (run as root "
                                     "or with CAP_BPF+CAP_PERFMON)")
        return Probe(name, False, f"{code} at {phase}: the sandbox, lockdown or an LSM "
                                  "forbids it")
    if isinstance(e, VerifierError):
        last = e.summary.strip().splitlines()[-1] if e.summary.strip() else "no log"
        return Probe(name, False, f"rejected by the verifier at load: {last}{since}")
    if name == "kprobe" and phase == "attach" and not KPROBE_PMU.exists():
        return Probe(name, False, f"{code} at attach: no kprobe PMU ({KPROBE_PMU}); the kernel "
                                  "was built without kprobes (CONFIG_KPROBE_EVENTS)")
    return Probe(name, False, f"{code} at {phase}: {e}{since}")
