"""Real load/attach/map/close round trips of the loader on this machine's kernel."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil.kernel import mounts
from vigil.kernel.btf import Btf
from vigil.kernel.errors import LibbpfError, VerifierError
from vigil.kernel.loader import BpfObjectSpec, LoadedObject, bundled_object

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load eBPF programs")

BAD_PROGRAM = r"""
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
struct {
	__uint(type, BPF_MAP_TYPE_HASH); /* array lookups with a constant key are never NULL on 6.x */
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} m SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getppid")
int bad_deref(void *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&m, &k);
	return *v; /* no NULL check: the verifier must refuse this */
}
"""


def _object(name: str) -> Path:
    path = bundled_object(name)
    if not path.exists():
        rel = Path("..") / path.relative_to(BPF_DIR.parent)
        subprocess.run(["make", "-s", "-C", str(BPF_DIR), str(rel)], check=True)
    return path


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module", autouse=True)
def _mounted() -> None:
    if os.geteuid() == 0:
        mounts.ensure_mounted(securityfs=False)


@pytest.fixture
def testprog() -> Iterator[LoadedObject]:
    with BpfObjectSpec.open(_object("testprog")) as spec:
        spec.set_rodata(target_tgid=os.getpid(), bump=5)
        obj = spec.load()
    with obj:
        yield obj


def test_kernel_btf_vfs_unlink_prototype() -> None:
    if not Path("/sys/kernel/btf/vmlinux").exists():
        pytest.skip("this kernel has no BTF")
    with Btf.parse("/sys/kernel/btf/vmlinux") as btf:
        params = btf.func_proto("vfs_unlink")
        assert ("dentry", "struct dentry *") in params
        # Measured on this 6.18 kernel; 6.1 had struct user_namespace *, 5.10 struct inode *.
        assert params[0][1] in ("struct mnt_idmap *", "struct user_namespace *", "struct inode *")
        f_path = btf.struct_layout("file").field("f_path")
        assert f_path.size_bytes == 16 and f_path.type_name.endswith("struct path")
        # kind_flag bitfields: several one-bit fields share one byte offset, no byte size.
        bits = [f for f in btf.struct_layout("task_struct").fields if f.bitfield_size]
        assert bits and all(f.size_bytes is None for f in bits)
        assert len({f.bit_offset for f in bits}) == len(bits)


@pytest.mark.root
@needs_root
def test_rodata_reaches_the_kernel(testprog: LoadedObject) -> None:
    testprog.attach("on_getppid")
    counts = testprog.map("counts")
    key = struct.pack("I", 1)
    for _ in range(3):
        os.getppid()
    value = counts.lookup(key)
    assert value is not None
    # bump=5 proves the .rodata write: the compiled-in default is 1.
    assert struct.unpack("Q", value)[0] == 15
    hits = testprog.map("percpu_hits").lookup_percpu(struct.pack("I", 0))
    assert len(hits) == os.cpu_count() or len(hits) >= 1
    assert all(len(h) == 4 for h in hits)
    assert sum(struct.unpack("I", h)[0] for h in hits) == 3


@pytest.mark.root
@needs_root
def test_rodata_filter_ignores_other_processes() -> None:
    with BpfObjectSpec.open(_object("testprog")) as spec:
        spec.set_rodata(target_tgid=os.getpid())
        obj = spec.load()
    with obj:
        obj.attach_all()
        subprocess.run(["python3", "-c", "import os; os.getppid()"], check=True)
        assert obj.map("counts").lookup(struct.pack("I", 1)) is None


@pytest.mark.root
@needs_root
def test_map_round_trip(testprog: LoadedObject) -> None:
    m = testprog.map("counts")
    assert (m.key_size, m.value_size, m.max_entries) == (4, 8, 64)
    keys = [struct.pack("I", k) for k in (10, 11, 12)]
    for i, k in enumerate(keys):
        m.update(k, struct.pack("Q", i * 100))
    assert m.lookup(keys[2]) == struct.pack("Q", 200)
    assert sorted(m.keys()) == sorted(keys)
    assert m.delete(keys[0]) is True
    assert m.delete(keys[0]) is False
    assert m.lookup(keys[0]) is None
    assert sorted(m.keys()) == sorted(keys[1:])
    with pytest.raises(ValueError):
        m.update(b"\0", struct.pack("Q", 1))
    with pytest.raises(LibbpfError):  # BPF_NOEXIST on an existing key: EEXIST
        m.update(keys[1], struct.pack("Q", 1), flags=1)
    assert testprog.map_fd("counts") == m.fd


@pytest.mark.root
@needs_root
def test_verifier_rejection_gives_summary_and_log(tmp_path: Path) -> None:
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("needs clang")
    src = tmp_path / "bad.bpf.c"
    src.write_text(BAD_PROGRAM)
    obj_path = tmp_path / "bad.bpf.o"
    machine = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout
    subprocess.run([clang, "-g", "-O2", "-target", "bpf", f"-I/usr/include/{machine.strip()}",
                    "-c", str(src), "-o", str(obj_path)], check=True)
    with pytest.raises(VerifierError) as info, BpfObjectSpec.open(obj_path) as spec:
        spec.load()
    e = info.value
    assert e.program == "bad_deref"
    assert e.summary.strip() and "invalid mem access" in e.summary
    assert len(e.log) >= len(e.summary) and "invalid mem access" in str(e)
    assert e.exit_code == 2


@pytest.mark.root
@needs_root
def test_fds_are_closed_and_close_is_idempotent() -> None:
    before = _fd_count()
    with BpfObjectSpec.open(_object("testprog")) as spec:
        obj = spec.load()
        with pytest.raises(ValueError):
            spec.set_autoload("on_getppid", False)  # consumed by load()
    link = obj.attach("on_getppid")
    assert _fd_count() > before
    link.destroy()
    link.destroy()
    obj.close()
    obj.close()
    assert obj.closed
    with pytest.raises(ValueError):
        obj.map("counts")
    assert _fd_count() == before


@pytest.mark.root
@needs_root
def test_map_handle_refuses_after_close() -> None:
    with BpfObjectSpec.open(_object("testprog")) as spec:
        obj = spec.load()
    m = obj.map("counts")
    obj.close()
    with pytest.raises(ValueError, match="closed"):
        m.lookup(struct.pack("I", 1))


def test_unknown_rodata_name_is_a_value_error() -> None:
    with BpfObjectSpec.open(_object("testprog")) as spec, pytest.raises(
            ValueError, match="target_tgid"):
        spec.set_rodata(no_such_knob=1)


def test_missing_object_file() -> None:
    with pytest.raises(LibbpfError, match="does not exist"):
        BpfObjectSpec.open("/nonexistent/x.bpf.o")


@pytest.mark.root
@needs_root
def test_btf_custom_path_and_object_name(tmp_path: Path) -> None:
    with BpfObjectSpec.open(_object("testprog"), btf_custom_path="/sys/kernel/btf/vmlinux",
                            name="vigiltest") as spec:
        assert any(m.startswith("vigilt") for m in spec.maps)  # internal maps use the name
        obj = spec.load()
    obj.close()
    # A missing custom BTF is only noticed at load, and only by a program with CO-RE
    # relocations (probe_d_path reads file->f_path).
    with BpfObjectSpec.open(_object("probes"), btf_custom_path=str(tmp_path / "none")) as spec:
        for prog in spec.programs:
            spec.set_autoload(prog.name, prog.name == "probe_d_path")
        spec.set_autocreate("probe_events", False)
        with pytest.raises(LibbpfError) as info:
            spec.load()
    assert info.value.errno == errno.ENOENT
    assert "target BTF" in str(info.value)
