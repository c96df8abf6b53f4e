"""The cells of the kernel x backend matrix: what a cell says, and how it is decided.

Owns the list of backends, which backend names a ``--backend`` request expands to, the test
suites a cell can run (``--suite``), reading a backend's availability from ``vigil doctor
--json``, the result of one cell (written by the guest as JSON, read back by the host) and its
verdict (a cell whose tests all skipped fails), counting a JUnit XML report (skip reasons
included), the Markdown table, and the BTF a
cell runs on: the kernel's own, or a tailored BTF made from the kernel's package with the kernel's
own hidden (``--btf tailored``; such cells are columns of their own, "auto (tailored BTF)", and
``btf_which_problem`` says whether ``vigil btf which`` really picked the expected archive entry).
Used on both sides of the VM boundary, so it needs nothing but the standard library.

Does not own booting (matrix.py), the kernels (kernels.py) or running pytest (guest.py).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BACKENDS = ("lsm", "fentry", "kprobe", "tracepoint")
AUTO = "auto"
# Which BTF the agent relocates against in a VM: the kernel's own /sys/kernel/btf/vmlinux, or a
# tailored BTF generated on the host from the kernel's package (the kernel's own hidden from
# Vigil with VIGIL_TEST_HIDE_KERNEL_BTF=1, the archive given with VIGIL_BTF_ARCHIVE).
KERNEL_BTF = "kernel"
TAILORED_BTF = "tailored"
BTF_MODES = (KERNEL_BTF, TAILORED_BTF)
# What each cell runs: the `matrix` subset of tests/kernel (the file operation table, exec/exit,
# io_uring: a few minutes per backend under emulation), or the whole of tests/kernel (FIM agent,
# bursts, perf buffer, tailored BTF, probes, loader too) with the cell's backend.
SUITES: dict[str, tuple[str, ...]] = {"matrix": ("-m", "matrix"), "kernel": ()}


def column(backend: str, btf: str = KERNEL_BTF) -> str:
    """The table column (and cell key) of ``backend`` on ``btf``: "auto", "auto (tailored BTF)"."""
    return backend if btf == KERNEL_BTF else f"{backend} ({btf} BTF)"


def run_dir(series: str, btf: str = KERNEL_BTF) -> str:
    """The results subdirectory of one VM: "6.12", "6.12-tailored-btf"."""
    return series if btf == KERNEL_BTF else f"{series}-{btf}-btf"


def btf_which_problem(which_stdout: str, key: str) -> str | None:
    """None when ``vigil btf which`` (``kind<TAB>path<TAB>origin``) chose the tailored BTF
    stored under archive key ``key``; otherwise what it chose instead."""
    fields = which_stdout.strip().split("\t")
    if len(fields) != 3:
        return f"vigil btf which printed {which_stdout.strip()[:300]!r}"
    kind, path, origin = fields
    if kind != "tailored":
        return f"vigil btf which chose {kind} BTF {path} ({origin}), not the tailored BTF"
    if not origin.endswith(f"key {key}"):
        return f"vigil btf which chose {origin}, not the archive entry {key}"
    return None


def expand(requested: Iterable[str]) -> list[str]:
    """``auto``, ``all`` (every backend) or backend names, de-duplicated, in order."""
    out: list[str] = []
    for r in requested:
        for name in (BACKENDS if r == "all" else (r,)):
            if name != AUTO and name not in BACKENDS:
                raise ValueError(f"unknown backend {name!r}: use auto, all or one of "
                                 f"{', '.join(BACKENDS)}")
            if name not in out:
                out.append(name)
    return out


def availability(doctor: dict[str, Any], name: str) -> tuple[str, str]:
    """("available" | "unsupported" | "unknown", reason) for backend ``name`` per the doctor.

    The chosen backend and those in ``backend.available`` are available; a rejected one is
    unsupported with the doctor's reason; a name the report does not mention is unknown (the
    cell still runs, and its tests decide).
    """
    backend = doctor.get("backend") or {}
    if name == AUTO or backend.get("chosen") == name:
        return "available", str(backend.get("reason", ""))
    if name in (backend.get("available") or []):
        return "available", ""
    rejected = backend.get("rejected") or {}
    if name in rejected:
        return "unsupported", str(rejected[name])
    return "unknown", "not mentioned by vigil doctor"


@dataclass
class Counts:
    tests: int = 0
    failed: int = 0  # failures and errors
    skipped: int = 0
    failures: list[str] = field(default_factory=list)  # test ids
    skips: list[str] = field(default_factory=list)  # "test id: reason"


def junit_counts(xml: Path) -> Counts | None:
    """What a pytest JUnit XML report counts; None when missing or unreadable."""
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return None
    c = Counts()
    for case in root.iter("testcase"):
        c.tests += 1
        if case.find("failure") is not None or case.find("error") is not None:
            c.failed += 1
            c.failures.append(f"{case.get('classname', '')}::{case.get('name', '')}")
        elif (skip := case.find("skipped")) is not None:
            c.skipped += 1
            c.skips.append(f"{case.get('classname', '')}::{case.get('name', '')}: "
                           f"{skip.get('message', '')}")
    return c


def verdict(rc: int | None, counts: Counts | None, timeout: float) -> tuple[str, str]:
    """(status, reason) of a cell from pytest's exit status (None: timed out) and its JUnit
    counts. A cell passes only when tests ran, none failed and not every one skipped: a cell
    whose tests all skipped tested nothing on that kernel and backend."""
    if rc is None:
        return "fail", f"timed out after {timeout:.0f}s"
    if rc == 5 or (counts is not None and counts.tests == 0):
        return "error", "no test was selected"
    if counts is None:
        return "fail", f"pytest exited {rc} without a report"
    if counts.failed:
        return "fail", ""
    if counts.skipped == counts.tests:
        return "fail", f"all {counts.tests} tests skipped"
    if rc != 0:
        return "fail", f"pytest exited {rc}"
    return "pass", ""


@dataclass
class Cell:
    """One kernel x backend result."""

    kernel: str
    backend: str
    status: str  # pass, fail, unsupported, error (the run itself broke), missing
    reason: str = ""
    chosen: str = ""  # for auto: the backend the agent picked
    tests: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    btf: str = KERNEL_BTF  # kernel or tailored (what the run asked for)
    btf_used: str = ""  # tailored: what `vigil btf which` said in the guest
    suite: str = "matrix"  # a key of SUITES
    skips: list[str] = field(default_factory=list)  # "test id: reason" of each skipped test

    @property
    def column(self) -> str:
        return column(self.backend, self.btf)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Cell:
        return cls(**json.loads(path.read_text()))

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "unsupported")

    def text(self) -> str:
        chose = f" [{self.chosen}]" if self.backend == AUTO and self.chosen else ""
        if self.status == "pass":
            skipped = f", {self.skipped} skipped" if self.skipped else ""
            return f"pass ({self.tests} tests{skipped}, {self.seconds:.0f}s){chose}"
        if self.status == "fail":
            if self.failed:
                why = f"; {self.reason}" if self.reason else ""
                return f"FAIL ({self.failed} failed of {self.tests}{why}){chose}"
            return f"FAIL ({self.reason}){chose}"
        if self.status == "unsupported":
            return f"unsupported ({self.reason})"
        return f"{self.status.upper()} ({self.reason})"


def cell_file(results: Path, kernel: str, backend: str, btf: str = KERNEL_BTF) -> Path:
    return results / run_dir(kernel, btf) / f"{backend}.json"


def markdown(kernels: Sequence[tuple[str, str]], columns: Sequence[str],
             cells: dict[tuple[str, str], Cell]) -> str:
    """A table: one row per (series, release), one column per backend (and BTF: ``column``);
    ``cells`` is keyed by (series, column)."""
    head = ["kernel", *columns]
    rows = [head, ["---"] * len(head)]
    for series, release in kernels:
        row = [f"{series} ({release})" if release else series]
        for b in columns:
            c = cells.get((series, b))
            row.append(c.text().replace("|", "\\|") if c else "MISSING")
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"
