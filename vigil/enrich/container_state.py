"""What the container runtimes' state on disk says of a container: name, image, pod.

Owns the readers of each runtime's files, all outside data: a read is capped in size, and a
missing, unreadable, oversized or malformed file (bad JSON, wrong types) yields no details, never
an exception. Does not own the cgroup path parsing (``vigil.enrich.container_paths``) nor the
cache (``vigil.enrich.containers``).

- docker: ``<docker root>/containers/<id>/config.v2.json`` (``Name``, ``Config.Image``,
  ``Image``; the ``io.kubernetes.*`` labels cri-dockerd sets)
- podman and cri-o (containers/storage): ``<graph root>/<driver>-containers/containers.json``
  (names, image id, the metadata podman writes: ``image-name``) and ``…-images/images.json``
  (image names); ``<root>/<driver>-containers/<id>/userdata/config.json``'s OCI annotations
  (cri-o's ``io.kubernetes.*``)
- containerd: ``<state>/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`` OCI
  annotations (CRI's ``io.kubernetes.cri.*``, nerdctl's ``nerdctl/name``)
- systemd-nspawn: ``/run/systemd/machines/<name>`` (``CLASS=vm`` is not a container)
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from vigil.enrich.container_paths import CONTAINERD, CRI, CRIO, DOCKER, NSPAWN, PODMAN

MAX_STATE_FILE: Final = 4 << 20         # one container's config
MAX_STORE_FILE: Final = 32 << 20        # containers.json / images.json: every container's
MAX_TEXT: Final = 512                   # a name or image reference longer than this is cut off


@dataclass(frozen=True, slots=True)
class Details:
    """What a runtime's state adds to a cgroup match; every field optional."""

    runtime: str | None = None  # set when the state tells a runtime the path did not (CRI)
    name: str | None = None
    image_name: str | None = None
    image_id: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    namespace: str | None = None
    not_container: bool = False  # a machine registered as a virtual machine


@dataclass(frozen=True)
class StateRoots:
    """Where the runtimes keep their state (the defaults of Debian's packages); tests point
    them at fixture trees."""

    docker: tuple[str, ...] = ("/var/lib/docker",)
    storage: tuple[str, ...] = ("/var/lib/containers/storage", "/run/containers/storage")
    containerd: tuple[str, ...] = ("/run/containerd",)
    machines: str = "/run/systemd/machines"
    rootless_storage: str = ".local/share/containers/storage"  # under a user's home


