"""Fixtures for FIM integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    w = tmp_path / "w"
    (w / "sub").mkdir(parents=True)
    (w / "a.txt").write_text("alpha\n")
    (w / "sub" / "b.bin").write_bytes(b"\0\1\2")
    return w


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory outside root's private pytest tree, that an unprivileged user can traverse."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="vigil-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
