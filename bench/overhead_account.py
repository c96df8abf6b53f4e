"""bench/overhead.py's bookkeeping: what one agent run delivered, counted as lost, or lost unseen.

Owns telling the agent's output lines apart (the workload's kernel events by kind, FIM events,
alerts, events-lost records, anything else about the workload), reading the summary line the
agent prints on stderr when it stops (its backend line too), and the per-kind account: for each
kind of workload event, expected vs delivered vs dropped as the agent counted it, and a verdict.

The verdict. Each kind's delivered + counted-dropped must equal what the workload did:
``exact`` when it does; ``UNACCOUNTED n`` when n events are neither delivered nor counted (a
bug to report); ``EXTRA n`` when n more were delivered than happened (duplicates); ``over n``
when the counters count n more than are missing (they also count losses of events outside the
workload, so nothing is hidden, but the account is not exact). Some counters lose only one kind
(a write-open not tracked loses only its ``modified``; a connect not followed only its
``connect``); the others (a failed ring reserve, a full in-flight table, a malformed record, an
output's drop) can lose any kind, so a kind short of events with such a counter non-zero is
``pooled n``, and the ``all`` row, which takes every counter, says whether the pool covers it.

Also owns one run's numbers (RunResult) and the tables printed from them (print_table: the
ratios and the verdict per mode, then the account per mode and kind, the counters behind it,
and the FIM events, alerts and other lines about the workload, which are reported apart and
never counted as delivered).

Does not own running anything (overhead.py) nor the counters' names (vigil.losses, imported so
a renamed counter is read by its new name).
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.losses import KERNEL_DROP_KINDS, USER_DROP_KINDS, kind_of

SENTINEL_PREFIX = ".bench-ready-"
NET_PORT = 29999  # below the ephemeral range: no client port takes it


@dataclass(frozen=True)
class Kinds:
    """A workload's event kinds and the agent's counters that can lose them."""

    dataset: str                         # event.dataset of its kernel events
    actions: tuple[str, ...]             # event.action of each kind
    shared: tuple[str, ...]              # counters that lose any of the kinds
    own: dict[str, tuple[str, ...]]      # kind -> counters that lose only that kind


FILE_KINDS = Kinds("vigil.file", ("created", "modified", "renamed", "deleted"),
                   ("drop_file", "inflight_full", "uring_reqs_evicted", "malformed",
                    "drop_unknown"),
                   {"modified": ("wfiles_full", "wfiles_evicted", "open_files_evicted")})
NET_KINDS = Kinds("vigil.network", ("connect", "accept"),
                  ("drop_net", "net_rate", "malformed", "drop_unknown"),
                  {"connect": ("net_conns_full",)})


@dataclass
class Tally:
    """One run's output, sorted: the workload's kernel events by kind, FIM events by action,
    alerts on workload events, events-lost records by kind (summed counts), other lines."""

    kernel: Counter[str] = field(default_factory=Counter)
    fim: Counter[str] = field(default_factory=Counter)
    alerts: int = 0
    lost: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)


def _about_workload(ev: dict[str, Any], kinds: Kinds, workdir: Path) -> bool:
    if kinds is NET_KINDS:
        return (ev.get("destination") or {}).get("port") == NET_PORT
    fpath = (ev.get("file") or {}).get("path", "")
    return (isinstance(fpath, str) and fpath.startswith(f"{workdir}/")
            and not fpath.rpartition("/")[2].startswith(SENTINEL_PREFIX))


def classify(ev: dict[str, Any], kinds: Kinds, workdir: Path, tally: Tally) -> None:
    """Count one output document where it belongs (nothing for lines not about the workload)."""
    event = ev.get("event") or {}
    if event.get("action") == "events-lost":
        drops = (ev.get("vigil") or {}).get("drops") or {}
        tally.lost[str(drops.get("kind"))] += int(drops.get("count") or 0)
        return
    if not _about_workload(ev, kinds, workdir):
        return
    dataset, kind = event.get("dataset"), event.get("kind")
    if kind == "alert":
        tally.alerts += 1
    elif dataset == kinds.dataset and kind == "event":
        tally.kernel[str(event.get("action"))] += 1
    elif dataset == "vigil.fim":
        tally.fim[str(event.get("action"))] += 1
    else:
        tally.other[f"{dataset}/{event.get('action')}"] += 1


def tally_file(path: Path, kinds: Kinds, workdir: Path) -> Tally:
    tally = Tally()
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                classify(json.loads(line), kinds, workdir, tally)
    return tally


def cheap_markers(kinds: Kinds, workdir: Path) -> tuple[bytes, ...]:
    """Byte strings that all appear in a workload kernel-event line (orjson writes no spaces):
    a fast count while the agent runs; the exact count is tally_file's, after it stopped."""
    about = (f'"port":{NET_PORT}}}' if kinds is NET_KINDS else f'path":"{workdir}/f').encode()
    return about, f'"dataset":"{kinds.dataset}"'.encode(), b'"kind":"event"'


# ---------------------------------------------------------------------------------------------
# The agent's stderr

