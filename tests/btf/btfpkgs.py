"""Helpers of the BTF tooling tests: the kernels they use, the cache, the real command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VIGIL = ROOT / ".venv" / "bin" / "vigil"
CACHE = Path(os.environ.get("VIGIL_KERNEL_CACHE", "/var/cache/vigil-kernels/btf"))

# (suite, Debian architecture): the kernels the tests use. armhf has no BTF in Debian.
KERNELS = {
    "amd64": ("bookworm", "amd64"),
    "arm64": ("bookworm", "arm64"),
    "armhf": ("bookworm", "armhf"),
    "s390x": ("trixie", "s390x"),
    "ppc64el": ("trixie", "ppc64el"),
    "riscv64": ("trixie", "riscv64"),
}
VERSION_IDS = {"bullseye": "11", "bookworm": "12", "trixie": "13"}


def vigil(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it."""
    p = subprocess.run([str(VIGIL), *args], capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"vigil {' '.join(args)} exited {p.returncode}:\n{p.stderr}")
    return p
