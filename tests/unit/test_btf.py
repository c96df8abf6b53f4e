"""BTF reading and .rodata offset resolution against the compiled probes object (no root)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vigil.kernel.btf import Btf
from vigil.kernel.loader import BpfObjectSpec, bundled_object

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"


@pytest.fixture(scope="module")
def probes_obj() -> Path:
    path = bundled_object("probes")
    if not path.exists():
        if shutil.which("clang") is None:
            pytest.skip("probes.bpf.o is not built and clang is missing")
        rel = Path("..") / path.relative_to(BPF_DIR.parent)
        subprocess.run(["make", "-s", "-C", str(BPF_DIR), str(rel)], check=True)
    return path


def test_struct_layout_of_fixed_record(probes_obj: Path) -> None:
    with Btf.parse(probes_obj) as btf:
        rec = btf.struct_layout("probe_record")
    assert rec.size == 40
    got = [(f.name, f.offset_bytes, f.size_bytes, f.type_name) for f in rec.fields]
    assert got == [
        ("ts", 0, 8, "__u64"),
        ("pid", 8, 4, "__u32"),
        ("flags", 12, 4, "__u32"),
        ("comm", 16, 16, "char[16]"),
        ("kind", 32, 1, "__u8"),
        ("pad", 33, 7, "__u8[7]"),
    ]


def test_struct_layout_of_core_stub(probes_obj: Path) -> None:
    with Btf.parse(probes_obj) as btf:
        f = btf.struct_layout("file").field("f_path")
        assert (f.offset_bytes, f.size_bytes, f.type_name) == (0, 16, "struct path")
        with pytest.raises(KeyError):
            btf.struct_layout("no_such_struct")


def test_func_proto_of_program(probes_obj: Path) -> None:
    with Btf.parse(probes_obj) as btf:
        assert btf.func_proto("probe_raw_tp") == [("ctx", "struct bpf_raw_tracepoint_args *")]


def test_raw_datasec_lists_rodata_variables(probes_obj: Path) -> None:
    with Btf.parse(probes_obj) as btf:
        raw = btf.datasec_vars(".rodata")
    assert set(raw) == {"probe_magic", "probe_cookie", "probe_tag", "probe_template"}
    assert raw["probe_magic"][1] == 4 and raw["probe_template"][1] == 40


def test_rodata_offsets_resolved_after_open(probes_obj: Path) -> None:
    # clang leaves DATASEC offsets at 0 in the .o; libbpf fixes them up at open.
    with BpfObjectSpec.open(probes_obj) as spec:
        layout = spec.rodata_layout()
        assert layout == {"probe_magic": (0, 4), "probe_cookie": (8, 8), "probe_tag": (16, 8),
                          "probe_template": (24, 40)}
        spec.set_rodata(probe_magic=7, probe_cookie=2**63, probe_tag=b"abc")
        with pytest.raises(ValueError, match="probe_magic"):
            spec.set_rodata(nope=1)
        with pytest.raises(ValueError, match="holds 8 bytes"):
            spec.set_rodata(probe_tag=b"123456789")
        with pytest.raises(OverflowError):
            spec.set_rodata(probe_magic=2**40)


def test_open_lists_programs_and_maps(probes_obj: Path) -> None:
    with BpfObjectSpec.open(probes_obj) as spec:
        progs = {p.name: p.section for p in spec.programs}
        assert progs["probe_tracepoint"] == "tracepoint/syscalls/sys_enter_openat"
        assert progs["probe_lsm"] == "lsm/path_unlink"
        assert "probe_events" in spec.maps
        with pytest.raises(ValueError, match="probe_tracepoint"):
            spec.set_autoload("missing", False)
