"""Suite-wide rule: a test that does not run is said loudly, and under ``./do test`` it fails
unless the reason is one a user cannot fix.

``./do test`` sets VIGIL_STRICT_SKIPS=1: it runs as root after installing every package and
building every object, so "needs root", "clang missing", "objects not built" or "cache not
writable" there mean a broken set-up, and a skip would hide exactly the breakage the test is
for. What a user cannot fix on this machine (another CPU, a kernel built without BTF, a
distribution without merged /usr) stays a skip, listed in a banner at the end of the run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

STRICT = os.environ.get("VIGIL_STRICT_SKIPS") == "1"

# Reasons that no set-up step can change; each names a property of the machine.
UNFIXABLE = re.compile(
    r"x86_64|64-bit layout only|kernel has no BTF|kernel without BTF|no kernel BTF"
    r"|has no /sys/kernel/btf|no merged /usr"
    r"|backend sees io_uring's opens below io_uring|does not name the request on this kernel")


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not (STRICT and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    if UNFIXABLE.search(reason):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped, but ./do test must run every test (VIGIL_STRICT_SKIPS=1): "
                       f"{reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    terminalreporter.section(f"{len(skipped)} TESTS DID NOT RUN", sep="!", red=True, bold=True)
    for rep in skipped:
        terminalreporter.line(f"  {rep.nodeid}: {_reason(rep)}", red=True)
