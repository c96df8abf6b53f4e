"""Choosing a backend: the best whose probes pass, whose plan fits this kernel's prototypes
and which loads and attaches, falling back in order (and, within one backend, dropping a
program the kernel refuses for its fallbacks); and starting it early, on a thread, while the
rest of the agent is built (``EarlyStart``: the kernel's verifier takes most of a start and
runs without Python's lock). Does not own what a started backend does
(``vigil.kernel.backend``).
"""

from __future__ import annotations

import logging
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vigil.kernel import arch as archmod
from vigil.kernel import hooks, libbpf, probes
from vigil.kernel.backend import (
    OBJECT_NAME,
    BackendSettings,
    KernelBackend,
    choose_event_buffer,
    perf_variant,
)
from vigil.kernel.btf import Btf
from vigil.kernel.errors import KernelError, VerifierError, VigilError
from vigil.kernel.hooks import HookUnsupported, Plan
from vigil.kernel.loader import BpfObjectSpec, OpenObject, bundled_object
from vigil.kernel.mounts import ensure_mounted

# Python's switch interval while the kernel side starts on its thread (default 5 ms)
_START_SWITCH_S = 0.0005

if TYPE_CHECKING:
    from vigil.config import Config

log = logging.getLogger(__name__)


class NoBackendError(VigilError):
    """No backend can run here (or the one asked for cannot); says why for each."""

    def __init__(self, rejected: dict[str, str], forced: str | None = None) -> None:
        self.rejected = rejected
        why = "\n".join(f"  {name}: {reason}" for name, reason in rejected.items())
        head = (f"the {forced} backend cannot run here" if forced
                else "no backend can run on this kernel")
        super().__init__(f"{head}:\n{why}")


@dataclass
class Candidates:
    """Backends that may run here, best first, and why each other one may not."""

    plans: list[Plan]
    rejected: dict[str, str]


def jit_problem(machine: str | None = None, jit_on: bool | None = None) -> str | None:
    """Why Vigil's programs cannot load on a 32-bit kernel whose BPF JIT is on, or None.

    The 32-bit JITs (arm, x86) cannot compile BPF-to-BPF calls, so a program with such calls
    runs in the interpreter while one without is compiled; and a tail-call map refuses to mix
    compiled and interpreted programs (the kernel's bpf_prog_map_compatible). With the JIT off
    every program is interpreted, which is Debian's default on those kernels."""
    if archmod.bits(machine or platform.machine()) != 32:
        return None
    if not (probes.bpf_jit_enabled() if jit_on is None else jit_on):
        return None
    return (f"the BPF JIT is on ({probes.BPF_JIT_SYSCTL} != 0), and a 32-bit kernel's JIT "
            "cannot compile the BPF-to-BPF calls of the programs its tail calls reach; set "
            "net.core.bpf_jit_enable=0 (the kernel then interprets them all)")


def plan_backends(settings: BackendSettings, forced: str | None = None,
                  obj_path: Path | None = None, spec: OpenObject | None = None) -> Candidates:
    """Probes and prototypes decide; nothing is loaded but the probe programs.

    tracefs and bpffs are mounted first (a fresh boot has neither), so that the tracepoint
    probe answers for the kernel and not for the boot's mount table. The programs are those of
    ``spec`` when given (an opened build of the same object), else of the object, opened here.
    The BTF is parsed only for a backend whose probes passed and which reads prototypes."""
    if spec is None:
        with BpfObjectSpec.open(obj_path or bundled_object(OBJECT_NAME)) as opened:
            return plan_backends(settings, forced, obj_path, opened)
    ensure_mounted(securityfs=False)
    names = list(hooks.BACKENDS) if forced in (None, "auto") else [str(forced)]
    programs = [hooks.Program(p.name, p.section) for p in spec.programs]
    btf_path, own = hooks.kernel_btf_path(settings.btf_custom_path)
    btf: Btf | None = None
    btf_error = ""

    def parsed_btf() -> Btf | None:
        nonlocal btf, btf_error
        if btf is None and not btf_error and btf_path is not None:
            try:
                btf = Btf.parse(btf_path)
            except KernelError as e:
                btf_error = f"cannot read BTF {btf_path}: {e}"
        return btf

    out = Candidates([], {})
    probes.use_btf(settings.btf_custom_path)
    jit = jit_problem()
    for name in names:
        if jit:
            out.rejected[name] = jit
            continue
        failed = [probes.probe(n) for n in hooks.NEEDED_PROBES[name]]
        bad = [p for p in failed if p.available is not True]
        if bad:
            out.rejected[name] = "; ".join(f"{p.name} probe: {p.detail}" for p in bad)
            continue
        try:
            if name != "tracepoint" and parsed_btf() is None and btf_error:
                raise HookUnsupported(btf_error)
            out.plans.append(hooks.plan(name, programs, btf=btf, kernel_btf=own))
        except HookUnsupported as e:
            out.rejected[name] = str(e)
    if btf is not None:
        btf.close()
    return out


