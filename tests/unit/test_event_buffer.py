"""The perf event buffer's choices that need no kernel: sizes, the object, the option, the
summary line (the kernel side: tests/kernel/test_perfbuf.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.cli import build_parser
from vigil.kernel.backend import choose_event_buffer, perf_variant
from vigil.kernel.perfbuf import MIN_BUFFER_BYTES, per_cpu_pages
from vigil.losses import DROP_KINDS, RunSummary


def test_per_cpu_buffers_share_the_ring_size_in_powers_of_two() -> None:
    assert per_cpu_pages(16 << 20, 2, 4096) == 2048  # 8 MiB each
    assert per_cpu_pages(16 << 20, 3, 4096) == 1024  # 5.3 MiB rounded down to 4 MiB
    assert per_cpu_pages(1 << 20, 64, 4096) == MIN_BUFFER_BYTES // 4096  # never below the floor
    assert per_cpu_pages(1 << 20, 1, 65536) == 16  # 64 KiB pages (some arm64 kernels)
    assert per_cpu_pages(1 << 20, 256, 65536) == 1


def test_forced_buffers_are_taken_as_asked() -> None:
    assert choose_event_buffer("ring")[0] == "ring"
    assert choose_event_buffer("perf")[0] == "perf"
    with pytest.raises(ValueError, match="unknown event buffer"):
        choose_event_buffer("pipe")


def test_the_perf_variant_lies_beside_the_object() -> None:
    assert perf_variant(Path("/x/bpf_objects/x86_64/vigil.bpf.o")) == \
        Path("/x/bpf_objects/x86_64/vigil_perf.bpf.o")


def test_run_takes_the_option() -> None:
    p = build_parser()
    assert p.parse_args(["run"]).event_buffer == "auto"
    assert p.parse_args(["run", "--event-buffer", "perf"]).event_buffer == "perf"
    with pytest.raises(SystemExit):
        p.parse_args(["run", "--event-buffer", "pipe"])


def test_losses_of_unknown_kind_count_and_show_only_when_there_are_some() -> None:
    assert "drop_unknown" in DROP_KINDS
    kernel = ("(file 2, exec 0, exit 0, inflight 0, wfiles 0, wfiles_evicted 0, "
              "uring_reqs_evicted 0, net 0, net_conns 0, net_rate 0, shell 0, cred 0, sec 0")
    s = RunSummary(drops={"drop_file": 2, "drop_unknown": 0})
    assert s.dropped == 2 and f"kernel side {kernel});" in s.line()
    s = RunSummary(drops={"drop_file": 2, "drop_unknown": 3})
    assert s.dropped == 5 and f"kernel side {kernel}, unknown 3);" in s.line()
    s = RunSummary(drops={"drop_file": 2, "tail_call_failed": 1})
    assert s.dropped == 3 and f"kernel side {kernel}, tail_call_failed 1);" in s.line()


def test_network_events_left_out_by_the_filters_are_said_not_lost() -> None:
    s = RunSummary(drops={"net_filtered": 7})
    assert s.dropped == 0 and s.line().endswith("; left out by the network filters 7")
    assert "left out" not in RunSummary(drops={"net_filtered": 0}).line()
