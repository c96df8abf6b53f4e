"""The rule loader's fuzz target (tests/fuzz/target_rules.py) on every test run: its seeds,
any input the fuzzer saved as a regression (tests/fuzz/regressions/rules), and a fixed set of
mutations of the seeds (truncated, lines dropped or repeated, bytes changed, indentation
broken). Each must load or be refused with a one-line error naming the file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.fuzz.target_rules import SEEDS, run_one

REGRESSIONS = Path(__file__).resolve().parents[1] / "fuzz" / "regressions" / "rules"


def _inputs() -> list[tuple[str, bytes]]:
    seeds = sorted(SEEDS.glob("*.yml"))
    out = [(p.name, p.read_bytes()) for p in seeds]
    if REGRESSIONS.is_dir():
        out += [(f"regression/{p.name}", p.read_bytes()) for p in sorted(REGRESSIONS.iterdir())]
    rnd = random.Random(12)
    for p in seeds:
        data = p.read_bytes()
        lines = data.splitlines(keepends=True)
        for k in range(12):
            cut = rnd.randrange(len(data))
            out.append((f"{p.name}:cut{k}", data[:cut]))
            i = rnd.randrange(len(lines))
            out.append((f"{p.name}:drop{k}", b"".join(lines[:i] + lines[i + 1:])))
            out.append((f"{p.name}:dup{k}", b"".join(lines[:i] + [lines[i]] * 3 + lines[i:])))
            b = bytearray(data)
            for _ in range(3):
                b[rnd.randrange(len(b))] = rnd.choice(b"|*?\\'\":-[]{}&!%\x00\xff ")
            out.append((f"{p.name}:bytes{k}", bytes(b)))
            out.append((f"{p.name}:indent{k}", b"".join(
                ln[2:] if j == i else ln for j, ln in enumerate(lines))))
    return out


@pytest.mark.parametrize(("name", "data"), _inputs(), ids=lambda x: x if isinstance(x, str)
                         else "")
def test_rule_input_is_loaded_or_refused_cleanly(name: str, data: bytes) -> None:
    run_one(data)
