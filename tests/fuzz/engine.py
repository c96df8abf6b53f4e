"""One fuzz target under atheris (libFuzzer for Python): `python -m tests.fuzz.engine NAME ARGS`.

ARGS are libFuzzer's (corpus directories, -max_total_time=S, -artifact_prefix=DIR/, ...);
tests/fuzz/run.py chooses them. The modules a target exercises (its parser, and PyYAML or
tarfile where they do the parsing) are imported under atheris' instrumentation, so the fuzzer
is guided by the branches they take.

Why atheris and not hypothesis: every target here parses bytes (or text) whose interesting
shapes are deep inside formats (an xz stream inside a tar inside an ar archive, a BTF type
table, YAML). Coverage guidance plus libFuzzer's mutators (insertions, splices, values
compared against in the code) walk from real seed files into those branches; hypothesis
generates from strategies without feedback from the code and would need a hand-written
generator per format to get past the first checksum.
"""

from __future__ import annotations

import importlib
import sys

# Per target (tests/fuzz/targets.py): the modules whose branches guide the fuzzer. Known before
# the targets are imported, since only what is imported under instrumentation is instrumented.
_BTFHUB = ("vigil.btfhub", "vigil.kernel.btf")
_PACKAGES = ("vigil.btfhub", "tarfile")
INSTRUMENT = {
    "ring": ("vigil.events",), "elf": _BTFHUB, "btf": _BTFHUB, "btfcheck": _BTFHUB,
    "bpfobj": _BTFHUB, "image": _BTFHUB, "package": _PACKAGES, "tar": _PACKAGES,
    "cpio": _PACKAGES, "config": ("vigil.config", "vigil.yamlfile", "yaml"),
    "archive": ("vigil.kernel.btf_archive", "tarfile"),
    "rules": ("vigil.rules", "yaml"),
    "uprobe": ("vigil.kernel.uprobes", "vigil.btfhub.elf", "vigil.btfhub.limits"),
}
# Modules a target imports only when it first runs: imported here, under instrumentation.
PRELOAD = {"rules": ("vigil.rules.loader", "vigil.rules.matcher")}


def main() -> None:
    import atheris

    name = sys.argv[1]
    with atheris.instrument_imports(include=list(INSTRUMENT[name])):
        from tests.fuzz import targets

        for module in PRELOAD.get(name, ()):
            importlib.import_module(module)
    target = targets.TARGETS[name]

    def one_input(data: bytes) -> None:
        targets.run_one(target, data)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
