"""The agent on a tailored BTF only, on this machine's real kernel (issue 5, 6a).

A tailored BTF for this kernel is generated the way the shipped archive is (`vigil btf gen`
over this kernel's BTF filed under this machine's os-release key), then the real `vigil run`
is started twice on the same file operations: once as usual (on the backend under test), once
in a mount namespace where /sys/kernel/btf is empty (neither Vigil nor libbpf finds the kernel's
BTF, as on a kernel built without it) and the archive pointed at (VIGIL_BTF_ARCHIVE), where it
must choose the tracepoint backend. The events must be identical.
Also: libbpf and `vigil btf check` agree on a BTF that lacks a field.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_proc import VIGIL, WITHOUT_KERNEL_BTF, AgentProc, Area, Event, UserIds, get, under

from vigil.btfhub.rawbtf import RawBtf
from vigil.kernel import arch as archmod
from vigil.kernel.btf_source import KERNEL_BTF, os_release
from vigil.kernel.errors import VerifierError
from vigil.kernel.loader import BpfObjectSpec, bundled_object

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not KERNEL_BTF.exists():
        pytest.skip("this kernel has no BTF to tailor from")
    osr = os_release()
    tmp = tmp_path_factory.mktemp("tailored")
    src = tmp / "src" / osr["ID"] / osr["VERSION_ID"] / archmod.machine()
    src.mkdir(parents=True)
    shutil.copy(KERNEL_BTF, src / f"{platform.release()}.btf")
    p = subprocess.run([str(VIGIL), "btf", "gen", "--source", str(tmp / "src"), "--out",
                        str(tmp / "gen")], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert "1 kernel BTFs" in p.stdout
    return tmp / "gen" / "btf-archive.tar.xz"


# One child doing the operations a health check does, and a few more.
OPS = """
import os
d = os.environ["D"]
p = os.path.join(d, "f.txt")
with open(p, "w") as f:
    f.write("one")
with open(p, "a") as f:
    f.write("two")
os.chmod(p, 0o600)
os.rename(p, os.path.join(d, "g.txt"))
os.mkdir(os.path.join(d, "sub"))
os.symlink("g.txt", os.path.join(d, "link"))
os.unlink(os.path.join(d, "link"))
os.rmdir(os.path.join(d, "sub"))
os.truncate(os.path.join(d, "g.txt"), 1)
os.unlink(os.path.join(d, "g.txt"))
"""

# What must be equal between the runs (pids, times and entity ids differ by nature).
FIELDS = ("event.action", "event.outcome", "event.category", "file.mode", "file.target_path",
          "process.name", "process.executable", "process.args", "user.id",
          "process.real_user.id", "process.user.id", "group.id", "process.parent.name")


def _norm(ev: Event, d: Path, pid: int) -> dict[str, Any]:
    out = {k: get(ev, k) for k in FIELDS}
    for key in ("file.path", "vigil.file.original_path"):
        v = get(ev, key)
        out[key] = v.replace(str(d), "<D>") if isinstance(v, str) else v
    out["by_child"] = get(ev, "process.pid") == pid
    return out


@pytest.fixture
def run_once(area: Area, test_user: UserIds) -> Iterator[Any]:
    procs: list[AgentProc] = []

    def run(name: str, env: dict[str, str], wrap: tuple[str, ...] = (),
            backend: str | None = None) -> tuple[list[dict[str, Any]], list[str], str]:
        d = area.root / name
        d.mkdir()
        os.chown(d, test_user.uid, test_user.gid)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            agent = AgentProc(["--watch", str(d), "--no-fim", "--no-exec"],
                              db=area.root / f"{name}.db", verbose=True, wrap=wrap,
                              backend=backend).start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        procs.append(agent)
        agent.probe(d, timeout=90)
        running = agent.running_backend()
        child = _run_ops(d, test_user)
        events = agent.settle(d, under(d))
        rc, summary = agent.stop()
        assert rc == 0, "\n".join(agent.stderr_lines[-20:])
        assert summary is not None and summary.dropped == 0
        return [_norm(e, d, child) for e in events], agent.stderr_lines, running

    yield run
    for p in procs:
        p.stop()


def _run_ops(d: Path, user: UserIds) -> int:
    p = subprocess.Popen(["/usr/bin/python3", "-c", OPS], env={"D": str(d)}, cwd=str(d),
                         user=user.uid, group=user.gid, extra_groups=[],
                         stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err.decode()
    return p.pid


@pytest.mark.slow
def test_events_are_identical_on_the_tailored_btf(archive: Path, run_once: Any) -> None:
    """On its kernel's own BTF the agent runs the backend under test (VIGIL_TEST_BACKEND in the
    kernel matrix, else its own choice). A tailored BTF allows the tracepoint backend only, by
    design (no function prototypes for kprobe, no kernel BTF to attach fentry or LSM programs
    to): that run is left to the agent's choice, which must be tracepoint, and must see what
    the backend under test saw."""
    with_kernel, log_k, _ = run_once("kernel-btf", {})
    with_tailored, log_t, tailored_backend = run_once(
        "tailored-btf", {"VIGIL_BTF_ARCHIVE": str(archive)}, WITHOUT_KERNEL_BTF, "auto")
    assert tailored_backend == "tracepoint", "\n".join(log_t)
    key = f"{os_release()['ID']}/{os_release()['VERSION_ID']}/{archmod.machine()}/" \
          f"{platform.release()}"
    assert any("using tailored BTF" in ln and key in ln for ln in log_t), "\n".join(log_t)
    assert not any("using tailored BTF" in ln for ln in log_k)
    actions = [e["event.action"] for e in with_kernel]
    for wanted in ("created", "modified", "mode-changed", "renamed", "directory-created",
                   "symlink-created", "deleted", "directory-deleted", "truncated"):
        assert wanted in actions, f"no {wanted} event: {actions}"
    assert all(e["by_child"] for e in with_kernel)
    assert with_tailored == with_kernel


def test_libbpf_and_btf_check_agree_on_a_missing_field(tmp_path: Path) -> None:
    if not KERNEL_BTF.exists():
        pytest.skip("this kernel has no BTF")
    broken = tmp_path / "no-f_path.btf"
    broken.write_bytes(RawBtf.from_file(KERNEL_BTF).with_member_removed("file", "f_path"))
    p = subprocess.run([str(VIGIL), "btf", "check", "--btf", str(broken)],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 1 and "struct file has no field f_path" in p.stdout
    with pytest.raises(VerifierError) as e, \
            BpfObjectSpec.open(bundled_object("vigil"), btf_custom_path=str(broken)) as spec:
        spec.load().close()
    assert "struct file.f_path" in str(e.value)
