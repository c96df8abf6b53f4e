"""PerfReader.fill_ratio on a real perf event array: Vigil's exec and exit programs (the
vigil_perf object) fill the buffer of one CPU while nobody reads; the ratio is that buffer's
unread bytes (perf's record headers and 8-byte alignment included) over its size."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from vigil.kernel.btf_source import resolve_btf
from vigil.kernel.loader import BpfObjectSpec, LoadedObject, bundled_object
from vigil.kernel.perfbuf import PerfReader

pytestmark = [pytest.mark.root]

PAGES = 16
PROGRAMS = ("handle_exec", "handle_exit")


@pytest.fixture(scope="module")
def obj() -> Iterator[LoadedObject]:
    with BpfObjectSpec.open(bundled_object("vigil_perf"),
                            btf_custom_path=resolve_btf().custom_path) as spec:
        for p in spec.programs:
            spec.set_autoload(p.name, p.name in PROGRAMS or p.section == "tracepoint")
        loaded = spec.load()
    with loaded:
        loaded.attach_all(PROGRAMS)
        yield loaded


def _perf_bytes(sizes: list[int]) -> int:
    """Perf buffer bytes of raw samples of these sizes: perf_event_header (8) and the u32
    size before each, rounded up to 8."""
    return sum((8 + 4 + n + 7) & ~7 for n in sizes)


def test_fill_ratio_is_the_fullest_cpu_buffers_unread_share(obj: LoadedObject) -> None:
    cpu = sorted(os.sched_getaffinity(0))[0]
    with PerfReader(obj.map_fd("events"), PAGES) as reader:
        list(reader.drain())
        assert reader.fill_ratio() is not None
        for _ in range(20):
            subprocess.run(["taskset", "-c", str(cpu), "/bin/true"], check=True)
        ratio = reader.fill_ratio()
        assert ratio is not None and 0 < ratio < 1
        pending = ratio * PAGES * os.sysconf("SC_PAGE_SIZE")
        sizes = [len(r) for r in reader.drain()]
        assert len(sizes) >= 40
        # the fullest buffer holds a subset of what the drain handed out, whole records
        assert 0 < pending <= _perf_bytes(sizes) and pending % 8 == 0
    assert reader.fill_ratio() is None
