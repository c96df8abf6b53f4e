"""The agent run with another set of BPF objects, for before/after comparisons in one run
(bench/prog_cost.py, bench/overhead.py --baseline-objects).

package_with() copies the vigil package with ``objects`` (laid out like vigil/bpf_objects) as its
bpf_objects; agent_launch() is how to start `vigil` from that copy. Nothing in the checkout
changes. A set from another revision:

    git worktree add /tmp/base REV && make -C /tmp/base/bpf ARCHS=$(uname -m) OBJDIR=/tmp/base-objs
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"


def package_with(objects: Path, into: Path) -> Path:
    """A copy of the vigil package whose bpf_objects is ``objects``; returns its parent."""
    shutil.copytree(ROOT / "vigil", into / "vigil", symlinks=True,
                    ignore=shutil.ignore_patterns("bpf_objects", "__pycache__"))
    shutil.copytree(objects, into / "vigil" / "bpf_objects", symlinks=True)
    return into


def agent_launch(pkg: Path) -> tuple[list[str], dict[str, str], Path]:
    """(argv prefix, environment, working directory) that run `vigil` from the copy at ``pkg``:
    the argv prefix takes vigil's arguments after it. The working directory is the copy's
    parent on purpose: `python -c` puts it first on sys.path, so started from the checkout it
    would import the checkout's package, objects included."""
    argv = [str(PYTHON), "-c", "import sys; from vigil.cli import main; sys.exit(main())"]
    return argv, dict(os.environ, PYTHONPATH=str(pkg)), pkg
