"""Cgroup paths -> (runtime, container id, pod uid): every runtime's layout, the monitors and host
paths that are not containers, and odd input that must never raise."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vigil.enrich.container_paths import (
    CRI,
    CgroupMatch,
    parse_path,
    parse_proc_cgroup,
    unescape_unit,
)

DATA = Path(__file__).parent / "data" / "containers"
ID = "3e19b87c54cc33c49a88623d82a2004521c9f1eed16bd08641f11c6583ceee95"
ID2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
UID = "7f2b3c4d-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
UID_ = UID.replace("-", "_")

CASES = [
    # docker: systemd driver, cgroupfs driver, rootless
    (f"/system.slice/docker-{ID}.scope", CgroupMatch("docker", ID)),
    (f"/docker/{ID}", CgroupMatch("docker", ID)),
    (f"/user.slice/user-1000.slice/user@1000.service/docker.service/docker/{ID}",
     CgroupMatch("docker", ID)),
    # Kubernetes, systemd driver: containerd, cri-o, docker (cri-dockerd)
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"cri-containerd-{ID}.scope", CgroupMatch("containerd", ID, UID)),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"crio-{ID}.scope", CgroupMatch("cri-o", ID, UID)),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope",
     CgroupMatch("docker", ID, UID)),
    # Kubernetes, cgroupfs driver: the runtime is not in the path
    (f"/kubepods/burstable/pod{UID}/{ID}", CgroupMatch(CRI, ID, UID)),
    (f"/kubepods/pod{UID}/{ID}", CgroupMatch(CRI, ID, UID)),
    (f"/kubepods/besteffort/pod{UID}/crio-{ID}", CgroupMatch("cri-o", ID, UID)),
    # nerdctl (containerd without Kubernetes)
    (f"/system.slice/nerdctl-{ID}.scope", CgroupMatch("containerd", ID)),
    # podman: cgroupfs (as on this machine), systemd, pods, rootless, a sub-cgroup
    (f"/libpod_parent/libpod-{ID}", CgroupMatch("podman", ID)),
    (f"/machine.slice/libpod-{ID}.scope", CgroupMatch("podman", ID)),
    (f"/machine.slice/libpod-{ID}.scope/container", CgroupMatch("podman", ID)),
    (f"/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope",
     CgroupMatch("podman", ID)),
    (f"/libpod_parent/{ID2}/libpod-{ID}", CgroupMatch("podman", ID)),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope",
     CgroupMatch("podman", ID)),
    # systemd-nspawn: the machine's name, unescaped
    ("/machine.slice/machine-debian\\x2dbookworm.scope", CgroupMatch("systemd-nspawn",
                                                                     "debian-bookworm")),
    ("/machine.slice/machine-web.scope/payload/system.slice/cron.service",
     CgroupMatch("systemd-nspawn", "web")),
    # docker inside an nspawn machine: the outer container is the host's
    (f"/machine.slice/machine-box.scope/payload/system.slice/docker-{ID}.scope",
     CgroupMatch("systemd-nspawn", "box")),
    # lxc (4+ and LXD), older lxc, libvirt-lxc
    ("/lxc.payload.web1", CgroupMatch("lxc", "web1")),
    ("/lxc.payload.web1/system.slice/cron.service", CgroupMatch("lxc", "web1")),
    ("/lxc.payload/web1", CgroupMatch("lxc", "web1")),
    ("/lxc/web1", CgroupMatch("lxc", "web1")),
    ("/machine.slice/machine-lxc\\x2d4242\\x2dbox.scope", CgroupMatch("lxc", "box")),
]

NOT_CONTAINERS = [
    "/", "", "/init.scope", "/system.slice/ssh.service",
    "/user.slice/user-1000.slice/session-3.scope",
    f"/system.slice/libpod-conmon-{ID}.scope",       # podman's monitor
    f"/machine.slice/libpod-conmon-{ID}.scope",
    f"/system.slice/crio-conmon-{ID}.scope",         # cri-o's monitor
    "/lxc.monitor.web1", "/lxc.monitor/web1",         # lxc's monitor
    "/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope",  # a libvirt VM's qemu on the host
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",  # pod only
    f"/kubepods/burstable/pod{UID}",
    f"/system.slice/docker-{ID.upper()}.scope",      # ids are lower-case hex
    f"/system.slice/docker-{ID[:-1]}.scope",         # 63 digits
    f"/system.slice/docker-{ID}0.scope",             # 65 digits
    f"/other/{ID}",                                  # a bare id under no known parent
    f"system.slice/docker-{ID}.scope",               # not absolute
    "/machine.slice/machine-bad\\x00name.scope",      # control character once unescaped
    "/lxc/na me",
    "/" + "a/" * 3000 + f"docker-{ID}.scope",        # longer than PATH_MAX
]


@pytest.mark.parametrize(("path", "want"), CASES)
def test_each_runtime_layout_names_its_container(path: str, want: CgroupMatch) -> None:
    assert parse_path(path) == want


@pytest.mark.parametrize("path", NOT_CONTAINERS)
def test_monitors_host_paths_and_bad_ids_name_no_container(path: str) -> None:
    assert parse_path(path) is None


def test_systemd_unit_escapes_are_undone() -> None:
    assert unescape_unit("debian\\x2dbookworm") == "debian-bookworm"
    assert unescape_unit("a\\x5cb") == "a\\b"
    assert unescape_unit("plain") == "plain"
    assert unescape_unit("x\\x0ay") is None  # a newline is no machine name
    assert unescape_unit("x\\x2") == "x\\x2"  # an incomplete escape stays as written


def test_podman_proc_cgroup_as_recorded_on_this_machine() -> None:
    # podman 4.3.1 + runc 1.1.5, cgroupfs manager, hybrid hierarchy (v1 + unified)
    text = (DATA / "podman-4.3" / "proc-cgroup.txt").read_text()
    cid = (DATA / "podman-4.3" / "container-id").read_text().strip()
    path, found = parse_proc_cgroup(text)
    assert path == f"/libpod_parent/libpod-{cid}"
    assert found == CgroupMatch("podman", cid)


def test_v1_lines_decide_when_the_v2_path_names_no_container() -> None:
    # a hybrid host whose runtime left the container in the v2 root
    text = (f"12:memory:/docker/{ID}\n1:name=systemd:/system.slice/docker-{ID2}.scope\n"
            "0::/\n")
    path, found = parse_proc_cgroup(text)
    assert path == "/"
    assert found == CgroupMatch("docker", ID2)  # name=systemd's line first


def test_the_v2_line_wins_over_v1_lines() -> None:
    text = f"4:memory:/docker/{ID2}\n0::/system.slice/docker-{ID}.scope\n"
    assert parse_proc_cgroup(text) == (f"/system.slice/docker-{ID}.scope",
                                       CgroupMatch("docker", ID))


def test_malformed_proc_lines_are_skipped() -> None:
    text = f"garbage\n::\nx:y\nabc:memory:/docker/{ID2}\n\0\0\n0::/docker/{ID}\n"
    assert parse_proc_cgroup(text) == (f"/docker/{ID}", CgroupMatch("docker", ID))
    assert parse_proc_cgroup("") == (None, None)


def test_random_input_never_raises() -> None:
    rnd = random.Random(15)
    alphabet = "/-._:\\x0123456789abcdefABCDEF \n\0\u00e9\udcff" + "".join(
        p for p, _ in CASES[:6])
    seeds = [p for p, _ in CASES] + NOT_CONTAINERS
    for _ in range(3000):
        if rnd.random() < 0.5:
            s = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 200)))
        else:  # a real path with a few bytes changed, cut or doubled
            chars = list(rnd.choice(seeds))
            for _ in range(rnd.randint(1, 4)):
                if chars:
                    chars[rnd.randrange(len(chars))] = rnd.choice(alphabet)
            s = "".join(chars[: rnd.randint(0, len(chars))]) * rnd.randint(1, 2)
        found = parse_path(s)
        assert found is None or (found.id and found.runtime)
        parse_proc_cgroup(s)
        parse_proc_cgroup("0::" + s)
