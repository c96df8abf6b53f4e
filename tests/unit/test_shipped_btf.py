"""The tailored-BTF archive shipped in the package is current, and the README's pipeline to
refresh it names real commands and options (no root, no network)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vigil.btfhub.check import check
from vigil.btfhub.gen import core_signature, objects_for
from vigil.cli import build_parser
from vigil.kernel import arch as archmod
from vigil.kernel.btf_archive import SHIPPED, BtfArchive
from vigil.kernel.loader import OBJECTS_DIR

README = Path(__file__).resolve().parents[2] / "README.md"
REFRESH = "the README's \"Adding kernels and refreshing the archive\""


@pytest.fixture(scope="module")
def archive() -> BtfArchive:
    return BtfArchive(SHIPPED)


def test_the_archive_covers_debian_64_and_32_bit(archive: BtfArchive) -> None:
    keys = archive.index.kernels
    for version, arches in (("11", ("x86_64", "aarch64", "armv7l", "i686")),
                            ("12", ("x86_64", "aarch64", "armv7l", "i686")),
                            ("13", ("x86_64", "aarch64", "armv7l"))):  # trixie: no i386 kernel
        for arch in arches:
            assert any(k.startswith(f"debian/{version}/{arch}/") for k in keys), (version, arch)
    for key in keys:
        _, _, arch, release = key.split("/")
        assert archmod.canonical(arch) == arch and release


def test_the_archive_was_made_for_these_objects(archive: BtfArchive) -> None:
    if not (OBJECTS_DIR / "BUILDINFO").exists():
        pytest.skip("objects not built (make -C bpf)")
    for arch, recorded in sorted(archive.index.signatures.items()):
        now = core_signature(objects_for(arch, OBJECTS_DIR))
        assert now == recorded, (
            f"the {arch} objects' CO-RE relocations changed since {SHIPPED.name} was made: "
            f"regenerate it ({REFRESH})")


def test_every_shipped_btf_resolves_every_relocation() -> None:
    if not (OBJECTS_DIR / "BUILDINFO").exists():
        pytest.skip("objects not built (make -C bpf)")
    rows = check([SHIPPED])
    bad = {r.label: {n: res.missing() for n, res in r.results.items() if not res.ok}
           for r in rows if not r.ok}
    assert not bad, f"regenerate the archive ({REFRESH}): {bad}"


def test_the_readme_pipeline_uses_real_options() -> None:
    text = README.read_text()
    block = re.search(r"### Adding kernels and refreshing the archive\n.*?```\n(.*?)```", text,
                      re.S)
    assert block is not None
    commands = [ln.strip() for ln in block.group(1).splitlines()
                if ln.strip().startswith("vigil ")]
    assert [c.split()[2] for c in commands] == ["fetch", "fetch", "extract", "extract", "gen",
                                               "check"]
    parser = build_parser()
    for cmd in commands:
        argv = [a.replace("$C", "/c").replace("$v", "12") for a in shlex.split(cmd)[1:]]
        parser.parse_args(argv)  # exits (fails the test) on an unknown option