def read_capped(path: str, cap: int) -> bytes | None:
    """A regular file's bytes when it is at most ``cap`` long; None otherwise or on any error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
            return None
        data = b""
        while len(data) <= cap:
            chunk = os.read(fd, cap + 1 - len(data))
            if not chunk:
                break
            data += chunk
        return data if len(data) <= cap else None
    except OSError:
        return None
    finally:
        os.close(fd)


def read_json(path: str, cap: int = MAX_STATE_FILE) -> Any:
    data = read_capped(path, cap)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _text(v: object) -> str | None:
    if not isinstance(v, str) or not v:
        return None
    v = v[:MAX_TEXT]
    return v if v.isprintable() else None


def _dict(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def docker_details(roots: StateRoots, cid: str) -> Details | None:
    for root in roots.docker:
        cfg = read_json(os.path.join(root, "containers", cid, "config.v2.json"))
        if not isinstance(cfg, dict):
            continue
        config = _dict(cfg.get("Config"))
        labels = _dict(config.get("Labels"))
        name = _text(cfg.get("Name"))
        k8s_name = _text(labels.get("io.kubernetes.container.name"))
        return Details(
            runtime=DOCKER, name=k8s_name or (name.lstrip("/") if name else None) or None,
            image_name=_text(config.get("Image")), image_id=_text(cfg.get("Image")),
            pod_name=_text(labels.get("io.kubernetes.pod.name")),
            pod_uid=_text(labels.get("io.kubernetes.pod.uid")),
            namespace=_text(labels.get("io.kubernetes.pod.namespace")))
    return None


def _annotations(path: str) -> dict[str, Any] | None:
    spec = read_json(path)
    if not isinstance(spec, dict):
        return None
    return _dict(spec.get("annotations"))


def containerd_details(roots: StateRoots, cid: str) -> Details | None:
    for root in roots.containerd:
        task = os.path.join(root, "io.containerd.runtime.v2.task")
        # k8s.io first (CRI's namespace), then any other namespace (nerdctl's "default"...)
        paths = [os.path.join(task, "k8s.io", cid, "config.json")]
        paths += sorted(glob.glob(os.path.join(glob.escape(task), "*", cid, "config.json")))
        for path in paths:
            ann = _annotations(path)
            if ann is None:
                continue
            kind = _text(ann.get("io.kubernetes.cri.container-type"))
            name = _text(ann.get("io.kubernetes.cri.container-name")) or \
                _text(ann.get("nerdctl/name"))
            if kind == "sandbox":
                name = name or _text(ann.get("io.kubernetes.cri.sandbox-name"))
            return Details(
                runtime=CONTAINERD, name=name,
                image_name=_text(ann.get("io.kubernetes.cri.image-name")),
                pod_name=_text(ann.get("io.kubernetes.cri.sandbox-name")),
                pod_uid=_text(ann.get("io.kubernetes.cri.sandbox-uid")),
                namespace=_text(ann.get("io.kubernetes.cri.sandbox-namespace")))
    return None


@dataclass
class _StoreCache:
    """containers.json / images.json parsed once per (mtime, size) of the file."""

    files: dict[str, tuple[tuple[int, int], dict[str, dict[str, Any]]]] = field(
        default_factory=dict)

    def entries(self, path: str) -> dict[str, dict[str, Any]]:
        try:
            st = os.stat(path)
        except OSError:
            self.files.pop(path, None)
            return {}
        sig = (st.st_mtime_ns, st.st_size)
        hit = self.files.get(path)
        if hit is not None and hit[0] == sig:
            return hit[1]
        doc = read_json(path, MAX_STORE_FILE)
        table: dict[str, dict[str, Any]] = {}
        if isinstance(doc, list):
            for entry in doc:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    table[entry["id"]] = entry
        self.files[path] = (sig, table)
        return table


class StorageReader:
    """containers/storage (podman, cri-o, buildah): root and rootless graph roots."""

    def __init__(self, roots: StateRoots) -> None:
        self._roots = roots
        self._cache = _StoreCache()

    def _graph_roots(self, uid: int | None) -> list[str]:
        out = list(self._roots.storage)
        if uid is not None:
            try:
                home = pwd.getpwuid(uid).pw_dir
            except (KeyError, OverflowError):
                home = None
            if home:
                out.insert(0, os.path.join(home, self._roots.rootless_storage))
            out.insert(1 if home else 0, f"/run/user/{uid}/containers")
        return out

    def details(self, runtime: str, cid: str, uid: int | None = None) -> Details | None:
        for root in self._graph_roots(uid):
            for ctr_dir in sorted(glob.glob(os.path.join(glob.escape(root), "*-containers"))):
                d = self._one(runtime, root, ctr_dir, cid)
                if d is not None:
                    return d
        return None

    def _one(self, runtime: str, root: str, ctr_dir: str, cid: str) -> Details | None:
        entry = self._cache.entries(os.path.join(ctr_dir, "containers.json")).get(cid)
        ann = _annotations(os.path.join(ctr_dir, cid, "userdata", "config.json"))
        if entry is None and ann is None:
            return None
        d = Details(runtime=runtime)
        if entry is not None:
            meta: dict[str, Any] = {}
            if isinstance(entry.get("metadata"), str) and len(entry["metadata"]) < (1 << 20):
                try:
                    meta = _dict(json.loads(entry["metadata"]))
                except (ValueError, RecursionError):
                    meta = {}
            names = entry.get("names")
            first = _text(names[0]) if isinstance(names, list) and names else None
            image_id = _text(entry.get("image")) or _text(meta.get("image-id"))
            d = replace(d, name=_text(meta.get("name")) or first,
                        image_name=_text(meta.get("image-name")) or
                        self._image_name(root, ctr_dir, image_id),
                        image_id=image_id)
        if ann:
            # cri-o's annotations (podman writes a few io.kubernetes.cri-o.* too, never these)
            kind = _text(ann.get("io.kubernetes.cri-o.ContainerType"))
            k8s_name = _text(ann.get("io.kubernetes.container.name"))
            if kind == "sandbox":
                k8s_name = k8s_name or _text(ann.get("io.kubernetes.pod.name"))
            d = replace(
                d, name=k8s_name or d.name,
                image_name=_text(ann.get("io.kubernetes.cri-o.ImageName")) or d.image_name,
                image_id=_text(ann.get("io.kubernetes.cri-o.ImageRef")) or d.image_id,
                pod_name=_text(ann.get("io.kubernetes.pod.name")),
                pod_uid=_text(ann.get("io.kubernetes.pod.uid")),
                namespace=_text(ann.get("io.kubernetes.pod.namespace")))
        return d

    def _image_name(self, root: str, ctr_dir: str, image_id: str | None) -> str | None:
        if image_id is None:
            return None
        driver = os.path.basename(ctr_dir)[: -len("-containers")]
        images = self._cache.entries(os.path.join(root, f"{driver}-images", "images.json"))
        names = images.get(image_id, {}).get("names")
        return _text(names[0]) if isinstance(names, list) and names else None


def machine_details(roots: StateRoots, name: str) -> Details | None:
    """/run/systemd/machines/NAME (KEY=VALUE lines) of a systemd-nspawn machine."""
    if "/" in name or name in (".", ".."):
        return None
    data = read_capped(os.path.join(roots.machines, name), 64 << 10)
    if data is None:
        return None
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    if fields.get("CLASS") == "vm":
        return Details(not_container=True)
    root = _text(fields.get("ROOT"))
    return Details(runtime=NSPAWN, name=_text(fields.get("NAME")) or name,
                   image_name=Path(root).name if root else None)


class StateReader:
    """One entry point: the details of (runtime, id) from whichever state holds them."""

    def __init__(self, roots: StateRoots | None = None) -> None:
        self.roots = roots or StateRoots()
        self.storage = StorageReader(self.roots)

    def details(self, runtime: str, cid: str, uid: int | None = None) -> Details | None:
        if runtime == DOCKER:
            return docker_details(self.roots, cid)
        if runtime == CONTAINERD:
            return containerd_details(self.roots, cid)
        if runtime in (PODMAN, CRIO):
            return self.storage.details(runtime, cid, uid)
        if runtime == NSPAWN:
            return machine_details(self.roots, cid)
        if runtime == CRI:  # Kubernetes with the cgroupfs driver: whichever runtime knows it
            return (containerd_details(self.roots, cid)
                    or self.storage.details(CRIO, cid)
                    or docker_details(self.roots, cid))
        return None
