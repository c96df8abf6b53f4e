"""Which container an event's task ran in: ``ContainerResolver.lookup(pid, cgroup_id)``.

Owns the cache from the kernel's cgroup id (the cgroup v2 id, the inode number of the cgroup's
directory) to a ``ContainerInfo`` (or None for the host), the ways to a cgroup's path, and the
ECS rendering of the result (``ecs_fields``). The path parsing is
``vigil.enrich.container_paths``', the runtimes' state ``vigil.enrich.container_state``'s.

A known cgroup id costs one dict lookup. A new one costs a read of /proc/PID/cgroup, checked
against the id (the inode of that path under the cgroup2 mount must be the id: a pid reused by
another process, or a task that moved, does not name the wrong cgroup). When the process has
already exited or the check fails, the cgroup2 tree is walked once for inode -> path (cached;
walked again on a miss at most every ``rewalk_interval`` seconds, and never more than
``MAX_WALK`` directories). The root cgroup (id 1) names no container by itself: hosts whose
runtimes put containers in v1 hierarchies only leave every task there, so its tasks are
resolved per process, by /proc/PID/cgroup's v1 lines (cached per (pid, start time)).

Names and images come from the runtime's state at the first sight of a container; a container
whose state was not written yet (the runtime still creating it) is asked again a few times.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from vigil.enrich.container_paths import CgroupMatch, parse_path, parse_proc_cgroup
from vigil.enrich.container_state import Details, StateReader, StateRoots, read_capped

log = logging.getLogger(__name__)

ROOT_CGROUP_ID: Final = 1         # the v2 root's id (its inode) on every kernel seen
MAX_WALK: Final = 200_000          # cgroup directories walked at most for the inode index
MAX_CACHE: Final = 8192            # cgroup ids (and root-cgroup processes) remembered
STATE_RETRIES: Final = 5           # asks of a runtime's state for a container it did not know
STATE_RETRY_INTERVAL: Final = 1.0  # seconds between those asks
_ROOTLESS: Final = re.compile(r"/user@(\d+)\.service/")


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A container as ECS names it; ``runtime`` is one of docker, containerd, cri-o, podman,
    systemd-nspawn, lxc (or cri: a Kubernetes container whose runtime left no state)."""

    id: str
    runtime: str
    name: str | None = None
    image_name: str | None = None
    image_id: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    namespace: str | None = None


