"""The test kernel module for the tests: where it is for the running kernel, and whether this
kernel loads modules at all.

The module (tests/kmod/vigil_escalate.c) is built on the host for each kernel of the VM matrix
before that kernel's VM boots (tests/vm/kmod_build.py, run by ``./do test-kernels``), at
``<checkout>/build/kmod/<release>/vigil_escalate.ko``. The guest sees the host's filesystem as
its read-only root, so inside the VM the module is at that same path, ``<release>`` being the
guest's ``uname -r`` (e.g. ``/work/main/build/kmod/6.1.0-57-amd64/vigil_escalate.ko``). On a
kernel it was not built for (the host's own, or a matrix kernel whose build failed: the reason is
in ``build/kmod/<release>/build.log``) there is no file and ``escalate_module()`` is None.

Loaded (``insmod``), it creates /proc/vigil_escalate (mode 0222); any write to it replaces the
writer's credentials with root's by ``commit_creds(prepare_kernel_cred(...))``, with no set*id
syscall. ``rmmod vigil_escalate`` removes the file.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KMOD_DIR = ROOT / "build" / "kmod"
NAME = "vigil_escalate"
PROC_FILE = Path("/proc") / NAME


def escalate_module(release: str | None = None) -> Path | None:
    """The module built for the running kernel (or ``release``), None when there is none."""
    ko = KMOD_DIR / (release or os.uname().release) / f"{NAME}.ko"
    return ko if ko.is_file() else None


def module_support() -> bool:
    """Whether the running kernel can load modules at all (built with CONFIG_MODULES)."""
    return Path("/proc/modules").exists()