_BACKEND_RE = re.compile(r"^vigil: (\w+) backend")
_GROUP_RE = {
    "kernel": re.compile(r"dropped by the kernel side \(([^)]*)\)"),
    "user": re.compile(r"lost in user space \(([^)]*)\)"),
}
_FILTERED_RE = re.compile(r"left out by the network filters (\d+)")
_NAMES = {"kernel": {kind_of(k): k for k in KERNEL_DROP_KINDS},
          "user": {kind_of(k): k for k in USER_DROP_KINDS}}


@dataclass
class Summary:
    line: str = ""                                    # empty: the agent printed none
    backend: str = ""                                 # from the agent's start-up line
    counters: dict[str, int] = field(default_factory=dict)   # vigil.losses names
    filtered: int = 0                                 # network events left out by config


def parse_stderr(text: str) -> Summary:
    s = Summary()
    for line in text.splitlines():
        if not s.backend and (m := _BACKEND_RE.match(line)):
            s.backend = m.group(1)
        if " events delivered " in line and "dropped by the kernel side" in line:
            s.line = line.strip()
    if not s.line:
        return s
    for group, rx in _GROUP_RE.items():
        m = rx.search(s.line)
        if m is None:
            continue
        for name, n in re.findall(r"([\w:]+) (\d+)", m.group(1)):
            s.counters[_NAMES[group].get(name, name)] = int(n)
    if m := _FILTERED_RE.search(s.line):
        s.filtered = int(m.group(1))
    return s


# ---------------------------------------------------------------------------------------------
# The account


@dataclass
class Row:
    kind: str
    expected: int
    delivered: int
    dropped: int

    def verdict(self, pool: int) -> str:
        """``pool``: counted losses this row's kind may be among but are not in ``dropped``."""
        missing = self.expected - self.delivered
        if self.delivered > self.expected:
            return f"EXTRA {self.delivered - self.expected}"
        if missing == self.dropped:
            return "exact"
        if missing < self.dropped:
            return f"over {self.dropped - missing}"
        if pool:
            return f"pooled {missing - self.dropped}"
        return f"UNACCOUNTED {missing - self.dropped}"


def account(tally: Tally, summary: Summary, kinds: Kinds, per_kind: int
            ) -> list[tuple[Row, str]]:
    """One row per kind, then ``all`` (every counter that can lose a workload event); each
    with its verdict. ``per_kind``: events of each kind the workload made (0: none expected)."""
    if not summary.line:   # no counters to account with: say so, never guess
        blind = [(Row(a, per_kind, tally.kernel[a], 0), "no summary") for a in kinds.actions]
        return [*blind, (Row("all", per_kind * len(kinds.actions),
                            sum(tally.kernel[a] for a in kinds.actions), 0), "no summary")]
    c = summary.counters
    outputs = sum(n for k, n in tally.lost.items() if k.startswith("output:"))
    pool = sum(c.get(k, 0) for k in kinds.shared) + outputs
    rows: list[tuple[Row, str]] = []
    for action in kinds.actions:
        own = sum(c.get(k, 0) for k in kinds.own.get(action, ()))
        row = Row(action, per_kind, tally.kernel[action], own)
        rows.append((row, row.verdict(pool)))
    total = Row("all", per_kind * len(kinds.actions), sum(r.delivered for r, _ in rows),
                pool + sum(r.dropped for r, _ in rows))
    return [*rows, (total, _total_verdict([r for r, _ in rows], pool))]


def _total_verdict(rows: list[Row], pool: int) -> str:
    """Every kind's own counters cover only that kind; the pool covers what they leave, of any
    kind. An extra event of one kind never offsets a missing one of another."""
    extra = sum(max(0, r.delivered - r.expected) for r in rows)
    short = sum(max(0, r.expected - r.delivered - r.dropped) for r in rows)
    over = sum(max(0, r.dropped - max(0, r.expected - r.delivered)) for r in rows)
    over += max(0, pool - short)
    parts = [f"EXTRA {extra}"] if extra else []
    if short > pool:
        parts.append(f"UNACCOUNTED {short - pool}")
    if over:
        parts.append(f"over {over}")
    return ", ".join(parts) or "exact"


def counters_text(summary: Summary, tally: Tally, kinds: Kinds) -> str:
    """The non-zero counters behind an account, by name."""
    names = [*kinds.shared, *(k for ks in kinds.own.values() for k in ks)]
    parts = [f"{k} {summary.counters[k]}" for k in names if summary.counters.get(k)]
    parts += [f"{k} {n}" for k, n in tally.lost.items() if k.startswith("output:") and n]
    if summary.filtered:
        parts.append(f"left out by the network filters {summary.filtered}")
    return ", ".join(parts) or "all zero"


# ---------------------------------------------------------------------------------------------
# Runs, and the tables


