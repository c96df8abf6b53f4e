"""Hand-made hostile inputs, one per bound or failure the fuzzers stand for: each parser refuses
them with an InputError that names the file (and the offset or line), within its limits.

The seeds are the real files of tests/fuzz/corpus; each case damages one in the way the issue
names (truncated, flipped, spliced, a header claiming gigabytes, a decompression bomb). The
limits are lowered with monkeypatch where the real ones (hundreds of MiB) would make the test
slow: the code path is the same.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import struct
import tarfile
from pathlib import Path

import pytest

from tests.fuzz.targets import CORPUS, _ar, _control_tar
from vigil.btfhub import extract, images, limits, packages
from vigil.btfhub.core import BpfObject, CoreError
from vigil.btfhub.elf import Elf, ElfError
from vigil.btfhub.images import DamagedImageError, btf_from_image
from vigil.btfhub.limits import DecompressError, TooBigError
from vigil.btfhub.packages import PackageError, read_package_file
from vigil.btfhub.rawbtf import BtfFormatError, RawBtf, detect_arch
from vigil.btfhub.rpm import cpio_newc
from vigil.config import ConfigError, load_config
from vigil.kernel import btf_archive
from vigil.kernel.btf_archive import BtfArchive, BtfArchiveError
from vigil.kernel.errors import InputError, VigilError

MiB = 1 << 20


def seed(target: str, name: str) -> bytes:
    return (CORPUS / target / name).read_bytes()


def deb_of(data_tar: bytes) -> bytes:
    return _ar([("debian-binary", b"2.0\n"), ("control.tar", _control_tar()),
                ("data.tar", data_tar)])


def tar_of(members: dict[str, bytes], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_input_error_is_one_line_with_file_and_offset() -> None:
    e = InputError("pahole said:\nline two", source="vmlinux", offset=0x40)
    assert str(e) == "vmlinux: at byte 0x40: pahole said: line two"
    assert str(InputError("bad value", source="c.yaml", line=3)) == "c.yaml:3: bad value"
    assert isinstance(e, VigilError) and e.exit_code == 2
    for cls in (ElfError, BtfFormatError, PackageError, DecompressError, ConfigError,
                BtfArchiveError, CoreError, DamagedImageError, extract.ExtractError):
        assert issubclass(cls, InputError), cls


# --- BTF ----------------------------------------------------------------------------------


def test_btf_header_claiming_4_gib_of_types_is_refused_with_offset() -> None:
    blob = bytearray(seed("btf", "tailored-x86_64.btf"))
    struct.pack_into("<I", blob, 12, 0xFFFFFFFC)  # type_len
    with pytest.raises(BtfFormatError) as e:
        RawBtf(bytes(blob), "k.btf")
    assert str(e.value).startswith("k.btf: at byte 0xc: ")
    assert "claims 4294967292 bytes of types" in str(e.value)


def test_btf_string_section_past_the_file_is_refused() -> None:
    blob = bytearray(seed("btf", "tailored-x86_64.btf"))
    struct.pack_into("<I", blob, 20, 1 << 31)  # str_len
    with pytest.raises(BtfFormatError, match=r"k.btf: at byte 0x14: .*bytes of strings"):
        RawBtf(bytes(blob), "k.btf")


def _first_struct_member_type(b: RawBtf) -> int:
    """Offset of the first struct member's type field (a struct that has members)."""
    for t in b.types():
        if t.kind == 4 and t.vlen:
            return b._offsets[t.id - 1] + 12 + 4
    raise LookupError("no struct with members")


def test_btf_type_ids_out_of_range_are_input_errors() -> None:
    blob = bytearray(seed("btf", "tailored-x86_64.btf"))
    b = RawBtf(bytes(blob))
    struct.pack_into("<I", blob, _first_struct_member_type(b), 0x7FFFFFFF)
    broken = RawBtf(bytes(blob), "k.btf")
    with pytest.raises(BtfFormatError, match=r"^k.btf: type id 2147483647 is out of range"):
        for t in broken.types():
            for m in t.members:
                broken.skip_mods(m.type)


