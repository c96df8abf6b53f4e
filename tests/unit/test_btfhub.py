"""BTF tooling without root or network: raw BTF, CO-RE resolution, reachability, the archive
and the run-time choice of BTF, against this machine's real kernel BTF and real objects."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vigil.btfhub.core import BpfObject, ReloKind, check_object, reachable
from vigil.btfhub.rawbtf import RawBtf, blob_length, detect_arch, essential_name, find_blobs
from vigil.kernel import arch as archmod
from vigil.kernel.btf_archive import ArchiveIndex, BtfArchive, kernel_key, write_archive
from vigil.kernel.btf_source import btf_problem, resolve_btf
from vigil.kernel.errors import BtfNotFoundError
from vigil.kernel.loader import bundled_object

KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
needs_kernel_btf = pytest.mark.skipif(not KERNEL_BTF.exists(), reason="kernel without BTF")


@pytest.fixture(scope="module")
def kernel() -> RawBtf:
    if not KERNEL_BTF.exists():
        pytest.skip("this kernel has no /sys/kernel/btf/vmlinux")
    return RawBtf.from_file(KERNEL_BTF)


@pytest.fixture(scope="module")
def vigil_obj() -> BpfObject:
    path = bundled_object("vigil")
    if not path.exists():
        pytest.skip("vigil.bpf.o not built (make -C bpf)")
    return BpfObject.from_file(str(path))


def test_essential_name_follows_libbpf() -> None:
    assert essential_name("task_struct___pre55") == "task_struct"
    assert essential_name("a___b___c") == "a___b"
    assert essential_name("task_struct") == "task_struct"
    assert essential_name("___x") == "___x"
    assert essential_name("x____y") == "x____y"  # four underscores: not a flavor separator


def test_kernel_btf_parses_and_tells_its_architecture(kernel: RawBtf) -> None:
    assert len(kernel) > 10_000
    assert detect_arch(kernel) == archmod.machine()
    assert kernel.pointer_size == 8
    assert kernel.by_name("task_struct")


def test_blob_validation_rejects_lookalikes(kernel: RawBtf) -> None:
    blob = kernel.blob
    assert blob_length(blob) == len(blob)
    damaged = bytearray(blob)
    struct.pack_into("<I", damaged, 4, 32)  # header length must be 24
    assert blob_length(bytes(damaged)) is None
    assert blob_length(blob[: len(blob) // 2]) is None  # truncated
    # found inside other bytes, at its offset, with its exact length
    assert list(find_blobs(b"\x9f\xeb\x01\x00junk" + blob + b"tail")) == [(8, len(blob))]


def test_byte_order_round_trip(kernel: RawBtf) -> None:
    be = RawBtf(kernel.in_byte_order(True))
    assert be.big_endian and len(be) == len(kernel)
    assert be.type(kernel.by_name("file")[0].id) == kernel.by_name("file")[0]
    assert RawBtf(be.in_byte_order(False)).blob == kernel.blob


@needs_kernel_btf
def test_every_relocation_resolves_against_this_kernel(kernel: RawBtf) -> None:
    for name in ("vigil", "probes", "testprog"):
        res = check_object(BpfObject.from_file(str(bundled_object(name))), kernel)
        assert res.ok, res.missing()


def test_a_removed_field_is_named(kernel: RawBtf, vigil_obj: BpfObject) -> None:
    broken = RawBtf(kernel.with_member_removed("file", "f_path"))
    res = check_object(vigil_obj, broken)
    assert not res.ok
    assert res.missing() == ["struct file has no field f_path"]
    assert {f.relo.spec.split(".")[0] for f in res.failures} == {"struct file"}


def test_a_removed_struct_is_named(kernel: RawBtf, vigil_obj: BpfObject) -> None:
    # Rename 'fdtable' in the string section: the kernel then has no type of that name.
    blob = kernel.blob
    i = blob.find(b"\0fdtable\0")
    assert i > 0
    broken = RawBtf(blob[: i + 1] + b"Xdtable" + blob[i + 8:])
    res = check_object(vigil_obj, broken)
    assert "no struct fdtable in the target" in res.missing()


def test_unresolved_relocations_in_dead_fallbacks_are_not_failures(
        kernel: RawBtf, vigil_obj: BpfObject) -> None:
    # vigil.bpf.o (bpf/proc.bpf.h) reads task_struct___pre55.real_start_time only when
    # start_boottime is absent (kernels < 5.5): on this kernel it does not resolve, and that
    # code is dead.
    res = check_object(vigil_obj, kernel)
    dead = {f.relo.spec for f in res.dead}
    assert "struct task_struct___pre55.real_start_time" in dead
    assert not res.failures


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def test_reachability_follows_known_constants() -> None:
    prog = b"".join([
        _insn(0xB7, dst=1, imm=1),  # 0: r1 = 1          <- an `exists` relocation
        _insn(0x15, dst=1, off=2, imm=0),  # 1: if r1 == 0 goto 4
        _insn(0xB7, dst=0, imm=7),  # 2: r0 = 7           (field exists)
        _insn(0x95),  # 3: exit
        _insn(0xB7, dst=0, imm=9),  # 4: r0 = 9           (fallback)
        _insn(0x95),  # 5: exit
    ])
    assert set(reachable(prog, False, 0, 6, {0: 1})) == {0, 1, 2, 3}
    assert set(reachable(prog, False, 0, 6, {0: 0})) == {0, 1, 4, 5}
    assert set(reachable(prog, False, 0, 6, {0: None})) == set(range(6))
    # the same program in big-endian encoding (register nibbles swap places)
    be = b"".join(struct.pack(">BBhi", c, ((r & 0xF) << 4) | (r >> 4), o, i)
                  for c, r, o, i in struct.iter_unpack("<BBhi", prog))
    assert set(reachable(be, True, 0, 6, {0: 0})) == {0, 1, 4, 5}


def test_reachability_marks_code_behind_load_time_settings() -> None:
    prog = b"".join([
        _insn(0x18, dst=1), _insn(0),  # 0: r1 = &setting (ld_imm64 into .rodata)
        _insn(0x61, dst=1, src=1),  # 2: r1 = *(u32 *)(r1 + 0)
        _insn(0x15, dst=1, off=2, imm=0),  # 3: if r1 == 0 goto 6
        _insn(0xB7, dst=0, imm=7),  # 4: r0 = 7      (only when the setting is non-zero)
        _insn(0x95),  # 5: exit
        _insn(0xB7, dst=0, imm=9),  # 6: r0 = 9      (only when it is zero)
        _insn(0x95),  # 7: exit
    ])
    got = reachable(prog, False, 0, 8, {}, frozenset({0}))
    assert got == {0: True, 2: True, 3: True, 4: False, 5: False, 6: False, 7: False}
    # without knowing the load is a setting, every path is unconditional
    assert all(reachable(prog, False, 0, 8, {}).values())


def test_relocation_kinds_and_signature(vigil_obj: BpfObject) -> None:
    kinds = {r.kind for r in vigil_obj.relos}
    assert ReloKind.FIELD_BYTE_OFFSET in kinds and ReloKind.FIELD_EXISTS in kinds
    sig = vigil_obj.signature()
    assert sig == sorted(set(sig)) and any("struct file.f_path" in s for s in sig)


def test_archive_round_trip_is_deterministic(tmp_path: Path) -> None:
    index = ArchiveIndex()
    index.kernels = {kernel_key("debian", "12", "x86_64", "6.1.0-1-amd64"): "a" * 64,
                     kernel_key("debian", "12", "x86_64", "6.1.0-2-amd64"): "a" * 64,
                     kernel_key("debian", "13", "aarch64", "6.12.1+deb13-arm64"): "b" * 64}
    index.signatures = {"x86_64": "1" * 64, "aarch64": "2" * 64}
    blobs = {"a" * 64: b"AAAA", "b" * 64: b"BBBB"}
    one, two = tmp_path / "1.tar.xz", tmp_path / "2.tar.xz"
    write_archive(one, index, blobs)
    write_archive(two, index, blobs)
    assert one.read_bytes() == two.read_bytes()
    archive = BtfArchive(one)
    assert archive.lookup("debian/12/x86_64/6.1.0-2-amd64") == b"AAAA"
    assert archive.lookup("debian/12/x86_64/6.1.0-3-amd64") is None
    assert archive.index.signatures == index.signatures


def _archive_with(tmp_path: Path, key: str, blob: bytes) -> Path:
    index = ArchiveIndex(kernels={key: "c" * 64})
    path = tmp_path / "a.tar.xz"
    write_archive(path, index, {"c" * 64: blob})
    return path


def _os_release(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "os-release"
    p.write_text(text)
    return p


def test_resolve_prefers_the_explicit_file_then_the_kernel(tmp_path: Path) -> None:
    good = tmp_path / "k.btf"
    good.write_bytes(RawBtf.from_file(bundled_object("probes")).blob)
    src = resolve_btf(good, env={})
    assert (src.kind, src.path, src.origin, src.custom_path) == ("file", good, "--btf", str(good))
    assert not src.kernel_btf_hooks
    src = resolve_btf(None, env={"VIGIL_BTF": str(good)})
    assert (src.kind, src.origin) == ("file", "VIGIL_BTF")
    text = tmp_path / "notes.txt"
    text.write_text("this is not BTF, but long enough to be looked at\n")
    with pytest.raises(BtfNotFoundError, match=r"--btf .*notes\.txt: neither raw BTF nor an ELF"):
        resolve_btf(text, env={})
    if KERNEL_BTF.exists():
        src = resolve_btf(None, env={})
        assert (src.kind, src.custom_path, src.kernel_btf_hooks) == ("kernel", None, True)


def test_resolve_falls_back_to_the_archive(tmp_path: Path) -> None:
    blob = b"not read at lookup time"
    archive = _archive_with(tmp_path, "debian/12/x86_64/6.1.0-50-amd64", blob)
    osr = _os_release(tmp_path, 'ID=debian\nVERSION_ID="12"\n')
    env = {"VIGIL_TEST_HIDE_KERNEL_BTF": "1", "VIGIL_BTF_ARCHIVE": str(archive)}
    src = resolve_btf(None, env=env, release="6.1.0-50-amd64", machine="x86_64",
                      os_release_path=osr)
    assert src.kind == "tailored" and src.path.read_bytes() == blob
    assert src.path.name == "6.1.0-50-amd64.btf"
    assert src.path.parent.stat().st_mode & 0o777 == 0o700
    assert "debian/12/x86_64/6.1.0-50-amd64" in src.origin


def test_resolve_lists_everything_it_tried(tmp_path: Path) -> None:
    archive = _archive_with(tmp_path, "debian/12/x86_64/6.1.0-50-amd64", b"x")
    osr = _os_release(tmp_path, "ID=debian\nVERSION_ID=12\n")
    env = {"VIGIL_TEST_HIDE_KERNEL_BTF": "1", "VIGIL_BTF_ARCHIVE": str(archive)}
    with pytest.raises(BtfNotFoundError) as e:
        resolve_btf(None, env=env, release="9.9.9-vigil-test", machine="x86_64",
                    os_release_path=osr)
    msg = str(e.value)
    assert "hidden by VIGIL_TEST_HIDE_KERNEL_BTF=1" in msg
    assert "/boot/vmlinux-9.9.9-vigil-test: absent" in msg
    assert "/usr/lib/debug/lib/modules/9.9.9-vigil-test/vmlinux: absent" in msg
    assert "no entry debian/12/x86_64/9.9.9-vigil-test" in msg
    assert "1 debian x86_64 kernels, e.g. debian/12/x86_64/6.1.0-50-amd64" in msg
    assert "--btf FILE" in msg
    with pytest.raises(BtfNotFoundError, match="gives no ID and VERSION_ID"):
        resolve_btf(None, env=env, release="9.9.9", machine="x86_64",
                    os_release_path=_os_release(tmp_path, "NAME=x\n"))


def test_btf_problem_reads_elf_headers_only(tmp_path: Path) -> None:
    assert btf_problem(bundled_object("probes")) is None  # ELF with .BTF
    assert btf_problem(tmp_path / "nope") == "absent"
    (tmp_path / "tiny").write_bytes(b"\x7fELF")
    assert btf_problem(tmp_path / "tiny") == "too small to be BTF"


class _Apt:  # the two attributes and the one call the download helpers use
    suite, arch = "trixie", "s390x"

    def download(self, package: str, version: str, dest: Path) -> Path:
        from vigil.btfhub import debian

        if version == "6.12.117-1":
            raise debian.FetchError("apt-get download ... 404  Not Found")
        return dest / f"{package}_{version}.deb"


_IMAGES = [("linux-image-6.12.107+deb13-s390x", "6.12.107-1"),
           ("linux-image-6.12.117+deb13-s390x", "6.12.117-1")]


def test_fetch_takes_an_older_image_when_the_mirror_lacks_the_newest(tmp_path: Path) -> None:
    from vigil.btfhub import debian

    said: list[str] = []
    got = debian._newest_available(_Apt(), _IMAGES, tmp_path, said.append)  # type: ignore[arg-type]
    assert (got.package, got.version) == _IMAGES[0]
    assert "6.12.117-1 not downloadable" in said[0] and "404" in said[0]
    with pytest.raises(debian.FetchError, match="404"):
        debian._newest_available(_Apt(), _IMAGES[1:], tmp_path, said.append)  # type: ignore[arg-type]


def test_fetch_every_skips_an_image_the_mirror_lacks(tmp_path: Path) -> None:
    from vigil.btfhub import debian

    said: list[str] = []
    got = debian._each_available(_Apt(), _IMAGES, tmp_path, said.append)  # type: ignore[arg-type]
    assert [(g.package, g.version) for g in got] == _IMAGES[:1]
    assert any("6.12.117-1 not downloadable, skipped" in s for s in said)
    with pytest.raises(debian.FetchError, match="404"):
        debian._each_available(_Apt(), _IMAGES[1:], tmp_path, said.append)  # type: ignore[arg-type]


def test_the_debug_package_of_an_image() -> None:
    from vigil.btfhub.debian import debug_package

    assert debug_package(("linux-image-6.1.0-50-686-unsigned", "6.1.176-1")) == \
        "linux-image-6.1.0-50-686-dbg"
    assert debug_package(("linux-image-6.1.0-50-armmp", "6.1.176-1")) == \
        "linux-image-6.1.0-50-armmp-dbg"


ELEMENT_PROG = r"""
struct regs { unsigned long r[4]; long s; } __attribute__((preserve_access_index));
__attribute__((section("kprobe/x"), used)) int prog(struct regs *p)
{
    return __builtin_preserve_field_info(p->r[1], 3 /* FIELD_SIGNED */) +
           __builtin_preserve_field_info(p->r[1], 1 /* FIELD_BYTE_SIZE */) +
           __builtin_preserve_field_info(p->s, 3 /* FIELD_SIGNED */);
}
"""


def test_check_refuses_signedness_of_an_array_element_like_libbpf(tmp_path: Path) -> None:
    """libbpf relocates an element's offset and size, but refuses its signedness ("can't be
    applied to array access"): the offline check must fail there too, not at load time."""
    obj = _bpf_object(tmp_path, "elem", ELEMENT_PROG)
    res = check_object(obj, obj.btf)  # the object's own types as the kernel's
    assert [(f.relo.kind.name, f.relo.spec) for f in res.failures] == [
        ("FIELD_SIGNED", "struct regs.r[1]")]
    assert "cannot apply FIELD_SIGNED to an array element" in res.failures[0].reason
    assert res.total == 3 and res.resolved == 2


