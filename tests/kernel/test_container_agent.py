"""Container attribution with a real container runtime: podman (Debian's), as root.

The image is built here, no registry being reachable: busybox-static's binary and its applet
links in a directory, ``podman import``-ed as ``localhost/vigil-test-busybox:1`` (kept between
runs; well under a second to build). Containers run with ``--network none``; runc, not crun: a
hybrid cgroup host whose v2 hierarchy has controllers (this one: hugetlb) is refused by crun
("cgroups in hybrid mode not supported"), and the rlimits podman asks by default need
CAP_SYS_RESOURCE, which this sandbox lacks, hence the explicit ``--ulimit``s.

First ``ContainerResolver`` alone against live containers (the container's own process, a
``podman exec``'d one, a pid that already exited); then the real agent: a container writes into
a watched host directory bind-mounted at the same path (the agent reports paths as the acting
task's mount namespace names them) and a ``podman exec`` writes another file; both events, and
the container's exec events, carry the container's full id, runtime, name and image name, and
the host's own events none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import AgentProc, Event, get, write_config

from vigil.enrich.containers import ContainerResolver, cgroup2_mount

pytestmark = [pytest.mark.root]

IMAGE = "localhost/vigil-test-busybox:1"
PACKAGES = "podman runc busybox-static"  # Debian packages this module needs
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "sleep", "echo", "cat", "touch", "ls")
RUN_OPTS = ("--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    argv = ["podman", *(["--runtime", "runc"] if shutil.which("runc") else []), *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    missing = [t for t in ("podman", "runc") if shutil.which(t) is None]
    if missing or not os.path.exists(BUSYBOX):
        pytest.fail(f"needs the Debian packages {PACKAGES} (missing: "
                    f"{', '.join(missing) or BUSYBOX})")
    if subprocess.run(["podman", "image", "exists", IMAGE]).returncode != 0:
        with tempfile.TemporaryDirectory(prefix="vigil-rootfs-") as root:
            (Path(root) / "bin").mkdir()
            shutil.copy2(BUSYBOX, Path(root) / "bin" / "busybox")
            for applet in APPLETS:
                (Path(root) / "bin" / applet).symlink_to("busybox")
            for d in ("tmp", "proc", "sys", "dev", "etc", "var/tmp"):
                (Path(root) / d).mkdir(parents=True)
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            p = subprocess.run(["podman", "import", "-", IMAGE], stdin=tar.stdout,
                               capture_output=True, text=True, timeout=120)
            tar.wait()
            assert p.returncode == 0, f"podman import: {p.stderr}"
    return IMAGE


class Containers:
    """Containers started by one test, removed at its end."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.ids: list[str] = []

    def run(self, name: str, *argv: str, volume: Path | None = None) -> str:
        vol = ["-v", f"{volume}:{volume}"] if volume is not None else []
        cid = podman("run", "-d", *RUN_OPTS, "--name", name, *vol, self.image, *argv)
        self.ids.append(cid)
        assert len(cid) == 64, cid
        return cid

    def cleanup(self) -> None:
        for cid in self.ids:
            podman("rm", "-f", "-t", "0", cid, check=False)


@pytest.fixture
def containers(image: str) -> Iterator[Containers]:
    c = Containers(image)
    try:
        yield c
    finally:
        c.cleanup()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cgroup_dir(pid: int) -> Path:
    root = cgroup2_mount()
    assert root is not None, "no cgroup2 mount"
    v2 = [ln[3:] for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
          if ln.startswith("0::")]
    return Path(root + v2[0])


def test_resolver_names_a_live_podman_container(containers: Containers) -> None:
    name = unique("vigil-res")
    cid = containers.run(name, "sleep", "300")
    pid = int(podman("inspect", "-f", "{{.State.Pid}}", cid))
    podman("exec", "-d", cid, "sleep", "301")  # a second process, through podman exec
    cg = cgroup_dir(pid)
    cgroup_id = cg.stat().st_ino
    procs = [int(p) for p in (cg / "cgroup.procs").read_text().split()]
    assert pid in procs and len(procs) == 2, procs

    r = ContainerResolver()
    for p in procs:
        info = r.lookup(p, cgroup_id)
        assert info is not None, f"pid {p} in {cg}"
        assert (info.id, info.runtime, info.name, info.image_name) == (
            cid, "podman", name, IMAGE)
        assert info.image_id == podman("inspect", "-f", "{{.Image}}", cid)
    assert r.proc_reads == 1  # the second process was a cache hit

    # a process that exited before the agent looked: found by the cgroup's inode
    fresh = ContainerResolver()
    gone = fresh.lookup(2**22 + 12345, cgroup_id)  # above pid_max: no such process
    assert gone is not None and gone.id == cid and fresh.walks == 1
    # the host's own processes are in no container
    mine = cgroup_dir(os.getpid()).stat().st_ino
    assert ContainerResolver().lookup(os.getpid(), mine) is None


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-ctr-", dir="/var/tmp")).resolve()
    d.chmod(0o755)
    (d / "w").mkdir()
    (d / "w").chmod(0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def agent(scratch: Path) -> Iterator[AgentProc]:
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(scratch / "w")}],
                       rules={"enabled": False})
    proc = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db").start()
    try:
        proc.probe(scratch / "w", timeout=60)
        yield proc
    finally:
        rc, _ = proc.stop()
    assert rc == 0, "\n".join(proc.stderr_lines[-20:])


def file_event(agent: AgentProc, path: Path, action: str) -> Event:
    def pred(e: Event) -> bool:
        return get(e, "file.path") == str(path) and get(e, "event.action") == action
    return agent.wait_for(pred, timeout=20)[0]


def assert_container(e: Event, cid: str, name: str) -> None:
    assert get(e, "container.id") == cid, e
    assert get(e, "container.runtime") == "podman", e
    assert get(e, "container.name") == name, e
    assert get(e, "container.image.name") == IMAGE, e


def test_agent_events_carry_the_podman_container(agent: AgentProc, scratch: Path,
                                                 containers: Containers) -> None:
    w = scratch / "w"
    name = unique("vigil-agent")
    cid = containers.run(name, "sh", "-c", f"echo started > {w}/from-run; exec sleep 300",
                         volume=w)
    created = file_event(agent, w / "from-run", "created")
    assert get(created, "process.executable") == "/bin/busybox"
    assert_container(created, cid, name)

    podman("exec", cid, "sh", "-c", f"echo exec > {w}/from-exec")
    exec_created = file_event(agent, w / "from-exec", "created")
    assert_container(exec_created, cid, name)
    assert get(exec_created, "process.pid") != get(created, "process.pid")

    # the container's exec events too (not filtered by the watch list)
    execs = agent.wait_for(lambda e: get(e, "event.action") == "exec"
                           and get(e, "container.id") == cid
                           and get(e, "process.args") == ["sh", "-c",
                                                          f"echo exec > {w}/from-exec"],
                           timeout=20)
    assert_container(execs[0], cid, name)

    # and the host's own file events carry no container
    host_file = w / "from-host"
    host_file.write_text("host\n")
    host = file_event(agent, host_file, "created")
    assert get(host, "process.pid") == os.getpid()
    assert get(host, "container") is None
