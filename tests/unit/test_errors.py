"""Vigil's error tree: one root, stable exit codes, one-sentence messages."""

from __future__ import annotations

import errno

import pytest

from vigil.kernel import libbpf
from vigil.kernel.errors import (
    BpfPermissionError,
    KernelError,
    LibbpfError,
    LibbpfMissingError,
    NotSupportedError,
    VerifierError,
    VigilError,
    errno_name,
)


@pytest.mark.parametrize("cls", [KernelError, NotSupportedError, VerifierError,
                                 BpfPermissionError, LibbpfError, LibbpfMissingError])
def test_every_kernel_error_is_a_vigil_error_with_exit_code_2(cls: type[VigilError]) -> None:
    assert issubclass(cls, KernelError) or cls is KernelError
    assert issubclass(cls, VigilError)
    assert cls.exit_code == 2


def test_not_supported_says_what_needs_and_has() -> None:
    e = NotSupportedError("fentry programs", "CONFIG_FUNCTION_TRACER", "none")
    assert str(e) == ("fentry programs not supported here: needs CONFIG_FUNCTION_TRACER, "
                      "kernel has none")
    assert (e.what, e.needs, e.have) == ("fentry programs", "CONFIG_FUNCTION_TRACER", "none")


def test_verifier_error_shows_summary_not_full_log() -> None:
    log = "0: R1=ctx\n" * 1000 + "R0 invalid mem access 'map_value_or_null'\n"
    e = VerifierError("bad", "R0 invalid mem access 'map_value_or_null'", log)
    assert "bad" in str(e) and "invalid mem access" in str(e)
    assert len(str(e)) < 200 and e.log == log


def test_permission_error_gives_a_hint() -> None:
    e = BpfPermissionError("loading x", errno.EPERM)
    assert "EPERM" in str(e) and e.hint in str(e)


def test_errno_translation() -> None:
    assert isinstance(libbpf.error_from_errno(errno.EPERM, "op"), BpfPermissionError)
    assert isinstance(libbpf.error_from_errno(errno.EACCES, "op"), BpfPermissionError)
    assert isinstance(libbpf.error_from_errno(errno.EOPNOTSUPP, "op"), NotSupportedError)
    assert isinstance(libbpf.error_from_errno(524, "op"), NotSupportedError)
    e = libbpf.error_from_errno(errno.EINVAL, "bpf_object__load")
    assert isinstance(e, LibbpfError) and e.errno == errno.EINVAL
    assert "EINVAL" in str(e) and "bpf_object__load" in str(e)
    assert errno_name(524) == "ENOTSUPP"


def test_check_helpers() -> None:
    assert libbpf.check_int(3, "op") == 3
    with pytest.raises(LibbpfError):
        libbpf.check_int(-errno.ENOENT, "op")
    with pytest.raises(KernelError):
        libbpf.check_ptr(None, "op")


def test_long_libbpf_messages_are_captured_whole() -> None:
    # Longer than the first 1 KiB vsnprintf pass: exercises the va_copy re-format path.
    path = "/nonexistent/" + "/".join(["d" * 200] * 12) + "/x.bpf.o"
    with libbpf.capture_log() as cap, pytest.raises(KernelError):
        libbpf.bpf_object__open_file(path)
    assert path in cap.text, cap.text[:300]
    assert any(path in line for line in libbpf.recent_log())


def test_missing_libbpf_raises_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lib(name: str, **kwargs: object) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(libbpf, "_libbpf", None)
    monkeypatch.setattr(libbpf.ctypes, "CDLL", no_lib)
    monkeypatch.setattr(libbpf.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(LibbpfMissingError, match="libbpf1"):
        libbpf.version()