def test_btf_struct_nested_in_itself_does_not_recurse_forever() -> None:
    # struct pt_regs whose every member is anonymous and of its own type: a cycle
    blob = bytearray(seed("btf", "tailored-armv7l.btf"))
    b = RawBtf(bytes(blob))
    regs = b.by_name("pt_regs")[0]
    pos = b._offsets[regs.id - 1] + 12
    for i in range(regs.vlen):
        struct.pack_into("<II", blob, pos + 12 * i, 0, regs.id)
    assert detect_arch(RawBtf(bytes(blob), "k.btf")) is None


def test_btf_datasec_naming_itself_does_not_recurse_forever() -> None:
    elf = Elf(seed("elf", "probes-x86_64.o"))
    sec = elf.section(".BTF")
    assert sec is not None
    blob = bytearray(elf.section_data(sec))
    b = RawBtf(bytes(blob))
    datasec = next(t for t in b.types() if t.kind == 15 and t.vlen)
    struct.pack_into("<I", blob, b._offsets[datasec.id - 1] + 12, datasec.id)  # var 0's type
    broken = RawBtf(bytes(blob), "o.btf")
    assert broken.type(datasec.id).members[0].name == datasec.name


# --- ELF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["short header", "tiny section entries", "symtab link"])
def test_damaged_elf_headers_are_input_errors(how: str) -> None:
    data = bytearray(seed("elf", "probes-x86_64.o"))
    if how == "short header":
        data = data[:20]
    elif how == "tiny section entries":
        struct.pack_into("<H", data, 0x3A, 1)  # e_shentsize
    else:
        e = Elf(bytes(data))
        sym = next(s for s in e.sections if s.type == 2)
        shoff, shentsize = struct.unpack_from("<Q", data, 0x28)[0], 64
        struct.pack_into("<I", data, shoff + sym.index * shentsize + 40, 999)  # sh_link
    with pytest.raises(ElfError, match=r"^x.o: at byte 0x"):
        Elf(bytes(data), "x.o").symbols()


def test_btf_ext_records_past_their_section_are_input_errors() -> None:
    data = bytearray(seed("bpfobj", "probes-x86_64.o"))
    e = Elf(bytes(data))
    ext = e.section(".BTF.ext")
    assert ext is not None
    rec = ext.offset + struct.unpack_from("<I", data, ext.offset + 4)[0] + \
        struct.unpack_from("<I", data, ext.offset + 24)[0]
    struct.pack_into("<I", data, rec + 8, 0xFFFFFF)  # number of records of the first section
    with pytest.raises(CoreError, match=r"^x.o: at byte 0x"):
        BpfObject(bytes(data), "x.o")


# --- compressed images ----------------------------------------------------------------------


def test_a_flipped_byte_in_the_payload_says_which_stream(tmp_path: Path) -> None:
    data = bytearray(seed("image", "bzImage"))
    start = (data[0x1F1] + 1) * 512
    data[start + 200] ^= 0x55
    with pytest.raises(DamagedImageError) as e:
        btf_from_image(bytes(data), "vmlinuz-x")
    assert str(e.value).startswith(f"vmlinuz-x: no BTF found: the xz stream at {start:#x} is "
                                   f"damaged")


