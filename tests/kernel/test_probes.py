"""Feature probes and mounts measured on the running kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vigil import doctor
from vigil.kernel import hooks, mounts, probes, sec_hooks

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load eBPF programs"),
]


@pytest.fixture(scope="module", autouse=True)
def _mounted() -> None:
    mounts.ensure_mounted()


def test_every_probe_is_conclusive_and_explained() -> None:
    probes.clear_cache()
    results = probes.run_all()
    assert [p.name for p in results] == list(probes.PROBE_NAMES)
    for p in results:
        assert p.available is not None, p
        assert p.detail, p
    by_name = {p.name: p for p in results}
    # The universal backend must work on every kernel Vigil supports.
    assert by_name["tracepoint"].available is True
    assert by_name["ringbuf"].available is True
    assert by_name["perfbuf"].available is True  # the event buffer of kernels < 5.8


def test_probes_agree_with_host_facts() -> None:
    by_name = {p.name: p for p in probes.run_all()}
    btf = Path("/sys/kernel/btf/vmlinux").exists()
    assert probes.have_kernel_btf() is btf
    for name in ("tp_btf", "fentry", "lsm", "d_path"):
        if not btf:
            assert by_name[name].available is False and "BTF" in by_name[name].detail
    if by_name["lsm"].available:
        assert probes.bpf_lsm_active() is True
    if by_name["kprobe"].available:
        assert Path("/sys/bus/event_source/devices/kprobe").exists() or \
            Path("/sys/kernel/tracing/kprobe_events").exists()
    assert probes.have_ringbuf() is by_name["ringbuf"].available


def test_conclusive_results_are_cached() -> None:
    probes.clear_cache()
    first = probes.probe("tracepoint")
    assert probes.probe("tracepoint") is first
    with pytest.raises(ValueError, match="tracepoint"):
        probes.probe("nope")


def test_host_facts() -> None:
    lsms = probes.active_lsms()
    assert lsms is not None and "capability" in lsms
    assert probes.lockdown_mode() in ("none", "integrity", "confidentiality")
    assert mounts.tracepoint_exists("syscalls", "sys_enter_openat")
    assert not mounts.tracepoint_exists("syscalls", "sys_enter_no_such_thing")


def choice_problems(measured: list[probes.Probe], choice: doctor.BackendChoice) -> list[str]:
    """Where the doctor's backend choice disagrees with the feature probes ``measured``: the
    chosen backend must be the best (hooks.BACKENDS order) whose needed probes all passed and
    that the doctor did not rule out for another reason (a prototype, a JIT); every backend
    with a failed probe must be rejected with that probe's own detail as its reason; a backend
    whose probes passed may be rejected only for a reason that is not a probe's."""
    by_name = {p.name: p for p in measured}
    problems = []
    best = None
    for name in hooks.BACKENDS:
        failed = [by_name[n] for n in hooks.NEEDED_PROBES[name] if by_name[n].available is not True]
        why = choice.rejected.get(name)
        if failed:
            if why is None:
                problems.append(f"{name}: probes {[p.name for p in failed]} failed, "
                                "but it is not rejected")
                continue
            problems += [f"{name}: rejected with {why!r}, which does not cite the failed "
                         f"{p.name} probe ({p.detail})" for p in failed
                         if f"{p.name} probe: {p.detail}" not in why]
        elif why is not None and " probe: " in why:
            problems.append(f"{name}: its probes passed, but it is rejected for a probe: {why}")
        elif why is None:
            best = best or name
    if choice.chosen != best:
        problems.append(f"chose {choice.chosen}, the probes and rejections say {best}")
    possible = [b for b in hooks.BACKENDS if b not in choice.rejected]
    if choice.available != possible:
        problems.append(f"lists {choice.available} as possible, not the unrejected {possible}")
    return problems


def test_doctor_reports_a_backend() -> None:
    # The probes measured afresh, apart from the doctor's own run
    probes.clear_cache()
    measured = probes.run_all()
    report = doctor.collect()
    text = doctor.render(report)
    assert report.kernel_release == os.uname().release
    assert [(p.name, p.available) for p in report.probes] == \
        [(p.name, p.available) for p in measured]
    assert choice_problems(measured, report.backend) == []
    chosen = report.backend.chosen
    assert chosen is not None and report.to_dict()["can_run"] is True
    assert f"backend       {chosen} (" in text
    for name, why in report.backend.rejected.items():
        assert f"  not {name}: {why}" in text
    # the product says what the chosen backend cannot see
    # the file hooks' blind spots, then the network's: through the socket syscalls (the
    # tracepoint backend, or a VFS backend's fallback) or the socket layer's functions
    # and the privilege and tampering part's (with the kernel's lack of modules, if it has none)
    sec = hooks.SEC_BLIND_SPOTS[chosen] + sec_hooks.module_gap()
    assert report.backend.blind_spots in (
        hooks.BLIND_SPOTS[chosen] + hooks.NET_BLIND_SPOTS_SYSCALLS + sec,
        *([hooks.BLIND_SPOTS[chosen] + hooks.NET_BLIND_SPOTS_FUNCS + sec]
          if chosen != "tracepoint" else []))
    for gap in report.backend.blind_spots:
        assert f"  cannot see: {gap}" in text


def test_ensure_mounted_on_a_fresh_namespace() -> None:
    # A private mount namespace without tracefs/bpffs/securityfs mimics a fresh boot; debugfs
    # goes too where the system mounts it (virtme-ng's guests): tracefs appears below it.
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    script = (
        "import subprocess as s\n"
        "for p in ('/sys/kernel/tracing', '/sys/kernel/debug/tracing', '/sys/kernel/debug',\n"
        "          '/sys/fs/bpf', '/sys/kernel/security'):\n"
        "    s.run(['umount', '-l', p], check=False)\n"
        "from vigil.kernel import hooks, mounts, probes\n"
        "assert mounts.tracefs_root() is None, mounts.tracefs_root()\n"
        "assert probes.probe('tracepoint').available is None\n"
        "done = mounts.ensure_mounted()\n"
        "assert mounts.ensure_mounted() == []\n"
        "print(sorted(map(str, done)))\n"
        "assert probes.probe('tracepoint').available is True\n"
        "assert probes.active_lsms()\n"
    )
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                          "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "/sys/kernel/tracing" in out.stdout