def ecs_fields(info: ContainerInfo) -> dict[str, Any]:
    """The ECS ``container`` (and, for a Kubernetes pod, ``orchestrator``) fields of ``info``."""
    container: dict[str, Any] = {"id": info.id, "runtime": info.runtime}
    if info.name:
        container["name"] = info.name
    if info.image_name:
        container["image"] = {"name": info.image_name}
    out: dict[str, Any] = {"container": container}
    if info.pod_name or info.namespace or info.pod_uid:
        resource: dict[str, Any] = {"type": "pod"}
        if info.pod_name:
            resource["name"] = info.pod_name
        if info.pod_uid:
            resource["id"] = info.pod_uid
        orch: dict[str, Any] = {"type": "kubernetes", "resource": resource}
        if info.namespace:
            orch["namespace"] = info.namespace
        out["orchestrator"] = orch
    return out


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on a hybrid
    host), its root mounted (not a cgroup namespace's subtree); None when it is not."""
    data = read_capped(mountinfo, 4 << 20)
    if data is None:
        return None
    for line in data.decode("utf-8", "replace").splitlines():
        pre, sep, post = line.partition(" - ")
        fields, fstype = pre.split(), post.split(" ", 1)[0]
        if sep and fstype == "cgroup2" and len(fields) >= 5 and fields[3] == "/":
            return fields[4].replace("\\040", " ")
    return None


@dataclass(slots=True)
class _Entry:
    info: ContainerInfo | None
    match: CgroupMatch | None = None
    uid: int | None = None
    retries: int = 0
    retry_at: float = 0.0


class ContainerResolver:
    def __init__(self, roots: StateRoots | None = None, *, proc: str = "/proc",
                 cgroup_root: str | None = None, max_entries: int = MAX_CACHE,
                 rewalk_interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._state = StateReader(roots)
        self._proc = proc
        self._cgroot = cgroup_root if cgroup_root is not None else cgroup2_mount()
        self._max = max_entries
        self._rewalk = rewalk_interval
        self._clock = clock
        self._root_id = ROOT_CGROUP_ID
        if self._cgroot is not None:
            with contextlib.suppress(OSError):
                self._root_id = os.stat(self._cgroot).st_ino
        self._by_id: dict[int, _Entry] = {}
        self._by_proc: dict[tuple[int, int], _Entry] = {}
        self._inodes: dict[int, str] | None = None
        self._walked_at = -1e18
        # counters for metrics and doctor
        self.proc_reads = 0
        self.walks = 0
        self.unresolved = 0  # new cgroup ids whose path nothing could tell

    def __len__(self) -> int:
        return len(self._by_id)

    def lookup(self, pid: int, cgroup_id: int, start_time: int = 0) -> ContainerInfo | None:
        """The container of the task ``pid`` in cgroup ``cgroup_id`` (as the kernel record says),
        or None for a host task. Never raises; ``start_time`` (the task's, in clock ticks) keeps
        the per-process cache of the root cgroup's tasks right across pid reuse."""
        e = self._by_id.get(cgroup_id)
        if e is None:
            if cgroup_id == self._root_id or cgroup_id <= ROOT_CGROUP_ID:
                e = self._by_proc.get((pid, start_time))
                if e is None:
                    e = self._put(self._by_proc, (pid, start_time), self._resolve_proc(pid))
            else:
                e = self._put(self._by_id, cgroup_id, self._resolve_id(pid, cgroup_id))
        if e.retries and e.match is not None:
            self._retry(e)
        return e.info

    def _put(self, table: dict[Any, _Entry], key: Any, e: _Entry) -> _Entry:
        if len(table) >= self._max:
            del table[next(iter(table))]  # the oldest inserted: hot keys come back cheaply
        table[key] = e
        return e

    # -- path of a cgroup -------------------------------------------------------------------

    def _read_proc(self, pid: int) -> str | None:
        self.proc_reads += 1
        data = read_capped(f"{self._proc}/{pid}/cgroup", 64 << 10)
        return None if data is None else data.decode("utf-8", "replace")

    def _resolve_proc(self, pid: int) -> _Entry:
        text = self._read_proc(pid)
        if text is None:
            return _Entry(None)
        path, match = parse_proc_cgroup(text)
        return self._entry(match, path)

    def _resolve_id(self, pid: int, cgroup_id: int) -> _Entry:
        text = self._read_proc(pid)
        if text is not None:
            # the v2 line only: the cgroup id is a v2 cgroup's, shared by all its tasks
            path, _ = parse_proc_cgroup(text)
            if path is not None and (self._cgroot is None or self._is_cgroup(path, cgroup_id)):
                return self._entry(parse_path(path), path)  # no cgroup2 mount: taken as is
        path = self._path_of(cgroup_id)
        if path is None:
            self.unresolved += 1
            return _Entry(None)
        return self._entry(parse_path(path), path)

    def _is_cgroup(self, path: str, cgroup_id: int) -> bool:
        assert self._cgroot is not None
        try:
            return os.stat(self._cgroot + path).st_ino == cgroup_id
        except (OSError, ValueError):
            return False

    def _path_of(self, cgroup_id: int) -> str | None:
        """The path of a cgroup id by the inode index of the cgroup2 tree."""
        if self._cgroot is None:
            return None
        now = self._clock()
        if self._inodes is None or (cgroup_id not in self._inodes
                                    and now - self._walked_at >= self._rewalk):
            self._inodes = self._walk()
            self._walked_at = now
        return self._inodes.get(cgroup_id)

    def _walk(self) -> dict[int, str]:
        assert self._cgroot is not None
        self.walks += 1
        index: dict[int, str] = {}
        stack = [""]
        while stack and len(index) < MAX_WALK:
            rel = stack.pop()
            try:
                with os.scandir(self._cgroot + rel) as it:
                    for d in it:
                        if d.is_dir(follow_symlinks=False):
                            index[d.inode()] = f"{rel}/{d.name}"
                            stack.append(f"{rel}/{d.name}")
            except OSError:
                continue  # removed while walked, or unreadable
        if len(index) >= MAX_WALK:
            log.warning("more than %d cgroups under %s: the rest are not indexed",
                        MAX_WALK, self._cgroot)
        return index

    # -- details from the runtime's state ---------------------------------------------------

    def _entry(self, match: CgroupMatch | None, path: str | None) -> _Entry:
        if match is None:
            return _Entry(None)
        uid = None
        if path is not None and (m := _ROOTLESS.search(path)) is not None:
            uid = int(m.group(1))
        e = _Entry(None, match, uid)
        self._fill(e)
        return e

    def _fill(self, e: _Entry) -> None:
        assert e.match is not None
        try:
            d = self._state.details(e.match.runtime, e.match.id, e.uid)
        except Exception:  # state is outside data: a reader's bug must not stop the pipeline
            log.exception("reading the state of container %s failed", e.match.id)
            d = None
        if d is not None and d.not_container:
            e.info, e.retries = None, 0
            return
        e.info = _info(e.match, d)
        missing = d is None and e.match.runtime not in ("lxc",)
        if missing and e.retries < STATE_RETRIES:
            e.retries += 1
            e.retry_at = self._clock() + STATE_RETRY_INTERVAL
        else:
            e.retries = 0

    def _retry(self, e: _Entry) -> None:
        if self._clock() >= e.retry_at:
            self._fill(e)


def _info(m: CgroupMatch, d: Details | None) -> ContainerInfo:
    if d is None:
        return ContainerInfo(m.id, m.runtime, name=m.id if m.runtime in ("lxc",
                             "systemd-nspawn") else None, pod_uid=m.pod_uid)
    return ContainerInfo(
        m.id, d.runtime or m.runtime, name=d.name or (m.id if m.runtime in (
            "lxc", "systemd-nspawn") else None),
        image_name=d.image_name, image_id=d.image_id, pod_name=d.pod_name,
        pod_uid=d.pod_uid or m.pod_uid, namespace=d.namespace)
