"""tests/conftest.py: under ./do test (VIGIL_STRICT_SKIPS=1) a skip a user could fix fails the
run; one they cannot fix stays a skip; either way a banner names every test that did not run.
Runs the real pytest on a small suite that uses the real conftest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SUITE = '''
import pytest

def test_runs():
    pass

def test_fixable():
    pytest.skip("needs clang")

@pytest.mark.skipif(True, reason="the children call legacy syscalls by their x86_64 numbers")
def test_unfixable():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False
'''


def run(tmp: Path, strict: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp / "conftest.py")
    (tmp / "test_suite.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "VIGIL_STRICT_SKIPS"}
    if strict:
        env["VIGIL_STRICT_SKIPS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp)], capture_output=True, text=True, env=env, cwd=tmp,
                          timeout=120)


def test_strict_mode_fails_a_fixable_skip(tmp_path: Path) -> None:
    p = run(tmp_path, strict=True)
    assert p.returncode == 1, p.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed" in p.stdout
    assert "must run every test (VIGIL_STRICT_SKIPS=1): needs clang" in p.stdout
    assert "1 TESTS DID NOT RUN" in p.stdout and "test_unfixable" in p.stdout


def test_without_strict_mode_skips_are_listed(tmp_path: Path) -> None:
    p = run(tmp_path, strict=False)
    assert p.returncode == 0, p.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in p.stdout
    assert "2 TESTS DID NOT RUN" in p.stdout and "needs clang" in p.stdout
