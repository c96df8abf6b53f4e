"""The rules' differential test, corpus and oracle import each other as `tests.rules.*` (and
the fuzz target as `tests.fuzz.*`), as bench/rules.py does from the checkout's root: that root
must be importable."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
