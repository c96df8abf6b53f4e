"""Inside the guest of tests/arch/health.py: Vigil's health check with the objects of the
guest's architecture (aarch64, armv7l, i686).

The host mounts a snapshot of the checkout read-only at /opt/vigil, with health-config.json
saying which BTF to use (``btf``: kernel, tailored with ``btf_archive`` and ``btf_key``, or full
with ``btf_file``) and an optional ``backend`` for `vigil run --backend`; without that file the
guest uses the kernel's own BTF and the agent's choice of backend (the arm64 check as it was).

``bpf_jit`` ("0"/"1") sets net.core.bpf_jit_enable first. Runs `vigil btf which`, then `vigil
doctor` (text) with the same environment (VIGIL_BTF_ARCHIVE and VIGIL_TEST_HIDE_KERNEL_BTF=1 for
the tailored BTF, VIGIL_BTF for the full one), then the real agent (`vigil run`;
VIGIL_TEST_EXPECT_BTF names the archive key it must use), waits until it reports a sentinel file,
then an unprivileged user (nobody) creates, modifies, chmods and deletes a watched file. Writes
/out/result.json: the machine, the kernel, whether it has BTF, the JIT switch, the outputs of
btf which and doctor, the agent's exit status and stderr, every event under the watched
directory, and timings (the guest's uptime when this started = the boot); when the agent did
not come up, whether each object's tracepoint programs load on their own against the same BTF
(diagnosis). The host side (health.py) judges.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

OUT = Path("/out")
VIGIL_ROOT = Path("/opt/vigil")
CONFIG = VIGIL_ROOT / "health-config.json"
WATCHED = Path("/tmp/vigil-health")
PYTHONPATH = "/opt/vigil:/opt/vigil-deps"
VIGIL = [sys.executable, "-c", "import sys; from vigil.cli import main; sys.exit(main())"]
NOBODY = 65534
OPS = """
import os
p = "/tmp/vigil-health/health.txt"
with open(p, "w") as f:
    f.write("created\\n")
with open(p, "a") as f:
    f.write("modified\\n")
