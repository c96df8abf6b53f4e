"""RingReader.fill_ratio on a real BPF ring buffer: Vigil's exec and exit programs fill it while
nobody reads; the ratio is exactly the bytes the drain then hands out (record headers and
8-byte alignment included), over the ring's size."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from vigil.kernel.btf_source import resolve_btf
from vigil.kernel.loader import BpfObjectSpec, LoadedObject, bundled_object
from vigil.kernel.ringbuf import RingReader

pytestmark = [pytest.mark.root]

RING = 1 << 20
PROGRAMS = ("handle_exec", "handle_exit")


@pytest.fixture(scope="module")
def obj() -> Iterator[LoadedObject]:
    with BpfObjectSpec.open(bundled_object("vigil"),
                            btf_custom_path=resolve_btf().custom_path) as spec:
        for p in spec.programs:
            spec.set_autoload(p.name, p.name in PROGRAMS or p.section == "tracepoint")
        spec.set_max_entries("events", RING)
        loaded = spec.load()
    with loaded:
        loaded.attach_all(PROGRAMS)
        yield loaded


def _bytes(records: list[int]) -> int:
    """Ring bytes of records of these lengths: an 8-byte header each, rounded up to 8."""
    return sum((n + 8 + 7) & ~7 for n in records)


def test_fill_ratio_is_the_unread_share_of_the_ring(obj: LoadedObject) -> None:
    with RingReader(obj.map_fd("events"), RING) as ring:
        list(ring.drain())
        for _ in range(40):
            subprocess.run(["/bin/true"], check=True)
        ratio = ring.fill_ratio()
        assert ratio is not None and 0 < ratio < 1
        pending = ratio * RING
        assert pending == int(pending) and int(pending) % 8 == 0
        # at least the 40 exec and 40 exit records; other programs of the machine may add more
        drained = [len(r) for r in ring.drain()]
        assert len(drained) >= 80
        # what was unread when asked is exactly the drain's first records (more may have come)
        prefixes = {_bytes(drained[:i]) for i in range(len(drained) + 1)}
        assert int(pending) in prefixes
        after = ring.fill_ratio()
        assert after is not None
        rest = [len(r) for r in ring.drain()]
        assert after * RING <= _bytes(rest)
    assert ring.fill_ratio() is None  # closed
