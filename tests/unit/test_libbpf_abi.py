"""The ctypes mirror of struct bpf_object_open_opts matches the installed libbpf header."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from vigil.kernel.libbpf import BpfObjectOpenOpts, BpfUprobeOpts

HEADER = Path("/usr/include/bpf/libbpf.h")
FIELDS = ["sz", "object_name", "relaxed_maps", "pin_root_path", "kconfig", "btf_custom_path",
          "kernel_log_buf", "kernel_log_size", "kernel_log_level"]

C_SOURCE = """
#include <stddef.h>
#include <stdio.h>
#include <bpf/libbpf.h>
#define F(f) printf(#f " %zu\\n", offsetof(struct bpf_object_open_opts, f));
int main(void) {
    printf("sizeof %zu\\n", sizeof(struct bpf_object_open_opts));
    %FIELDS%
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or not HEADER.exists():
        pytest.skip("needs a C compiler and libbpf-dev headers")
    tmp = tmp_path_factory.mktemp("abi")
    src = tmp / "abi.c"
    src.write_text(C_SOURCE.replace("%FIELDS%", " ".join(f"F({f})" for f in FIELDS)))
    exe = tmp / "abi"
    subprocess.run([cc, "-o", str(exe), str(src)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_open_opts_size_matches_header(c_layout: dict[str, int]) -> None:
    assert ctypes.sizeof(BpfObjectOpenOpts) == c_layout["sizeof"]
    assert BpfObjectOpenOpts().sz == c_layout["sizeof"]


@pytest.mark.parametrize("field", FIELDS)
def test_open_opts_offsets_match_header(c_layout: dict[str, int], field: str) -> None:
    assert getattr(BpfObjectOpenOpts, field).offset == c_layout[field]


def test_known_x86_64_layout() -> None:
    # Measured on libbpf 1.1.2 x86_64; guards the mirror even where no compiler is installed.
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("64-bit layout only")
    assert ctypes.sizeof(BpfObjectOpenOpts) == 80
    assert BpfObjectOpenOpts._removed_attach_prog_fd.offset == 32
    assert BpfObjectOpenOpts.btf_custom_path.offset == 48
    assert BpfObjectOpenOpts.kernel_log_level.offset == 72


UPROBE_FIELDS = ["sz", "ref_ctr_offset", "bpf_cookie", "retprobe", "func_name"]


def test_uprobe_opts_match_header(tmp_path: Path) -> None:
    """struct bpf_uprobe_opts (vigil.kernel.uprobes attaches with it): size and offsets."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or not HEADER.exists():
        pytest.skip("needs a C compiler and libbpf-dev headers")
    src = tmp_path / "uprobe.c"
    src.write_text(C_SOURCE.replace("bpf_object_open_opts", "bpf_uprobe_opts")
                   .replace("%FIELDS%", " ".join(f"F({f})" for f in UPROBE_FIELDS)))
    subprocess.run([cc, "-o", str(tmp_path / "uprobe"), str(src)], check=True,
                   capture_output=True)
    out = subprocess.run([str(tmp_path / "uprobe")], check=True, capture_output=True,
                         text=True).stdout
    c = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    assert ctypes.sizeof(BpfUprobeOpts) == c["sizeof"] == BpfUprobeOpts().sz
    for f in UPROBE_FIELDS:
        assert getattr(BpfUprobeOpts, f).offset == c[f], f
