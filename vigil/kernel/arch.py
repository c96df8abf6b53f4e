"""The CPU architectures Vigil ships BPF objects for, and their names in other worlds.

Owns the table that ties a `uname -m` name (the directory under vigil/bpf_objects/, the key of
the tailored-BTF index) to the Debian architecture, the kernel's ELF machine, byte order and
pointer width, and the choice of the object directory for the running machine. bpf/Makefile
holds the same list for the build side; tests/unit/test_bpf_build.py keeps the two in step.
Does not load anything.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from vigil.kernel.errors import NotSupportedError


@dataclass(frozen=True)
class Arch:
    name: str  # uname -m
    debian: str  # dpkg --print-architecture
    kernel: str  # the kernel's arch directory and bpf_tracing.h's __TARGET_ARCH_*
    elf_machine: int  # e_machine of the kernel's vmlinux
    big_endian: bool = False
    bits: int = 64

    @property
    def byteorder(self) -> str:
        return "big" if self.big_endian else "little"


ARCHES: dict[str, Arch] = {a.name: a for a in (
    Arch("x86_64", "amd64", "x86", 62),
    Arch("aarch64", "arm64", "arm64", 183),
    Arch("armv7l", "armhf", "arm", 40, bits=32),
    Arch("i686", "i386", "x86", 3, bits=32),
    Arch("ppc64le", "ppc64el", "powerpc", 21),
    Arch("s390x", "s390x", "s390", 22, big_endian=True),
    Arch("riscv64", "riscv64", "riscv", 243),
)}

# Other spellings of the same machines (uname -m of older x86 CPUs, Debian and Go names).
_ALIASES = {"i386": "i686", "i586": "i686", "x86": "i686", "amd64": "x86_64",
            "arm64": "aarch64", "armhf": "armv7l", "ppc64el": "ppc64le"}


def canonical(name: str) -> str:
    """The uname -m name Vigil uses for ``name`` (also accepts Debian names); raises
    NotSupportedError for a machine Vigil has no objects for."""
    arch = _ALIASES.get(name, name)
    if arch not in ARCHES:
        raise NotSupportedError(
            f"CPU architecture {name!r}", f"one of {', '.join(ARCHES)}",
            "no BPF objects for it in this Vigil package")
    return arch


def bits(name: str) -> int | None:
    """32 or 64: the width of ``name``'s longs and pointers (None: not a Vigil architecture)."""
    arch = ARCHES.get(_ALIASES.get(name, name))
    return arch.bits if arch else None


def machine() -> str:
    """This machine's architecture, canonical (see canonical())."""
    return canonical(platform.machine())


def from_debian(debian_arch: str) -> Arch:
    for a in ARCHES.values():
        if a.debian == debian_arch:
            return a
    raise NotSupportedError(f"Debian architecture {debian_arch!r}",
                            f"one of {', '.join(a.debian for a in ARCHES.values())}",
                            "no BPF objects for it in this Vigil package")
