"""The fuzz tests import their targets as `tests.fuzz.*`, the names `python -m tests.fuzz.run`
gives them from the checkout's root: that root must be importable."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