@dataclass
class RunResult:
    mode: str
    seconds: float
    backend: str = ""  # the one asked for ("" = the agent's choice)
    tally: Tally = field(default_factory=Tally)
    summary: Summary = field(default_factory=Summary)
    agent_cpu: float | None = None  # user+sys seconds from workload start to stop
    agent_cpu_workload: float | None = None  # the same, while the workload child ran
    window: float | None = None  # wall seconds the workload child ran (start-up included)
    lag: float | None = None  # seconds from workload end to the last new workload event (bound)
    syslog: int | None = None  # syslog mode: workload events rsyslog wrote
    per_kind: int = 0  # events of each kind the workload made that the agent should deliver
    kinds: Kinds = FILE_KINDS

    @property
    def label(self) -> str:
        return f"{self.mode}/{self.backend}" if self.backend and self.mode != "none" \
            else self.mode

    @property
    def workload_share(self) -> float:
        """The agent's CPU while the workload ran, as a percentage of one core."""
        if not self.window or self.agent_cpu_workload is None:
            return 0.0
        return 100 * self.agent_cpu_workload / self.window

    @property
    def delivered(self) -> int:
        return sum(self.tally.kernel[a] for a in self.kinds.actions)


def verdicts(runs: list[RunResult]) -> list[tuple[str, int, int, int, str]]:
    """Per kind and `all`: expected, delivered, dropped summed over the runs, and the verdict
    (`exact` only when every run's is; else each run's other verdicts, `rN: ...` when there
    are several runs)."""
    per_run = [account(r.tally, r.summary, r.kinds, r.per_kind) for r in runs]
    out = []
    for i, (row, _) in enumerate(per_run[0]):
        rows = [acc[i] for acc in per_run]
        bad = [f"r{n + 1}: {v}" if len(rows) > 1 else v
               for n, (_, v) in enumerate(rows) if v != "exact"]
        out.append((row.kind, sum(r.expected for r, _ in rows),
                    sum(r.delivered for r, _ in rows), sum(r.dropped for r, _ in rows),
                    "; ".join(bad) or "exact"))
    return out


def print_table(results: dict[str, list[RunResult]]) -> None:
    base = results["none"]
    base_min = min(r.seconds for r in base)
    base_med = statistics.median(r.seconds for r in base)
    wide = max(len(k) for k in results)
    header = (f"{'mode':<{wide}} {'min s':>7} {'med s':>7} {'min x':>6} {'med x':>6} "
              f"{'agent cpu':>9} {'cpu%':>5} {'delivered':>21}  account")
    print(header)
    print("-" * len(header))
    for label, runs in results.items():
        secs = [r.seconds for r in runs]
        lo, med = min(secs), statistics.median(secs)
        cpu = share = delivered = verdict = "-"
        if label != "none":
            total = verdicts(runs)[-1]
            delivered = f"{total[2]}/{total[1]}"
            if any(r.syslog is not None for r in runs):
                delivered += f"; syslog {min(r.syslog or 0 for r in runs)}"
            verdict = total[4]
            cpu = f"{statistics.median(r.agent_cpu or 0.0 for r in runs):.2f}s"
            share = f"{statistics.median(r.workload_share for r in runs):.0f}%"
        print(f"{label:<{wide}} {lo:>7.3f} {med:>7.3f} {lo / base_min:>6.2f} "
              f"{med / base_med:>6.2f} {cpu:>9} {share:>5} {delivered:>21}  {verdict}")
    print()
    print("Per kind, summed over runs (dropped: as the agent counted it):")
    header = (f"{'mode':<{wide}} {'kind':<9} {'expected':>9} {'delivered':>9} {'dropped':>8}"
              "  verdict")
    print(header)
    print("-" * len(header))
    for label, runs in results.items():
        if label == "none":
            continue
        for kind, exp, dlv, drp, verdict in verdicts(runs):
            print(f"{label:<{wide}} {kind:<9} {exp:>9} {dlv:>9} {drp:>8}  {verdict}")
        print(f"{'':<{wide}} counters: "
              + "; ".join(f"r{n + 1} {counters_text(r.summary, r.tally, r.kinds)}"
                          for n, r in enumerate(runs)))
        print(f"{'':<{wide}} apart:    {apart(runs)}")


def apart(runs: list[RunResult]) -> str:
    """What the runs' outputs said about the workload besides its kernel events."""
    fim = sum((r.tally.fim for r in runs), start=Counter[str]())
    other = sum((r.tally.other for r in runs), start=Counter[str]())
    parts = [f"FIM events {sum(fim.values())}"
             + (f" ({', '.join(f'{k} {n}' for k, n in sorted(fim.items()))})" if fim else ""),
             f"alerts {sum(r.tally.alerts for r in runs)}"]
    if other:
        parts.append("other " + ", ".join(f"{k} {n}" for k, n in sorted(other.items())))
    return "; ".join(parts)


def detail(r: RunResult) -> str:
    if r.mode == "none":
        return ""
    lag = f", output lag <= {r.lag:.1f}s" if r.lag is not None else ""
    return (f"  events {r.delivered} {dict(r.tally.kernel)}, {verdicts([r])[-1][4]}, agent cpu "
            f"{r.agent_cpu:.2f}s (during workload {r.agent_cpu_workload:.2f}s in "
            f"{r.window:.2f}s, {r.workload_share:.0f}%){lag}\n"
            f"      {r.summary.backend or '?'} backend; {r.summary.line or 'no summary line'}")
