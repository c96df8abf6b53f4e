"""The BPF build: an object per architecture, the right byte order, a pinned and recorded
compiler, and identical bytes when built twice in different directories (no root)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vigil.btfhub.elf import EM_BPF, Elf
from vigil.kernel import arch as archmod
from vigil.kernel.errors import NotSupportedError
from vigil.kernel.loader import OBJECTS_DIR, bundled_object

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
SOURCES = sorted(p.name.removesuffix(".bpf.c") for p in BPF_DIR.glob("*.bpf.c"))
needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")


def _make(*args: str, cwd: Path = BPF_DIR, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "-j2", "-C", str(cwd), *args], capture_output=True,
                          text=True, check=check)


@pytest.fixture(scope="module")
def built() -> Path:
    """The package's objects, (re)built by the Makefile when missing or stale."""
    if shutil.which("clang") is None and not (OBJECTS_DIR / "BUILDINFO").exists():
        pytest.skip("objects not built and clang missing")
    if shutil.which("clang") is not None:
        _make()
    return OBJECTS_DIR


def test_makefile_and_arch_table_agree() -> None:
    text = (BPF_DIR / "Makefile").read_text()
    archs = re.search(r"^ALL_ARCHS := (.+)$", text, re.M)
    assert archs is not None
    assert archs.group(1).split() == list(archmod.ARCHES)
    for a in archmod.ARCHES.values():
        assert re.search(rf"^TARGET_ARCH_{a.name} := {a.kernel}$", text, re.M), a.name
    big = re.search(r"^BIG_ENDIAN := (.+)$", text, re.M)
    assert big is not None
    assert set(big.group(1).split()) == {a.name for a in archmod.ARCHES.values() if a.big_endian}
    bits32 = re.search(r"^BITS32 := (.+)$", text, re.M)
    assert bits32 is not None
    assert set(bits32.group(1).split()) == {a.name for a in archmod.ARCHES.values()
                                            if a.bits == 32}


@pytest.mark.parametrize("arch", list(archmod.ARCHES))
def test_every_arch_has_every_object_with_the_right_elf(built: Path, arch: str) -> None:
    a = archmod.ARCHES[arch]
    for name in SOURCES:
        path = bundled_object(name, arch)
        assert path.is_file(), f"{path} missing"
        elf = Elf(path.read_bytes(), str(path))
        assert elf.machine == EM_BPF
        assert elf.bits == 64  # the BPF virtual CPU is 64-bit on every architecture
        assert elf.big_endian == a.big_endian, f"{path}: wrong byte order"
        assert elf.section(".BTF") is not None and elf.section(".BTF.ext") is not None
        assert not any(s.name.startswith(".debug") for s in elf.sections), \
            f"{path}: DWARF should be stripped"


def test_buildinfo_records_the_toolchain_and_every_object(built: Path) -> None:
    info = (built / "BUILDINFO").read_text()
    pinned = re.search(r"^CLANG_VERSION := (\S+)$", (BPF_DIR / "Makefile").read_text(), re.M)
    assert pinned is not None
    assert f"clang-pinned: {pinned.group(1)}" in info
    assert re.search(rf"^clang: .*clang version {re.escape(pinned.group(1))}", info, re.M)
    sums = dict(reversed(line.split()[1:3]) for line in info.splitlines()
                if line.startswith("sha256 "))
    assert len(sums) == len(archmod.ARCHES) * len(SOURCES)
    for rel, digest in sums.items():
        assert hashlib.sha256((built / rel).read_bytes()).hexdigest() == digest, rel
    assert "arch s390x: -target bpfeb -D__TARGET_ARCH_s390" in info
    assert "arch i686: -target bpfel -D__TARGET_ARCH_x86 -DVIGIL_32BIT" in info


@needs_clang
@pytest.mark.slow
def test_building_twice_in_two_directories_gives_identical_bytes(tmp_path: Path) -> None:
    # Copies at two different paths: the checkout's location must not leak into the objects.
    outs = []
    for i, where in enumerate(("a/bpf", "some/much/longer/checkout/path/bpf")):
        src = tmp_path / where
        shutil.copytree(BPF_DIR, src, ignore=shutil.ignore_patterns("*.o", "*.tmp"))
        out = tmp_path / f"out{i}"
        _make(f"OBJDIR={out}", cwd=src)
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert len(files) == len(archmod.ARCHES) * len(SOURCES) + 1  # + BUILDINFO
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), f"{rel} differs"
    assert str(tmp_path).encode() not in (outs[0] / "x86_64" / "vigil.bpf.o").read_bytes()


def test_another_clang_is_refused_unless_allowed(tmp_path: Path) -> None:
    fake = tmp_path / "clang"
    fake.write_text("#!/bin/sh\necho 'Debian clang version 99.1.0'\n")
    fake.chmod(0o755)
    p = _make("-n", f"CLANG={fake}", f"OBJDIR={tmp_path / 'out'}", check=False)
    assert p.returncode != 0
    assert "clang 14" in p.stderr and "pinned" in p.stderr and "99.1.0" in p.stderr
    p = _make("-n", f"CLANG={fake}", f"OBJDIR={tmp_path / 'out'}", "ALLOW_OTHER_CLANG=1",
              check=False)
    assert p.returncode == 0, p.stderr
    assert "not be byte-identical" in p.stderr


def test_an_unknown_architecture_is_refused_by_the_build() -> None:
    p = _make("-n", "ARCHS=mips64", check=False)
    assert p.returncode != 0 and "unsupported architecture mips64" in p.stderr


def test_the_loader_refuses_an_unsupported_machine() -> None:
    with pytest.raises(NotSupportedError) as e:
        bundled_object("vigil", "mips64")
    assert "'mips64'" in str(e.value) and "x86_64" in str(e.value) and "s390x" in str(e.value)
    assert bundled_object("vigil", "i386") == OBJECTS_DIR / "i686" / "vigil.bpf.o"
    assert bundled_object("vigil").parent.name == archmod.canonical(os.uname().machine)


@pytest.mark.parametrize("machine", ["armv7l", "i686"])
def test_a_32bit_machine_gets_its_own_objects(monkeypatch: pytest.MonkeyPatch,
                                             machine: str) -> None:
    monkeypatch.setattr("vigil.kernel.loader.platform.machine", lambda: machine)
    assert bundled_object("vigil") == OBJECTS_DIR / machine / "vigil.bpf.o"
    assert bundled_object("vigil").is_file()
