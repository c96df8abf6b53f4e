"""Real Debian kernel packages for the BTF tooling tests, downloaded once and cached.

Packages come through `vigil btf fetch` (a private apt configuration per suite and
architecture; the machine's apt setup is untouched) into VIGIL_KERNEL_CACHE (default
/var/cache/vigil-kernels/btf), outside the checkout. The first run downloads about 1 GB (the
armhf debug package is 620 MB of it);
later runs reuse the files and the package lists (refreshed once a day).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from btfpkgs import CACHE, KERNELS

from vigil.btfhub.debian import fetch


@pytest.fixture(scope="session")
def kernel_deb() -> Callable[[str], Path]:
    """kernel_deb("arm64") -> the cached .deb of that kernel (downloaded on first use)."""
    try:  # a fresh machine has no cache yet: make it, as `vigil btf fetch` would
        CACHE.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        pytest.skip(f"cannot create the kernel cache {CACHE}: {e.strerror} "
                    "(run as root or set VIGIL_KERNEL_CACHE)")
    if not os.access(CACHE, os.W_OK):
        pytest.skip(f"{CACHE} is not writable (run as root or set VIGIL_KERNEL_CACHE)")
    got: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in got:
            suite, arch = KERNELS[name]
            fetched = fetch([suite], [arch], CACHE, report=lambda _: None)
            assert fetched, f"no kernel package for {suite}/{arch}"
            got[name] = fetched[-1].path
        return got[name]

    return get


@pytest.fixture(scope="session")
def debug_deb(kernel_deb: Callable[[str], Path]) -> Callable[[str], Path]:
    """debug_deb("armhf") -> the -dbg package (DWARF vmlinux) of kernel_deb's kernel."""
    from vigil.btfhub.debian import PrivateApt
    from vigil.btfhub.packages import read_package

    def get(name: str) -> Path:
        suite, arch = KERNELS[name]
        release = next(iter(read_package(kernel_deb(name)).images))
        apt = PrivateApt(CACHE, suite, arch)
        apt.update()
        package = f"linux-image-{release}-dbg"
        return apt.download(package, apt._version(package), CACHE / "dbg" / arch)

    return get