def release_freed_memory() -> None:
    """The start's transient memory (the kernel BTF parsed twice, the probes, the rule files'
    parse) given back to the system: glibc keeps freed heap pages mapped otherwise, about
    12 MB of the agent's RSS for its whole life. Not glibc: nothing to do."""
    trim = getattr(libbpf.libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def start_backend(settings: BackendSettings, forced: str | None = None,
                  obj_path: Path | None = None) -> tuple[KernelBackend, dict[str, str]]:
    """The best backend that loads and attaches, started; and why better ones were skipped.

    A backend whose probes passed but whose programs fail to load or attach is skipped with
    the kernel's reason; with ``forced`` that failure is the error."""
    with open_first(settings, obj_path) as first:
        return _start_first_working(settings, forced, obj_path, first)


def open_first(settings: BackendSettings, obj_path: Path | None) -> OpenObject:
    """The object the first backend will load (the build for the event buffer it will use),
    opened once: the plan lists its programs, the backend configures and loads it. Opening the
    object parses its ELF and BTF, a tenth of a start."""
    ensure_mounted(securityfs=False)
    buffer, _ = choose_event_buffer(settings.event_buffer)
    path = obj_path or bundled_object(OBJECT_NAME)
    return BpfObjectSpec.open(perf_variant(path) if buffer == "perf" else path,
                              btf_custom_path=settings.btf_custom_path)


def _start_first_working(settings: BackendSettings, forced: str | None,
                         obj_path: Path | None,
                         first: OpenObject) -> tuple[KernelBackend, dict[str, str]]:
    cands = plan_backends(settings, forced, obj_path, spec=first)
    rejected = dict(cands.rejected)
    if forced not in (None, "auto") and not cands.plans:
        raise NoBackendError(rejected, forced)
    opened: OpenObject | None = first  # given to the first attempt; later ones open their own
    for plan in cands.plans:
        while True:
            backend = KernelBackend(settings, plan, obj_path, opened=opened)
            opened = None
            try:
                started = backend.start()
                release_freed_memory()
                return started, rejected
            except VerifierError as e:
                if e.program not in plan.fallbacks:
                    err: KernelError = e
                    break
                plan = plan.without(e.program, e.summary.strip().splitlines()[-1]
                                    if e.summary.strip() else "verifier")
                log.info("%s", plan.notes[-1])
            except KernelError as e:
                err = e
                break
        if forced not in (None, "auto"):
            raise err
        rejected[plan.backend] = f"probes passed but loading failed: {err}"
        log.warning("the %s backend failed to start, falling back: %s", plan.backend, err)
    raise NoBackendError(rejected)


def settings_for(config: Config, btf_path: str | None = None,
                 event_buffer: str = "auto") -> BackendSettings:
    """The kernel side's settings from the configuration (the agent's and ``EarlyStart``'s)."""
    return BackendSettings(
        ring_bytes=config.ring_buffer_mb << 20,
        failed_errnos=config.failed_errnos,
        btf_custom_path=btf_path,
        event_buffer=event_buffer,
        network=config.network,
        shell=config.shell.enabled,
    )


class EarlyStart:
    """``start_backend`` on a thread, begun as soon as the configuration is read: probes,
    load (the verifier, without Python's lock) and attach run while the rules, the outputs
    and the agent are built. Events the programs send meanwhile wait in the ring.

    ``result()`` gives what ``start_backend`` returns, or raises what it raised; ``cancel()``
    (the start abandoned: an error elsewhere, a signal) closes a backend nobody took."""

    def __init__(self, settings: BackendSettings, forced: str | None = None,
                 obj_path: Path | None = None) -> None:
        self.settings = settings
        self._result: tuple[KernelBackend, dict[str, str]] | None = None
        self._error: BaseException | None = None
        self._taken = False
        # The thread's Python parts (probes, libbpf's messages) wait for the lock while the
        # main thread compiles the rules: handed over more often until it is done.
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(_START_SWITCH_S)
        self._thread = threading.Thread(target=self._run, args=(forced, obj_path),
                                        name="vigil-kernel-start", daemon=True)
        self._thread.start()

    def _run(self, forced: str | None, obj_path: Path | None) -> None:
        try:
            self._result = start_backend(self.settings, forced, obj_path)
        except BaseException as e:   # handed to the caller of result()
            self._error = e
        finally:
            sys.setswitchinterval(self._switch)

    def result(self) -> tuple[KernelBackend, dict[str, str]]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        self._taken = True
        return self._result

    def cancel(self) -> None:
        self._thread.join()
        if self._result is not None and not self._taken:
            self._taken = True
            self._result[0].close()
