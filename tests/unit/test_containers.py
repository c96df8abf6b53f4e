"""Container attribution: the runtimes' state readers (names, images, pods) on state files as the
runtimes write them, damaged state that must only cost the details, the resolver's cache by
cgroup id (with a fake /proc and cgroup tree) and the ECS fields."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from vigil.enrich.container_state import StateReader, StateRoots, read_capped, read_json
from vigil.enrich.containers import ContainerInfo, ContainerResolver, cgroup2_mount, ecs_fields

DATA = Path(__file__).parent / "data" / "containers"
ID = "3e19b87c54cc33c49a88623d82a2004521c9f1eed16bd08641f11c6583ceee95"
ID2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
UID = "7f2b3c4d-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
IMG = "sha256:" + "ab" * 32


def roots(tmp: Path) -> StateRoots:
    return StateRoots(docker=(str(tmp / "docker"),), storage=(str(tmp / "storage"),),
                      containerd=(str(tmp / "containerd"),), machines=str(tmp / "machines"))


def put(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def docker_config(tmp: Path, cid: str = ID, **extra: Any) -> Path:
    doc = {"ID": cid, "Name": "/web", "Image": IMG,
           "Config": {"Image": "nginx:1.25", "Labels": {}}, **extra}
    return put(tmp / "docker" / "containers" / cid / "config.v2.json", doc)


def cri_task(tmp: Path, cid: str = ID, **ann: str) -> Path:
    annotations = {"io.kubernetes.cri.container-type": "container",
                   "io.kubernetes.cri.container-name": "app",
                   "io.kubernetes.cri.image-name": "registry.local/app:2",
                   "io.kubernetes.cri.sandbox-name": "app-7d9f-x2k",
                   "io.kubernetes.cri.sandbox-namespace": "shop",
                   "io.kubernetes.cri.sandbox-uid": UID, **ann}
    return put(tmp / "containerd" / "io.containerd.runtime.v2.task" / "k8s.io" / cid /
               "config.json", {"ociVersion": "1.1.0", "annotations": annotations})


def crio_config(tmp: Path, cid: str = ID) -> Path:
    annotations = {"io.kubernetes.container.name": "db",
                   "io.kubernetes.pod.name": "db-0", "io.kubernetes.pod.namespace": "data",
                   "io.kubernetes.pod.uid": UID,
                   "io.kubernetes.cri-o.ContainerType": "container",
                   "io.kubernetes.cri-o.ImageName": "docker.io/library/postgres:16",
                   "io.kubernetes.cri-o.ImageRef": IMG}
    return put(tmp / "storage" / "overlay-containers" / cid / "userdata" / "config.json",
               {"annotations": annotations})


# -- state readers -----------------------------------------------------------------------------

def test_podman_state_as_podman_4_3_wrote_it(tmp_path: Path) -> None:
    shutil.copytree(DATA / "podman-4.3" / "storage", tmp_path / "storage")
    cid = (DATA / "podman-4.3" / "container-id").read_text().strip()
    d = StateReader(roots(tmp_path)).details("podman", cid)
    assert d is not None
    assert (d.name, d.image_name) == ("vig-rec", "localhost/vigil-busybox:test")
    assert d.image_id == "cf518795f49ec20b55d5345d384d71485749206cb875cdef9089bf82f38f0b1b"
    assert d.pod_name is None  # podman's own io.kubernetes.cri-o.* annotations name no pod


def test_podman_image_name_from_images_json_when_the_metadata_lacks_it(tmp_path: Path) -> None:
    put(tmp_path / "storage" / "vfs-containers" / "containers.json",
        [{"id": ID, "names": ["box"], "image": "ee" * 32, "metadata": "not json"}])
    put(tmp_path / "storage" / "vfs-images" / "images.json",
        [{"id": "ee" * 32, "names": ["localhost/box:1"]}])
    d = StateReader(roots(tmp_path)).details("podman", ID)
    assert d is not None and (d.name, d.image_name) == ("box", "localhost/box:1")


def test_docker_config_v2(tmp_path: Path) -> None:
    docker_config(tmp_path)
    d = StateReader(roots(tmp_path)).details("docker", ID)
    assert d is not None
    assert (d.runtime, d.name, d.image_name, d.image_id) == ("docker", "web", "nginx:1.25", IMG)


def test_docker_under_kubernetes_takes_the_pod_from_its_labels(tmp_path: Path) -> None:
    labels = {"io.kubernetes.container.name": "api", "io.kubernetes.pod.name": "api-1",
              "io.kubernetes.pod.namespace": "prod", "io.kubernetes.pod.uid": UID}
    docker_config(tmp_path, Name="/k8s_api_api-1_prod_x_0",
                  Config={"Image": "api:3", "Labels": labels})
    d = StateReader(roots(tmp_path)).details("docker", ID)
    assert d is not None
    assert (d.name, d.pod_name, d.namespace, d.pod_uid) == ("api", "api-1", "prod", UID)


def test_containerd_cri_annotations(tmp_path: Path) -> None:
    cri_task(tmp_path)
    d = StateReader(roots(tmp_path)).details("containerd", ID)
    assert d is not None
    assert (d.name, d.image_name, d.pod_name, d.namespace, d.pod_uid) == (
        "app", "registry.local/app:2", "app-7d9f-x2k", "shop", UID)


def test_crio_annotations(tmp_path: Path) -> None:
    crio_config(tmp_path)
    d = StateReader(roots(tmp_path)).details("cri-o", ID)
    assert d is not None
    assert (d.runtime, d.name, d.image_name, d.image_id, d.pod_name, d.namespace) == (
        "cri-o", "db", "docker.io/library/postgres:16", IMG, "db-0", "data")


@pytest.mark.parametrize(("write", "runtime"), [(cri_task, "containerd"),
                                                (crio_config, "cri-o"),
                                                (docker_config, "docker")])
def test_kubernetes_cgroupfs_containers_get_their_runtime_from_the_state(
        tmp_path: Path, write: Any, runtime: str) -> None:
    write(tmp_path)
    d = StateReader(roots(tmp_path)).details("cri", ID)
    assert d is not None and d.runtime == runtime


def test_nspawn_machine_file_and_a_vm_that_is_no_container(tmp_path: Path) -> None:
    put(tmp_path / "machines" / "web", "# a comment\nNAME=web\nSCOPE=machine-web.scope\n"
        "SERVICE=systemd-nspawn\nROOT=/var/lib/machines/debian12\nCLASS=container\n")
    put(tmp_path / "machines" / "vm1", "NAME=vm1\nCLASS=vm\n")
    reader = StateReader(roots(tmp_path))
    d = reader.details("systemd-nspawn", "web")
    assert d is not None and (d.name, d.image_name) == ("web", "debian12")
    vm = reader.details("systemd-nspawn", "vm1")
    assert vm is not None and vm.not_container
    assert reader.details("systemd-nspawn", "../machines/web") is None


BAD_DOCS = [
    "{", "", "null", "[]", '"x"', "1e999999", "[" * 100000, b"\xff\xfe\x00garbage",
    {"Name": 5, "Config": [], "Image": {"x": 1}},
    {"Name": "/\x1b[31mred", "Config": {"Image": "a\nb", "Labels": "x"}},
    {"annotations": "not a dict"}, {"annotations": {"io.kubernetes.cri.container-name": 7}},
]


@pytest.mark.parametrize("doc", BAD_DOCS)
def test_damaged_state_costs_only_the_details(tmp_path: Path, doc: Any) -> None:
    reader = StateReader(roots(tmp_path))
    for rel in (f"docker/containers/{ID}/config.v2.json",
                f"containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json",
                f"storage/overlay-containers/{ID}/userdata/config.json",
                "storage/overlay-containers/containers.json",
                "storage/overlay-images/images.json"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(doc if isinstance(doc, bytes) else
                      doc.encode() if isinstance(doc, str) else json.dumps(doc).encode())
    for runtime in ("docker", "containerd", "cri-o", "podman", "cri", "systemd-nspawn", "lxc"):
        d = reader.details(runtime, ID)
        if d is not None:  # whatever was kept is printable text
            for v in (d.name, d.image_name, d.image_id, d.pod_name, d.namespace):
                assert v is None or (isinstance(v, str) and v.isprintable())


def test_reads_are_capped_and_only_of_regular_files(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"Name": "x" * 5000}))
    assert read_json(str(big), cap=1000) is None
    assert read_json(str(big), cap=10000) is not None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_capped(str(fifo), 100) is None  # no blocking on a FIFO planted as state
    assert read_capped(str(tmp_path), 100) is None
    assert read_capped(str(tmp_path / "missing"), 100) is None


def test_random_bytes_as_state_never_raise(tmp_path: Path) -> None:
    rnd = random.Random(5)
    real = (DATA / "podman-4.3" / "storage" / "overlay-containers" /
            "containers.json").read_bytes()
    reader = StateReader(roots(tmp_path))
    target = tmp_path / "storage" / "overlay-containers" / "containers.json"
    target.parent.mkdir(parents=True)
    for i in range(300):
        data = bytearray(real)
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        target.write_bytes(bytes(data[: rnd.randint(0, len(data))]))
        os.utime(target, ns=(i, i))  # a new version of the file each time
        reader.details("podman", ID)


# -- the resolver ------------------------------------------------------------------------------

class Host:
    """A fake /proc and cgroup2 tree; cgroup ids are the real inode numbers of its dirs."""

    def __init__(self, tmp: Path) -> None:
        self.proc = tmp / "proc"
        self.cg = tmp / "cgroup"
        self.cg.mkdir()

    def cgroup(self, path: str) -> int:
        d = self.cg / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        return d.stat().st_ino

    def task(self, pid: int, v2: str, v1: str = "") -> None:
        put(self.proc / str(pid) / "cgroup", (f"4:memory:{v1}\n" if v1 else "") + f"0::{v2}\n")

    def exit(self, pid: int) -> None:
        shutil.rmtree(self.proc / str(pid))


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def resolver(tmp: Path, host: Host, **kw: Any) -> ContainerResolver:
    return ContainerResolver(roots(tmp), proc=str(host.proc), cgroup_root=str(host.cg), **kw)


def test_a_known_cgroup_costs_no_read(tmp_path: Path, host: Host) -> None:
    docker_config(tmp_path)
    path = f"/system.slice/docker-{ID}.scope"
    cg = host.cgroup(path)
    host.task(100, path)
    r = resolver(tmp_path, host)
    want = ContainerInfo(ID, "docker", "web", "nginx:1.25", IMG)
    assert r.lookup(100, cg) == want
    host.task(101, path)
    for pid in (100, 101, 102):
        assert r.lookup(pid, cg) == want
    assert r.proc_reads == 1 and r.walks == 0


def test_an_exited_process_is_found_by_its_cgroup_inode(tmp_path: Path, host: Host) -> None:
    path = f"/kubepods/burstable/pod{UID}/{ID}"
    host.cgroup("/system.slice/ssh.service")
    cg = host.cgroup(path)
    cri_task(tmp_path)
    r = resolver(tmp_path, host)
    info = r.lookup(4242, cg)  # no /proc/4242: exited before we looked
    assert info is not None and r.walks == 1
    assert (info.runtime, info.name, info.pod_name, info.namespace, info.pod_uid) == (
        "containerd", "app", "app-7d9f-x2k", "shop", UID)


def test_a_reused_pid_does_not_name_another_cgroup(tmp_path: Path, host: Host) -> None:
    path = f"/libpod_parent/libpod-{ID}"
    cg = host.cgroup(path)
    host.cgroup("/system.slice/cron.service")
    host.task(300, "/system.slice/cron.service")  # pid 300 is now a host process
    r = resolver(tmp_path, host)
    info = r.lookup(300, cg)
    assert info is not None and (info.id, info.runtime) == (ID, "podman")
    assert r.walks == 1


def test_host_cgroups_are_cached_as_none(tmp_path: Path, host: Host) -> None:
    cg = host.cgroup("/system.slice/ssh.service")
    host.task(10, "/system.slice/ssh.service")
    r = resolver(tmp_path, host)
    assert r.lookup(10, cg) is None and r.lookup(11, cg) is None
    assert r.proc_reads == 1


def test_unknown_cgroup_ids_walk_again_only_after_an_interval(tmp_path: Path,
                                                              host: Host) -> None:
    clock = [0.0]
    r = resolver(tmp_path, host, rewalk_interval=10.0, clock=lambda: clock[0])
    assert r.lookup(1, 987654321) is None
    assert r.lookup(2, 987654322) is None
    assert r.walks == 1 and r.unresolved == 2
    clock[0] = 11.0
    path = f"/system.slice/docker-{ID}.scope"
    cg = host.cgroup(path)
    assert r.lookup(3, cg) == ContainerInfo(ID, "docker")  # no state: id and runtime only
    assert r.walks == 2


def test_root_cgroup_tasks_are_resolved_per_process_by_their_v1_lines(tmp_path: Path,
                                                                       host: Host) -> None:
    host.task(20, "/")
    host.task(21, "/", v1=f"/docker/{ID}")
    r = resolver(tmp_path, host)
    assert r.lookup(20, 1, start_time=5) is None
    info = r.lookup(21, 1, start_time=6)
    assert info is not None and info.id == ID
    assert r.lookup(20, 1, start_time=5) is None and r.proc_reads == 2
    host.task(20, "/", v1=f"/docker/{ID2}")  # pid 20 reused by a container's process
    reused = r.lookup(20, 1, start_time=9)
    assert reused is not None and reused.id == ID2


def test_state_written_after_the_first_event_is_picked_up(tmp_path: Path, host: Host) -> None:
    clock = [0.0]
    path = f"/system.slice/docker-{ID}.scope"
    cg = host.cgroup(path)
    host.task(50, path)
    r = resolver(tmp_path, host, clock=lambda: clock[0])
    assert r.lookup(50, cg) == ContainerInfo(ID, "docker")
    docker_config(tmp_path)  # the runtime finishes writing its state
    assert r.lookup(50, cg) == ContainerInfo(ID, "docker")  # not asked again yet
    clock[0] = 1.5
    info = r.lookup(50, cg)
    assert info is not None and info.name == "web"


def test_the_cache_is_bounded(tmp_path: Path, host: Host) -> None:
    r = resolver(tmp_path, host, max_entries=16)
    host.task(1, "/init.scope")
    for i in range(100):
        r.lookup(1, 10_000_000 + i)
    assert len(r) == 16


def test_cgroup2_mount_from_mountinfo(tmp_path: Path) -> None:
    hybrid = put(tmp_path / "hybrid", (
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"))
    unified = put(tmp_path / "v2", "30 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 "
                  "cgroup2 rw,nsdelegate\n")
    nsroot = put(tmp_path / "ns", "30 23 0:26 /sub /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert cgroup2_mount(str(hybrid)) == "/sys/fs/cgroup/unified"
    assert cgroup2_mount(str(unified)) == "/sys/fs/cgroup"
    assert cgroup2_mount(str(nsroot)) is None
    assert cgroup2_mount(str(tmp_path / "missing")) is None


def test_ecs_fields() -> None:
    plain = ContainerInfo(ID, "podman", "web", "localhost/box:1", "ee" * 32)
    assert ecs_fields(plain) == {"container": {
        "id": ID, "runtime": "podman", "name": "web", "image": {"name": "localhost/box:1"}}}
    assert ecs_fields(ContainerInfo(ID, "docker")) == {"container": {"id": ID,
                                                                     "runtime": "docker"}}
    pod = ContainerInfo(ID, "containerd", "app", "app:2", None, "app-1", UID, "shop")
    assert ecs_fields(pod)["orchestrator"] == {
        "type": "kubernetes", "namespace": "shop",
        "resource": {"type": "pod", "name": "app-1", "id": UID}}
