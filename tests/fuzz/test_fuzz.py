"""Every saved fuzz input replayed, and a short fuzz run of every target.

- The seed corpus (tests/fuzz/corpus) and every input a fuzz run found (tests/fuzz/regressions:
  crashes, hangs, memory exhaustion, each kept once found) go through their target in this
  process: each must be accepted or refused with a one-line InputError naming the file.
- Then each target is fuzzed for a moment (VIGIL_FUZZ_SECONDS in all, default 12, split
  evenly), from those same inputs; anything it finds fails the test and is described. The long
  run is `python -m tests.fuzz.run --seconds 600` (README, "Fuzzing").
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import CORPUS, REGRESSIONS, ROOT, TARGETS, run_one

CORPUS_LIMIT = 512 << 10  # the committed seeds stay small


def _saved() -> list[tuple[str, Path]]:
    out = []
    for name in TARGETS:
        for d in (CORPUS / name, REGRESSIONS / name):
            if d.is_dir():
                out += [(name, f) for f in sorted(d.iterdir()) if f.is_file()]
    return out


SAVED = _saved()


@pytest.mark.parametrize("target,path", SAVED,
                         ids=[f"{t}/{p.parent.parent.name}/{p.name}" for t, p in SAVED])
def test_saved_input_is_handled_cleanly(target: str, path: Path) -> None:
    run_one(TARGETS[target], path.read_bytes())


def test_every_target_has_real_seeds_and_the_corpus_stays_small() -> None:
    sizes = {name: [f.stat().st_size for f in (CORPUS / name).iterdir()] for name in TARGETS}
    assert all(sizes.values()), [n for n, s in sizes.items() if not s]
    assert sum(map(sum, sizes.values())) < CORPUS_LIMIT


def test_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    """The README's command, shortened: every target fuzzed, nothing found."""
    if importlib.util.find_spec("atheris") is None:
        pytest.fail("atheris is missing: it is in pyproject's dev extra (./do installs it)")
    budget = float(os.environ.get("VIGIL_FUZZ_SECONDS", "12"))
    per_target = max(1.0, budget / len(TARGETS))
    found = tmp_path / "found"
    p = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "--seconds", str(per_target),
                        "--work", str(tmp_path / "work"), "--regressions", str(found),
                        "--no-nice"], cwd=ROOT, capture_output=True, text=True, check=False,
                       timeout=600)
    lines = {ln.split(":", 1)[0]: ln for ln in p.stdout.splitlines() if not ln.startswith(" ")}
    for name in TARGETS:
        runs = re.search(r", (\d+) runs,", lines.get(name, ""))
        assert runs and int(runs.group(1)) > 0, (name, p.stdout, p.stderr[-2000:])
    details = [f"{f.relative_to(found)} (base64): {base64.b64encode(f.read_bytes()[:3000])!r}"
               for f in sorted(found.rglob("*")) if f.is_file()]
    assert p.returncode == 0 and not details, (
        "the fuzzers found inputs a parser does not handle; save each under "
        "tests/fuzz/regressions/TARGET/ and fix the parser:\n" + p.stdout + "\n".join(details))
