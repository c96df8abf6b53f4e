"""Vigil's exception tree (psutil-style typed errors at the C boundary).

Owns the root error type of the whole product (`VigilError`), the root of errors about outside
data (`InputError`: a damaged or hostile file, named with the byte offset or line where it goes
wrong) and the kernel-boundary subclasses. Other packages import `VigilError` and `InputError`
from here and may subclass them; they do not add kernel errors elsewhere. Translating errno
values into these types lives in vigil.kernel.libbpf.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "BpfPermissionError",
    "BtfNotFoundError",
    "InputError",
    "KernelError",
    "LibbpfError",
    "LibbpfMissingError",
    "NotSupportedError",
    "VerifierError",
    "VigilError",
    "errno_name",
]

# The kernel's internal ENOTSUPP leaks out of bpf(2); Python's errno table does not know it.
ENOTSUPP = 524


def errno_name(err: int) -> str:
    """'EPERM', 'ENOTSUPP', or 'errno 1234' for values nobody named."""
    if err == ENOTSUPP:
        return "ENOTSUPP"
    return _errno.errorcode.get(err, f"errno {err}")


def errno_text(err: int) -> str:
    """'EPERM (Operation not permitted)': name plus the C library's description."""
    if err == ENOTSUPP:
        return "ENOTSUPP (operation not supported by the kernel)"
    return f"{errno_name(err)} ({os.strerror(err)})"


class VigilError(Exception):
    """Root of every error Vigil raises on purpose; the CLI turns it into a message + exit code."""

    exit_code: int = 2


class InputError(VigilError):
    """Outside data (a package or image from the network, a BTF from another distribution, a
    user's config, a kernel record) is damaged, truncated or hostile.

    One sentence that names the file, and the byte offset or line where it applies:
    ``InputError("truncated ELF header", source="vmlinux", offset=0x40)`` reads
    "vmlinux: at byte 0x40: truncated ELF header". Without ``source`` the message is taken as
    already naming its file (the older "FILE: what" form of the subclasses).
    """

    def __init__(self, what: str, *, source: str | None = None, offset: int | None = None,
                 line: int | None = None) -> None:
        self.what = what
        self.source = source
        self.offset = offset
        self.line = line
        where = source or ""
        if source is not None and line is not None:
            where = f"{source}:{line}"
        elif source is not None and offset is not None:
            where = f"{source}: at byte {offset:#x}"
        # one line whatever the parts hold (a tool's stderr, a name with a newline in it)
        text = f"{where}: {what}" if where else what
        super().__init__(text.replace("\r", " ").replace("\n", " "))


class KernelError(VigilError):
    """The kernel or libbpf refused or could not do something."""

    errno: int | None = None  # the errno behind it, when there was one


class NotSupportedError(KernelError):
    """A feature is missing on this kernel: says what, what it needs and what the kernel has."""

    def __init__(self, what: str, needs: str, have: str, errno: int | None = None) -> None:
        self.what = what
        self.errno = errno
        self.needs = needs
        self.have = have
        super().__init__(f"{what} not supported here: needs {needs}, kernel has {have}")


class VerifierError(KernelError):
    """The BPF verifier rejected a program.

    `summary` holds the last few meaningful verifier lines (what a human needs first);
    `log` holds the complete log and is shown only when asked for (it can be megabytes).
    """

    def __init__(self, program: str, summary: str, log: str, errno: int | None = None) -> None:
        self.program = program
        self.summary = summary
        self.log = log
        self.errno = errno
        first = summary.strip().splitlines()[-1] if summary.strip() else "no verifier output"
        super().__init__(f"the verifier rejected BPF program '{program}': {first}")


class BpfPermissionError(KernelError):
    """EPERM/EACCES from bpf(2) or mount(2): missing privileges, or a sandbox/lockdown/LSM."""

    errno: int

    def __init__(self, operation: str, errno: int = _errno.EPERM, hint: str | None = None) -> None:
        self.operation = operation
        self.errno = errno
        if hint is None:
            # As root the capabilities are there, so blaming them would send people the wrong way.
            hint = (
                "the kernel's lockdown, an LSM or the sandbox forbids it"
                if os.geteuid() == 0
                else "run as root (needs CAP_BPF+CAP_PERFMON, or CAP_SYS_ADMIN)"
            )
        self.hint = hint
        super().__init__(f"{operation} failed with {errno_name(errno)}: {hint}")


class LibbpfError(KernelError):
    """A libbpf call failed with an errno that has no more specific type."""

    errno: int

    def __init__(self, operation: str, errno: int, detail: str | None = None) -> None:
        self.operation = operation
        self.errno = errno
        self.detail = detail
        msg = f"{operation} failed: {errno_text(errno)}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class LibbpfMissingError(KernelError):
    """The system libbpf is not installed, cannot be loaded, or is older than Vigil needs."""


class BtfNotFoundError(KernelError):
    """No BTF describes the running kernel: not its own, no vmlinux file, nothing shipped.

    ``tried`` lists every place looked at and why each did not fit."""

    def __init__(self, kernel: str, tried: list[str]) -> None:
        self.tried = tried
        lines = "\n".join(f"  - {t}" for t in tried)
        super().__init__(
            f"no BTF for this kernel ({kernel}); CO-RE programs cannot be relocated without "
            f"it. Tried:\n{lines}\nPass --btf FILE (or set VIGIL_BTF) to a BTF or vmlinux of "
            f"this kernel; `vigil btf extract` gets one from its package.")