os.chmod(p, 0o600)
os.unlink(p)
"""
# What OPS must produce for its file, exactly and in order: one "modified" per close (the host
# side, health.py, judges; a close reported twice is a failure).
EXPECTED_ACTIONS = ("created", "modified", "modified", "mode-changed", "deleted")


JIT = Path("/proc/sys/net/core/bpf_jit_enable")


def bpf_jit(want: str | None) -> dict[str, str | None]:
    """The BPF JIT switch as booted, after setting it to ``want`` ("0"/"1", None: untouched).
    32-bit kernels leave it off by default (no ARCH_WANT_DEFAULT_BPF_JIT)."""
    def read() -> str | None:
        return JIT.read_text().strip() if JIT.exists() else None
    booted, error = read(), None
    if want is not None:
        try:
            JIT.write_text(want)
        except OSError as e:
            error = str(e)
    return {"booted": booted, "now": read(), "error": error}


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def environment(cfg: dict[str, Any]) -> dict[str, str]:
    """The environment of btf which, doctor and the agent: the BTF the host chose."""
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    if cfg.get("btf_archive"):
        env["VIGIL_BTF_ARCHIVE"] = cfg["btf_archive"]
        env["VIGIL_TEST_HIDE_KERNEL_BTF"] = "1"  # the archive even where the kernel has BTF
        env["VIGIL_TEST_EXPECT_BTF"] = cfg["btf_key"]
    if cfg.get("btf_file"):
        env["VIGIL_BTF"] = cfg["btf_file"]
    return env


def step(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """One vigil command: exit status, stdout, stderr, seconds."""
    t0 = time.monotonic()
    try:
        p = subprocess.run([*VIGIL, *args], env=env, capture_output=True, text=True,
                           timeout=timeout, check=False)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, str(e.stdout or ""), f"timed out after {timeout} s"
    res = {"rc": rc, "stdout": out, "stderr": err, "seconds": round(time.monotonic() - t0, 1)}
    print(f"vigil-health: vigil {' '.join(args)}: rc {rc} in {res['seconds']} s", flush=True)
    return res


def main() -> int:
    booted = uptime()
    t_start = time.monotonic()
    OUT.mkdir(exist_ok=True)
    WATCHED.mkdir(mode=0o777, exist_ok=True)
    os.chmod(WATCHED, 0o777)
    cfg: dict[str, Any] = json.loads(CONFIG.read_text()) if CONFIG.exists() else {}
    env = environment(cfg)
    jit = bpf_jit(cfg.get("bpf_jit"))
    btf_which = step(["btf", "which"], env, 300)
    doctor = step(["doctor"], env, 900)
    cmd = [*VIGIL, "-v", "run", "--watch", str(WATCHED), "-o", "json", "--no-fim", "--no-exec",
           "--db", "/tmp/vigil-health.db"]
    if cfg.get("btf_file"):
        cmd += ["--btf", cfg["btf_file"]]
    if cfg.get("backend"):
        cmd += ["--backend", cfg["backend"]]
    t0 = time.monotonic()
    agent = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    events: list[dict[str, Any]] = []
    errors: list[str] = []
    lock = threading.Condition()

    def read_out() -> None:
        assert agent.stdout is not None
        for line in agent.stdout:
            with lock:
                events.append(json.loads(line))
                lock.notify_all()

    def read_err() -> None:
        assert agent.stderr is not None
        for line in agent.stderr:
            with lock:
                errors.append(line.decode(errors="replace").rstrip())

    threads = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
    for t in threads:
        t.start()
    ready = False
    sentinel = WATCHED / ".ready"
    deadline = time.monotonic() + 600  # the verifier under TCG emulation is slow
    while time.monotonic() < deadline and agent.poll() is None:
        sentinel.touch()
        sentinel.unlink()
        with lock:
            lock.wait(2)
            ready = any(e.get("file", {}).get("path") == str(sentinel) for e in events)
        if ready:
            break
    started = time.monotonic() - t0
    child_pid = None
    if ready:
        child = subprocess.Popen(["/usr/bin/python3", "-c", OPS], user=NOBODY, group=NOBODY,
                                 extra_groups=[], cwd="/tmp")
        child.wait(60)
        child_pid = child.pid
        time.sleep(1)
        sentinel.touch()  # a barrier: everything before it has been read once this shows up
        sentinel.unlink()
        end = time.monotonic() + 60
        with lock:
            while time.monotonic() < end and sum(
                    1 for e in events if e.get("file", {}).get("path") == str(sentinel)) < 4:
                lock.wait(1)
    agent.terminate()
    try:
        agent.wait(120)
    except subprocess.TimeoutExpired:
        agent.kill()
    agent_seconds = time.monotonic() - t0
    for t in threads:
        t.join(10)
    btf = Path("/sys/kernel/btf/vmlinux")
    diagnosis = {} if ready else diagnose(env)
    result = {
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kernel_btf": btf.exists(),
        "lsm": Path("/sys/kernel/security/lsm").read_text().strip()
        if Path("/sys/kernel/security/lsm").exists() else None,
        "config": cfg,
        "bpf_jit_enable": jit,
        "btf_which": btf_which,
        "doctor": doctor,
        "ready": ready,
        "seconds_to_ready": round(started, 1),
        "child_pid": child_pid,
        "agent_argv": cmd[3:],
        "agent_rc": agent.returncode,
        "stderr": errors,
        "events": [e for e in events if ".ready" not in e.get("file", {}).get("path", "")],
        "diagnosis": diagnosis,
        "timings": {"boot_uptime": round(booted, 1), "btf_which": btf_which["seconds"],
                    "doctor": doctor["seconds"], "agent": round(agent_seconds, 1),
                    "guest_total": round(time.monotonic() - t_start, 1)},
    }
    (OUT / "result.json").write_text(json.dumps(result, indent=1))
    print("vigil-health: done", json.dumps({k: result[k] for k in ("machine", "ready")}))
    return 0


DIAGNOSE = """
import sys
from vigil.kernel.btf_source import resolve_btf
from vigil.kernel.errors import VigilError
from vigil.kernel.loader import BpfObjectSpec, bundled_object
try:
    btf = resolve_btf()
    with BpfObjectSpec.open(bundled_object(sys.argv[1]), btf_custom_path=btf.custom_path) as spec:
        for p in spec.programs:
            if not p.section.startswith("tracepoint"):
                spec.set_autoload(p.name, False)
        spec.load().close()
    print("loads")
except VigilError as e:
    print(str(e)[:400])
"""


def diagnose(env: dict[str, str]) -> dict[str, str]:
    """When the agent did not come up: does each object's tracepoint set load on its own
    (against the same BTF)?"""
    out = {}
    for name in ("vigil", "vigil_perf"):
        p = subprocess.run([sys.executable, "-c", DIAGNOSE, name], env=env, capture_output=True,
                           text=True, timeout=1200, check=False)
        out[name] = (p.stdout.strip() or p.stderr.strip()[-400:])
    return out


if __name__ == "__main__":
    sys.exit(main())
