"""What a run lost or did in part, by kind, and the summary line that says so at the stop.

Owns the names of every loss and every incomplete piece of work (the kernel side's counters,
the decoder's and the pipeline's), which of them start a rescan, and RunSummary. Does not own
the counting (vigil.kernel.backend, vigil.events) nor when losses are checked (vigil.agent).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from vigil.events.layout import Decoder

# Counters that mean "an event may be missing". Each new loss becomes an events-lost event (its
# kind: the counter's name less drop_ and _full), a warning, and a rescan of the watched trees.
# The kernel side: failed ring reserves by kind; file syscalls, VFS captures or io_uring requests
# not followed because their map (inflight, pending, uring_*) was full; write-opens not tracked
# (wfiles_full: their "modified" never comes); entries its LRU maps evicted (wfiles: a write-open
# whose "modified" is lost; uring_reqs: an io_uring request whose event is lost; counted exactly,
# vigil.kernel.lru); with the perf event buffer also samples perf lost that the BPF side could not
# count (4.x kernels: no kind); and the kernel side's tail calls that failed (a handler's slot
# empty: never expected; the event it would have built, if any, is lost).
KERNEL_DROP_KINDS = ("drop_file", "drop_exec", "drop_exit", "inflight_full", "wfiles_full",
                     "wfiles_evicted", "uring_reqs_evicted", "drop_net", "net_conns_full",
                     "net_rate", "drop_shell", "drop_cred", "drop_sec", "tail_call_failed",
                     "drop_unknown")
# Losses of network events only: no rescan of the watched trees finds them.
NET_DROP_KINDS = frozenset({"drop_net", "net_conns_full", "net_rate"})
_NET_LOST = frozenset(_k.removeprefix("drop_").removesuffix("_full") for _k in NET_DROP_KINDS)
# lost shell commands, privilege changes and tampering records: no scan finds them either
NO_RESCAN = _NET_LOST | {"shell", "cred", "sec"}
# User space: records the decoder could not read (short, or of an unknown kind or operation);
# write-opens the pipeline stopped following beyond MAX_OPEN_FILES (a "modified" at the exit of
# the process holding it is lost).
USER_DROP_KINDS = ("malformed", "open_files_evicted")
# Never expected: in the summary line only when not 0.
_SAID_WHEN_SOME = frozenset({"drop_unknown", "tail_call_failed"})
DROP_KINDS = KERNEL_DROP_KINDS + USER_DROP_KINDS
# Work done in part, no event missing: events whose path the kernel cut (reported with
# vigil.file.path_truncated; the rescan they start lets the baseline learn the real path), and
# /proc reads that failed (who-data without executable or command line), exec events without
# process.hash.sha256 (the reason is in each: vigil.process.hash_skipped). In the summary.
PARTIAL_KINDS = ("path_truncated", "proc_read_failed", "exe_hash_skipped")
RESCAN_KINDS = ("path_truncated",)


def kind_of(counter: str) -> str:
    return counter.removeprefix("drop_").removesuffix("_full")


@dataclass
class RunSummary:
    delivered: Counter[str] = field(default_factory=Counter)
    drops: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    baseline: dict[str, int] = field(default_factory=dict)  # FimService.counters(), when on
    rules: dict[str, int] = field(default_factory=dict)     # Detector.counters(), when on

    @property
    def dropped(self) -> int:
        """Lost by the kernel side."""
        return sum(self.drops.get(k, 0) for k in KERNEL_DROP_KINDS)

    @property
    def lost_in_user_space(self) -> int:
        return sum(self.drops.get(k, 0) for k in USER_DROP_KINDS)

    def _counts(self, kinds: Sequence[str]) -> str:
        return ", ".join(f"{kind_of(k)} {self.drops.get(k, 0)}" for k in kinds
                         if k not in _SAID_WHEN_SOME or self.drops.get(k))

    def line(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.delivered.items())) or "none"
        return (f"vigil: {sum(self.delivered.values())} events delivered ({kinds}) in "
                f"{self.seconds:.1f}s; {self.dropped} dropped by the kernel side "
                f"({self._counts(KERNEL_DROP_KINDS)}); {self.lost_in_user_space} lost in user "
                f"space ({self._counts(USER_DROP_KINDS)}); incomplete "
                f"({self._counts(PARTIAL_KINDS)})"
                + ("; baseline (" + ", ".join(f"{k} {n}" for k, n in self.baseline.items()) + ")"
                   if self.baseline else "")
                + ("; rules (" + ", ".join(f"{k} {n}" for k, n in self.rules.items()) + ")"
                   if self.rules else "")
                # left out on purpose (the network section's excluded ports and networks):
                # no loss, but said
                + (f"; left out by the network filters {self.drops['net_filtered']}"
                   if self.drops.get("net_filtered") else ""))


def decoder_counts(decoder: Decoder) -> dict[str, int]:
    """Records the decoder could not read, all reasons together."""
    return {"malformed": sum(decoder.malformed.values())}