def test_a_truncated_payload_says_so() -> None:
    data = seed("image", "vmlinuz.gzip")
    with pytest.raises(DamagedImageError, match=r"gzip stream at 0x0 ends early"):
        btf_from_image(data[: len(data) * 2 // 3], "vmlinuz-x")


def test_a_decompression_bomb_image_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_PAYLOAD", 4 * MiB)
    bomb = gzip.compress(b"\0" * (8 * MiB), 1)
    with pytest.raises(TooBigError, match=r"^bomb: at byte 0x0: the gzip stream decompresses "
                                          r"to more than 4 MiB: refused"):
        btf_from_image(bomb, "bomb")


def test_a_bomb_through_the_zstd_tool_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_PAYLOAD", 4 * MiB)
    bomb = limits.run_tool(["zstd", "-cq", "-1"], "zstd", b"\0" * (8 * MiB), 64 * MiB,
                           source="test")
    with pytest.raises(TooBigError, match=r"zstd output exceeds 4 MiB"):
        btf_from_image(b"junk" + bomb, "bomb")


def test_many_streams_together_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_PAYLOADS_TOTAL", 6 * MiB)
    one = lzma.compress(b"\0" * (2 * MiB))  # each small enough, not all together
    with pytest.raises(TooBigError, match=r"decompress to more than 6 MiB in all"):
        btf_from_image(b"x" * 64 + one * 5, "many")


# --- packages -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["size not a number", "member past the end"])
def test_damaged_ar_headers_name_the_offset(how: str) -> None:
    deb = bytearray(seed("package", "kernel-xz.deb"))
    if how == "size not a number":
        deb[8 + 48: 8 + 58] = b"12ab      "
    else:
        deb = deb[: len(deb) - 100]
    with pytest.raises(PackageError, match=r"^k.deb: at byte 0x"):
        read_package_file(io.BytesIO(bytes(deb)), Path("k.deb"))


def test_a_truncated_data_tar_xz_is_a_package_error() -> None:
    deb = seed("package", "kernel-xz.deb")
    i = deb.index(b"data.tar.xz")
    size = int(deb[i + 48: i + 58])
    cut = bytearray(deb[: i + 60 + size // 2])
    cut[i + 48: i + 58] = f"{size // 2:<10}".encode()
    with pytest.raises(DecompressError, match=r"^k.deb: member data.tar.xz is damaged"
                                              r"( \(after \d+ good bytes\))?: Compressed "
                                              r"file ended before the end-of-stream marker"):
        read_package_file(io.BytesIO(bytes(cut)), Path("k.deb"))


def test_a_pax_header_claiming_gigabytes_is_refused() -> None:
    tar = bytearray(tar_of({"./boot/" + "x" * 200: b"hi"}, tarfile.PAX_FORMAT))
    assert tar[156:157] == b"x"  # the first block is the pax header
    tar[124:136] = b"%011o\0" % (3 << 30)
    struct.pack_into("8s", tar, 148, b" " * 8)
    tar[148:156] = b"%06o\0 " % sum(tar[:512])
    with pytest.raises(PackageError, match=r"^k.deb: damaged tar data: an extended header of "
                                           r"3221225472 bytes"):
        read_package_file(io.BytesIO(deb_of(bytes(tar))), Path("k.deb"))


def test_a_data_tar_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_STREAM", 4 * MiB)
    bomb = gzip.compress(tar_of({"./usr/share/doc/big": b"\0" * (8 * MiB)}), 1)
    deb = _ar([("debian-binary", b"2.0\n"), ("control.tar", _control_tar()),
               ("data.tar.gz", bomb)])
    with pytest.raises(DecompressError, match=r"decompresses to more than 4 MiB: refused"):
        read_package_file(io.BytesIO(deb), Path("k.deb"))


def test_a_kernel_member_too_big_for_a_kernel_is_refused_before_reading(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packages, "MAX_IMAGE", 1 * MiB)
    tar = tar_of({"./boot/vmlinuz-6.1.0-x": b"\0" * (2 * MiB)})
    with pytest.raises(PackageError, match=r"boot/vmlinuz-6.1.0-x is 2097152 bytes, too big"):
        read_package_file(io.BytesIO(deb_of(tar)), Path("k.deb"))


def test_rpm_header_claiming_billions_of_entries_is_refused() -> None:
    rpm = bytearray(seed("package", "kernel-w9.gzdio.rpm"))
    struct.pack_into(">I", rpm, 96 + 8, 0xFFFFFFFF)  # the signature header's index count
    with pytest.raises(PackageError, match=r"^k.rpm: at byte 0x68: rpm header claims "
                                           r"4294967295 entries"):
        read_package_file(io.BytesIO(bytes(rpm)), Path("k.rpm"))


@pytest.mark.parametrize("field,value,message", [
    (11, 0xFFFFFFFF, r"a name of 4294967295 bytes"),  # c_namesize
    (6, 0xFFFFFFF0, r"truncated cpio payload"),  # c_filesize of a file nobody wants
])
def test_cpio_headers_with_huge_counts_are_refused(field: int, value: int,
                                                    message: str) -> None:
    data = bytearray(seed("cpio", "payload.cpio"))
    data[6 + 8 * field: 14 + 8 * field] = b"%08X" % value
    with pytest.raises(PackageError, match=rf"^p.cpio: at byte 0x[0-9a-f]+: .*{message}"):
        list(cpio_newc(io.BytesIO(bytes(data)), "p.cpio", keep=lambda _: False))


def test_cpio_fields_that_are_not_hexadecimal() -> None:
    data = bytearray(seed("cpio", "payload.cpio"))
    data[6:14] = b"zzzzzzzz"
    with pytest.raises(PackageError, match=r"^p.cpio: at byte 0x0: damaged cpio header"):
        list(cpio_newc(io.BytesIO(bytes(data)), "p.cpio"))


# --- the tailored-BTF archive -----------------------------------------------------------------


def test_an_archive_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(btf_archive, "MAX_UNPACKED", 2 * MiB)
    with pytest.raises(BtfArchiveError, match=r"^a.tar.xz: the archive unpacks to more than "
                                              r"2 MiB: refused"):
        BtfArchive.from_bytes(lzma.compress(b"\0" * (4 * MiB)), "a.tar.xz")


@pytest.mark.parametrize("index", [b"[]", b'{"format": 1, "kernels": {"k": "nope"}}',
                                   b'{"format": 1, "kernels": {"k": {"btf": "../../etc"}}}'])
def test_a_damaged_archive_index_is_refused(index: bytes) -> None:
    with pytest.raises(BtfArchiveError, match=r"^i.json: index.json is "):
        btf_archive.ArchiveIndex.from_json(index, "i.json")


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("text,line,message", [
    ("exec_events: 2001-02-30\n", 1, "cannot read the value '2001-02-30'"),
    ("\n\nring_buffer_mb: " + "1" * 5000 + "\n", 3, "cannot read the value"),
    ("ignore: " + "[" * 500 + "]" * 500 + "\n", 1, "nested more than 64 levels"),
    ("ignore: ['re:a{99999999999}']\n", 1, "bad regex in 'ignore'"),
    ("ignore: ['re:" + "(" * 1000 + ")" * 1000 + "']\n", 1, "bad regex in 'ignore'"),
    ('directories:\n  - path: "/etc\\0"\n', 2, "NUL character"),
    ("scan:\n  interval: '" + "9" * 5000 + "s'\n", 2, "'interval' must be"),
    ("exec_events: true\nout\x01put: json\n", 2, "the character '\\x01' is not allowed"),
    ("ring_buffer_mb: !!float abc\n", 1, "cannot read the value 'abc'"),
])
def test_hostile_config_values_name_the_line(tmp_path: Path, text: str, line: int,
                                             message: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: ") and message in msg and "\n" not in msg, msg


def test_config_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(b"exec_events: true\noutput: \xff\n")
    with pytest.raises(ConfigError, match=r":2: not UTF-8 text \(byte 0xff at offset 26\)"):
        load_config(p)


# --- output files -----------------------------------------------------------------------------


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        limits.write_atomic(tmp_path / "k.btf", b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_a_package_with_one_damaged_image_writes_none(tmp_path: Path) -> None:
    good = seed("image", "vmlinuz.gzip")
    bad = good[: len(good) // 2]
    pkg = tmp_path / "two.deb"
    pkg.write_bytes(deb_of(tar_of({"./boot/vmlinuz-6.1.0-a": good,
                                   "./boot/vmlinuz-6.1.0-b": bad})))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"two.deb:boot/vmlinuz-6.1.0-b: .*ends early"):
        extract.extract([pkg], out)
    assert not out.exists() or not [f for f in out.rglob("*") if f.is_file()]


def test_a_release_name_cannot_write_outside_the_output(tmp_path: Path) -> None:
    data = bytearray(seed("image", "bzImage"))
    ptr = struct.unpack_from("<H", data, 0x20E)[0] + 0x200
    data[ptr: ptr + 16] = b"../../../evil \0\0"
    img = tmp_path / "vmlinuz"
    img.write_bytes(bytes(data))
    with pytest.raises(extract.ExtractError, match=r"'\.\./\.\./\.\./evil', which is not a "
                                                   r"release name"):
        extract.extract([img], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.btf").exists()