# The object's view (8-byte longs) and a "kernel" where the same fields are 4 bytes wide.
WIDTH_PROG = r"""
struct k { long s; unsigned long u; unsigned long r; unsigned long z; }
    __attribute__((preserve_access_index));
static long (*probe_read)(void *dst, unsigned int size, const void *src) = (void *)113;
__attribute__((section("kprobe/x"), used)) long prog(struct k *p)
{
    unsigned long r = 0, z = 0;

    probe_read(&r, sizeof(r), &p->r);                                  /* object's width */
    probe_read(&z, __builtin_preserve_field_info(p->z, 1), &p->z);     /* kernel's width */
    return p->s + p->u + r + z;                                    /* s, u: direct loads */
}
"""
WIDTH_KERNEL = r"""
struct k { int s; unsigned int u; unsigned int r; unsigned int z; };
__attribute__((section("kprobe/y"), used)) int keep(struct k *q) { return q->s; }
"""


def _bpf_object(tmp_path: Path, name: str, text: str) -> BpfObject:
    if shutil.which("clang") is None:
        pytest.fail("clang missing: ./do installs it")
    src, obj = tmp_path / f"{name}.c", tmp_path / f"{name}.o"
    src.write_text(text)
    subprocess.run(["clang", "-g", "-O2", "-target", "bpfel", "-c", str(src), "-o", str(obj)],
                   check=True)
    return BpfObject.from_file(str(obj))


def test_check_fails_reads_of_the_wrong_width_only(tmp_path: Path) -> None:
    """A field 4 bytes wide in the kernel and 8 in the object: read by a direct load libbpf
    narrows (unsigned) or refuses to (signed), by a copy of the object's width (wrong), or with
    its size relocated (right)."""
    obj = _bpf_object(tmp_path, "width", WIDTH_PROG)
    kernel = _bpf_object(tmp_path, "kernel", WIDTH_KERNEL).btf
    res = check_object(obj, kernel)
    reasons = sorted(f.reason for f in res.failures)
    assert reasons == [
        "struct k.r is 4 bytes in the kernel, 8 in the object, and read at the object's width",
        "struct k.s is 4 bytes in the kernel, 8 in the object: a direct load of a signed "
        "field, which libbpf cannot narrow"], reasons
    assert check_object(obj, obj.btf).ok  # the same reads where the widths agree
