"""Security knobs under /proc/sys: always watched, and each write reported old -> new.

A root intruder's first moves often loosen the kernel's own defences: kernel pointers shown
again (``kernel.kptr_restrict``), ptrace of any process (``kernel.yama.ptrace_scope``), core
dumps piped to a program of theirs (``kernel.core_pattern``), a module loader of their choice
(``kernel.modprobe``), unprivileged BPF, function tracing off (which blinds kprobe- and
fentry-based monitors). Writing a value to a /proc/sys file is a file write like any other
(an open for writing, then a close), so the kernel side's file events see it; the agent watches
the knobs of ``KNOBS`` (those this kernel has) whatever the configuration says, reads every
value at start, and on a knob's "modified" reads it again and says what changed:
``vigil.sysctl: {name, old, new, weakened}`` (vigil.outputs.ecs). ``weakened`` compares
the two values by the knob's direction below; the pack rule
``vigil_file_sysctl_weakened.yml`` alerts on it.

Owns the table of knobs, the values last seen and what one write changed. Does not own the
kernel's watch list nor the events (vigil.agent marks them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

PROC_SYS: Final = b"/proc/sys/"

# name -> how the value weakens: "lower" (a smaller number is weaker), "higher" (a larger
# number is weaker), "zero" (0 turns the protection off; the other values are all on),
# "bits" (a bitmask of allowed functions: a new bit, or 1 = all, is weaker), "any" (the
# value names a program or a pattern: any change may hand root to someone else's code).
KNOBS: Final[dict[str, str]] = {
    "kernel.kptr_restrict": "lower",
    "kernel.dmesg_restrict": "lower",
    "kernel.modules_disabled": "lower",
    "kernel.kexec_load_disabled": "lower",
    "kernel.perf_event_paranoid": "lower",
    "kernel.randomize_va_space": "lower",
    "kernel.unprivileged_bpf_disabled": "zero",
    "kernel.yama.ptrace_scope": "lower",
    "kernel.sysrq": "bits",
    "kernel.core_pattern": "any",
    "kernel.modprobe": "any",
    "kernel.ftrace_enabled": "lower",
    "kernel.unprivileged_userns_clone": "higher",
    "kernel.io_uring_disabled": "lower",
    "net.core.bpf_jit_harden": "lower",
    "fs.protected_symlinks": "lower",
    "fs.protected_hardlinks": "lower",
    "fs.protected_fifos": "lower",
    "fs.protected_regular": "lower",
    "fs.suid_dumpable": "higher",
    "vm.mmap_min_addr": "lower",
    "user.max_user_namespaces": "higher",
}
MAX_VALUE: Final = 4096   # a knob's text is short; more is not read


def knob_path(name: str) -> bytes:
    return PROC_SYS + name.replace(".", "/").encode()


def read_value(path: bytes) -> str | None:
    """The knob's value as the kernel prints it, whitespace collapsed (``sysrq`` "176",
    ``ptrace_scope`` "1", tab-separated multi-value knobs as one line); None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = os.read(fd, MAX_VALUE)
        finally:
            os.close(fd)
    except OSError:
        return None
    return " ".join(raw.decode("utf-8", "replace").split())


def _int(v: str | None) -> int | None:
    try:
        return int(v.split()[0]) if v else None
    except ValueError:
        return None


def weakened(direction: str, old: str | None, new: str | None) -> bool:
    """Whether going from ``old`` to ``new`` loosens the protection (see KNOBS). An unknown
    old value (unreadable at start) counts as a change."""
    if old == new or new is None:
        return False
    if direction == "any":
        return True
    o, n = _int(old), _int(new)
    if n is None:
        return True
    if o is None:
        return True
    if direction == "lower":
        return n < o
    if direction == "higher":
        return n > o
    if direction == "zero":
        return n == 0 and o != 0
    # bits: 1 enables every function; any other value is a mask of allowed ones
    if o == 1:
        return False
    return n == 1 or bool(n & ~o)


@dataclass(frozen=True, slots=True)
class Knob:
    name: str
    path: bytes
    direction: str


class SysctlWatch:
    """The knobs this kernel has, their values last seen, and what a write changed."""

    def __init__(self, knobs: dict[str, str] = KNOBS, root: bytes = b"") -> None:
        # ``root`` prefixes the real files (tests point it at a scratch tree); events still
        # name /proc/sys paths
        self._root = root
        self.knobs: dict[bytes, Knob] = {}
        self.values: dict[bytes, str | None] = {}
        for name, direction in knobs.items():
            path = knob_path(name)
            value = read_value(root + path)
            if value is None and not os.path.exists(root + path):
                continue   # not built into this kernel (yama), or another distribution's
            self.knobs[path] = Knob(name, path, direction)
            self.values[path] = value

    def paths(self) -> list[bytes]:
        return list(self.knobs)

    def __contains__(self, path: bytes) -> bool:
        return path in self.knobs

    def changed(self, path: bytes) -> dict[str, object] | None:
        """A knob was written (its "modified"): its value now against the one last seen,
        which it replaces."""
        knob = self.knobs.get(path)
        if knob is None:
            return None
        old = self.values.get(path)
        new = read_value(self._root + path)
        if new is not None:
            self.values[path] = new
        out: dict[str, object] = {"name": knob.name, "old": old, "new": new,
                                  "weakened": weakened(knob.direction, old, new)}
        return {k: v for k, v in out.items() if v is not None}

    def described(self) -> list[dict[str, str]]:
        """For `vigil doctor`: each knob watched, how it weakens and its value now."""
        return [{"name": k.name, "path": os.fsdecode(k.path), "weakens": k.direction,
                 "value": self.values.get(k.path) or ""} for k in self.knobs.values()]
