"""The JSON of file events written straight from the event (vigil.outputs.ecs_json) is the
JSON of their ECS document (vigil.outputs.ecs), byte for byte, on random events; and what a
batch writes is that JSON whichever way each event took."""

from __future__ import annotations

import random

import orjson
import pytest

from vigil.enrich.containers import ContainerInfo
from vigil.events.model import ExecEvent, FileEvent, FileOp, Process
from vigil.outputs.batch import Batch
from vigil.outputs.ecs import dumps, file_to_ecs, host_fields, to_ecs
from vigil.outputs.ecs_json import file_json, host_json

# names a filesystem allows: quotes, backslashes, control bytes, non-ASCII, non-UTF-8
_NAME_BYTES = [b"a", b"Z", b"0", b".", b"-", b" ", b'"', b"\\", b"\n", b"\x01", b"\x7f",
               "é".encode(), "日".encode(), "\U0001f600".encode(), b"\xff", b"\xc3"]


def _name(rng: random.Random) -> bytes:
    return b"".join(rng.choice(_NAME_BYTES) for _ in range(rng.randint(0, 6)))


def _path(rng: random.Random) -> bytes:
    if rng.random() < 0.05:
        return _name(rng)                     # a path without a slash
    return b"".join(b"/" + _name(rng) for _ in range(rng.randint(1, 4)))


def _maybe(rng: random.Random, value: object, p: float = 0.5) -> object:
    return value if rng.random() < p else None


def _process(rng: random.Random) -> Process:
    comm = _name(rng)[:15] or b"sh"
    return Process(
        pid=rng.randint(1, 4_000_000), tid=rng.randint(1, 4_000_000),
        ppid=rng.randint(0, 4_000_000), start_time=rng.randint(0, 10**9),
        parent_start_time=rng.randint(0, 10**9), uid=rng.choice([0, 1000, 65534]),
        gid=rng.choice([0, 1000]), euid=rng.choice([0, 1000]), egid=rng.choice([0, 1000]),
        auid=rng.choice([0, 1000, 0xFFFFFFFF]), session_id=rng.choice([3, 0xFFFFFFFF]),
        comm=comm, cgroup_id=rng.randint(1, 2**40), mnt_ns=rng.randint(1, 2**32),
        executable=_maybe(rng, _path(rng), 0.9),  # type: ignore[arg-type]
        args=_maybe(rng, [_name(rng) for _ in range(rng.randint(0, 3))]),  # type: ignore[arg-type]
        parent_executable=_maybe(rng, _path(rng)),  # type: ignore[arg-type]
        parent_args=_maybe(rng, [_name(rng)]),  # type: ignore[arg-type]
        user_name=_maybe(rng, "alice"), group_name=_maybe(rng, "staff"),  # type: ignore[arg-type]
        euser_name=_maybe(rng, "root"),  # type: ignore[arg-type]
        container=_maybe(rng, ContainerInfo("c0ffee", "podman", name="web",  # type: ignore[arg-type]
                                            image_name="nginx"), 0.2),
        enriched=rng.random() < 0.95)


def _event(rng: random.Random, procs: list[Process]) -> FileEvent:
    op = rng.choice(list(FileOp))
    target = None
    if op in (FileOp.RENAME, FileOp.LINK, FileOp.SYMLINK) or rng.random() < 0.05:
        target = _path(rng)
    return FileEvent(
        timestamp_ns=rng.randint(1_600_000_000 * 10**9, 1_900_000_000 * 10**9), op=op,
        path=_path(rng), process=rng.choice(procs),
        errno=rng.choice([0] * 8 + [2, 13]), target_path=target,
        mode=_maybe(rng, rng.randint(0, 0o177777)),  # type: ignore[arg-type]
        owner_uid=_maybe(rng, rng.randint(0, 2**32 - 1), 0.2),  # type: ignore[arg-type]
        owner_gid=_maybe(rng, rng.randint(0, 2**32 - 1), 0.2),  # type: ignore[arg-type]
        inode=rng.choice([None, 0, rng.randint(1, 2**63)]),
        flags=rng.choice([0, 0, 0, 1, 2, 4, 3, 256]),
        source=rng.choice(["kernel", "kernel", "rescan", "startup-scan"]),
        protected=_maybe(rng, "self", 0.05),  # type: ignore[arg-type]
        sysctl=_maybe(rng, {"name": "kernel.kptr_restrict", "old": "1", "new": "0"}, 0.05),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("seed", range(4))
def test_same_bytes_as_the_document(seed: int) -> None:
    rng = random.Random(seed)
    host = host_fields()
    hj = host_json(host)
    procs = [_process(rng) for _ in range(30)]
    written = declined = 0
    for _ in range(3000):
        ev = _event(rng, procs)
        reference = orjson.dumps(file_to_ecs(ev, host))
        fast = file_json(ev, hj)
        if fast is None:
            declined += 1
            continue
        written += 1
        assert fast == reference, ev
    # the common events are written straight, the uncommon ones are declined
    assert written > 500 and declined > 300


def test_common_events_are_taken() -> None:
    """The events of a burst (create, write, rename, delete by an enriched process with
    UTF-8 names) are the ones written straight: a decline would cost, not break."""
    rng = random.Random(7)
    p = _process(rng)
    p.enriched = True
    for op, target in ((FileOp.CREATE, None), (FileOp.MODIFY, None),
                       (FileOp.RENAME, b"/srv/new"), (FileOp.DELETE, None)):
        ev = FileEvent(1_700_000_000_123_456_789, op, "/srv/é \"x\"".encode(), p,
                       target_path=target, inode=42, mode=0o100644)
        assert file_json(ev, host_json({"name": "h"})) == orjson.dumps(
            file_to_ecs(ev, {"name": "h"}))


def test_batch_json_mixes_both_ways() -> None:
    """A batch's JSON: straight for the common file events, from the document for the rest
    (a failed one, an exec), in order, and the documents a reader asks for are still
    there."""
    rng = random.Random(11)
    host = host_fields()
    p = _process(rng)
    p.enriched = True
    events = [FileEvent(1_700_000_000_000_000_000 + i, FileOp.CREATE, b"/srv/f%d" % i, p,
                        errno=13 if i == 2 else 0) for i in range(5)]
    events.insert(3, ExecEvent(1_700_000_000_000_000_100, p))  # type: ignore[arg-type]
    batch = Batch(events, host)
    got = batch.json()
    assert got == [dumps(to_ecs(ev, host)) for ev in events]
    assert [orjson.loads(j)["event"]["action"] for j in got] == [
        "created", "created", "created", "exec", "created", "created"]
    assert batch.doc(4)["file"]["path"] == "/srv/f3"
    assert all(isinstance(d, dict) for d in batch.docs())
