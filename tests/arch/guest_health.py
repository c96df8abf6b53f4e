"""Inside the arm64 guest: Vigil's health check with the aarch64 objects.

Runs the real agent (`vigil run`, the checkout mounted read-only at /opt/vigil), waits until it
reports a sentinel file, then an unprivileged user (nobody) creates, modifies, chmods and deletes
a watched file. Writes /out/result.json: the machine, the kernel, whether it has BTF, the
agent's stderr and every event under the watched directory. The host side (health.py) judges.
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
WATCHED = Path("/tmp/vigil-health")
PYTHONPATH = "/opt/vigil:/opt/vigil-deps"
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


def main() -> int:
    OUT.mkdir(exist_ok=True)
    WATCHED.mkdir(mode=0o777, exist_ok=True)
    os.chmod(WATCHED, 0o777)
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    cmd = [sys.executable, "-c", "import sys; from vigil.cli import main; sys.exit(main())",
           "-v", "run", "--watch", str(WATCHED), "-o", "json", "--no-fim", "--no-exec",
           "--db", "/tmp/vigil-health.db"]
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
        "ready": ready,
        "seconds_to_ready": round(started, 1),
        "child_pid": child_pid,
        "agent_rc": agent.returncode,
        "stderr": errors,
        "events": [e for e in events if ".ready" not in e.get("file", {}).get("path", "")],
        "diagnosis": diagnosis,
    }
    (OUT / "result.json").write_text(json.dumps(result, indent=1))
    print("vigil-health: done", json.dumps({k: result[k] for k in ("machine", "ready")}))
    return 0


DIAGNOSE = """
import sys
from vigil.kernel.errors import VigilError
from vigil.kernel.loader import BpfObjectSpec, bundled_object
try:
    with BpfObjectSpec.open(bundled_object(sys.argv[1])) as spec:
        for p in spec.programs:
            if not p.section.startswith("tracepoint"):
                spec.set_autoload(p.name, False)
        spec.load().close()
    print("loads")
except VigilError as e:
    print(str(e)[:400])
"""


def diagnose(env: dict[str, str]) -> dict[str, str]:
    """When the agent did not come up: does each object's tracepoint set load on its own?"""
    out = {}
    for name in ("vigil", "vigil_perf"):
        p = subprocess.run([sys.executable, "-c", DIAGNOSE, name], env=env, capture_output=True,
                           text=True, timeout=1200, check=False)
        out[name] = (p.stdout.strip() or p.stderr.strip()[-400:])
    return out


if __name__ == "__main__":
    sys.exit(main())
