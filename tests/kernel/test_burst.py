"""A burst of 150,000 file records: every one is delivered or counted as dropped.

50,000 x (create + close + unlink) from one child; each iteration is exactly three kernel
records (created, modified, deleted). Through the ring buffer and through the perf event array
(kernels before 5.8), each at 1 MiB (the kernel must drop some, and count them) and at the
default 16 MiB. Either way delivered + dropped == 150,000 (plus other processes' records lost in
the same window, see FOREIGN_SLACK), and the drops reported live (events-lost records) equal
the summary line's count.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from agent_proc import AgentProc, Event, get, py_child, under

pytestmark = [pytest.mark.root, pytest.mark.slow]

ITERATIONS = 50_000
RECORDS = 3 * ITERATIONS
# The drop counters are not per process: records of other processes that the kernel sends for
# user space to judge (a symlink created anywhere, a path with "..") and that are lost in the
# same window count too. On a quiet machine the excess is 0; a busy one (dpkg, builds) adds a few.
FOREIGN_SLACK = 100

BURST = f"""
flags = os.O_CREAT | os.O_WRONLY
for i in range({ITERATIONS}):
    p = W + '/f' + str(i)
    os.close(os.open(p, flags, 0o644))
    os.unlink(p)
"""


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-burst-", dir="/var/tmp")).resolve()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("buffer", ["ring", "perf"])
@pytest.mark.parametrize("ring_mb", [1, 16])
def test_every_record_delivered_or_counted(ring_mb: int, buffer: str, scratch: Path) -> None:
    watched = scratch / "w"
    watched.mkdir()
    config = scratch / "vigil.yaml"
    config.write_text(yaml.safe_dump({
        "ring_buffer_mb": ring_mb,
        "database": str(scratch / "baseline.db"),
        "state_dir": str(scratch / "state"),
        "directories": [{"path": str(watched)}],
    }))
    inside = under(watched)
    # The burst's events are counted as they arrive, by (pid, action), not kept: 150,000 parsed
    # events take over a GB, more than the kernel matrix's VMs have.
    seen: Counter[tuple[int, str]] = Counter()

    def keep(ev: Event) -> bool:
        if get(ev, "event.action") == "events-lost":
            return True
        if not inside(ev):
            return False
        if ".vigil-probe-" in str(get(ev, "file.path", "")):
            return True  # the readiness probe's
        seen[(get(ev, "process.pid"), get(ev, "event.action"))] += 1
        return False

    agent = AgentProc(["--no-exec", "--config", str(config), "--event-buffer", buffer],
                      db=scratch / "baseline.db", keep=keep).start()
    try:
        agent.probe(watched, timeout=60)
        t0 = time.monotonic()
        child = py_child(f"W = {str(watched)!r}\n{BURST}", timeout=120)
        burst_s = time.monotonic() - t0
    finally:
        rc, summary = agent.stop(timeout=120)
    assert rc == 0, "\n".join(agent.stderr_lines[-20:])
    assert summary is not None, "\n".join(agent.stderr_lines)

    # (the reader threads have ended: stop() joined them)
    by_action = Counter({action: n for (pid, action), n in seen.items() if pid == child.pid})
    delivered = sum(by_action.values())
    lost = [e for e in agent.events if get(e, "event.action") == "events-lost"]
    lost_by_kind: Counter[str] = Counter()
    for e in lost:
        lost_by_kind[get(e, "vigil.drops.kind")] += get(e, "vigil.drops.count")
    dropped = lost_by_kind["file"]
    print(f"\n{buffer} {ring_mb} MiB: burst {burst_s:.2f}s, delivered {delivered} "
          f"({dict(by_action)}), dropped {dropped}; summary: {summary.line}")

    assert set(by_action) <= {"created", "modified", "deleted"}
    assert all(n <= ITERATIONS for n in by_action.values())
    assert dropped == summary.file
    assert lost_by_kind["inflight"] == summary.inflight == 0
    # This kernel's bpf_perf_event_output reports a full buffer, so the BPF side counted every
    # loss perf reported: none is left without a kind.
    assert lost_by_kind["unknown"] == summary.unknown == 0
    excess = delivered + dropped - RECORDS
    assert 0 <= excess <= FOREIGN_SLACK, f"{delivered} delivered + {dropped} dropped"
    if ring_mb == 1:
        assert dropped > 0, f"a 1 MiB {buffer} buffer should not keep up with this burst"
