"""Raw BTF blobs read in pure Python: validation, types, names, byte order, architecture.

Owns the bytes of a BTF blob as the offline tools meet it: found inside a kernel image by its
header (magic 0xeB9F, version 1, a 24-byte header whose sizes must add up), kernel BTF of any
architecture (s390x's is big-endian, which libbpf's in-memory view would hide), the .BTF of a
compiled object, and small edits for tests (dropping a struct member). It also tells a kernel
BTF's architecture from its `struct pt_regs`. The running agent reads BTF through libbpf
instead (vigil.kernel.btf); this module never calls libbpf.
"""

from __future__ import annotations

import array as arraymod
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from vigil.btfhub.elf import ELF_MAGIC, Elf
from vigil.btfhub.limits import MAX_IMAGE, size_text
from vigil.kernel.btf import (
    KIND_ARRAY,
    KIND_DATASEC,
    KIND_DECL_TAG,
    KIND_ENUM,
    KIND_ENUM64,
    KIND_FUNC_PROTO,
    KIND_INT,
    KIND_STRUCT,
    KIND_TYPEDEF,
    KIND_UNION,
    KIND_VAR,
)
from vigil.kernel.errors import InputError

BTF_MAGIC = 0xEB9F
HEADER_LEN = 24
MAX_KIND = KIND_ENUM64
_MAGIC_LE = b"\x9f\xeb\x01\x00"  # magic, version 1, flags 0
_MAGIC_BE = b"\xeb\x9f\x01\x00"
# u32 words after the 12-byte common header: per vlen record, and fixed.
_PER_VLEN = {KIND_STRUCT: 3, KIND_UNION: 3, KIND_ENUM: 2, KIND_ENUM64: 3, KIND_FUNC_PROTO: 2,
             KIND_DATASEC: 3}
_FIXED = {KIND_INT: 1, KIND_ARRAY: 3, KIND_VAR: 1, KIND_DECL_TAG: 1}
_MAX_NESTING = 32  # anonymous structs in anonymous structs: real kernels nest a few levels


class BtfFormatError(InputError):
    """Bytes that should be BTF are not (or are damaged): says why and at which offset."""


@dataclass(frozen=True)
class Member:
    """A struct/union member, enum value, function parameter or DATASEC variable."""

    name: str
    type: int  # type id (0 for enum values)
    offset: int  # struct/union: bit offset; enum: value; datasec: byte offset
    bitfield_size: int = 0  # struct/union with kind_flag; datasec: the variable's size


@dataclass(frozen=True)
class BType:
    id: int
    kind: int
    name: str
    vlen: int
    kflag: bool
    size_or_type: int
    members: tuple[Member, ...] = ()
    array: tuple[int, int, int] | None = None  # element type, index type, number of elements
    int_encoding: int = 0  # the INT's u32: encoding << 24 | offset << 16 | bits


def blob_length(buf: bytes, off: int = 0) -> int | None:
    """Length of a well-formed BTF blob starting at ``off`` (header + types + strings), or
    None when the bytes there only look like one. Checks everything cheap: magic, version,
    header length, section bounds and alignment, and that the type section parses exactly."""
    try:
        return _layout(buf, off)[0]
    except _Invalid:
        return None


class _Invalid(Exception):
    """Why the bytes at an offset are not a BTF blob, and where (an offset into them)."""

    def __init__(self, why: str, at: int) -> None:
        super().__init__(why)
        self.why, self.at = why, at


def _layout(buf: bytes, off: int) -> tuple[int, arraymod.array[int]]:
    """(length, offsets of the type records relative to ``off``) of a well-formed blob;
    raises _Invalid. Every size comes from the header, so each is checked against the bytes
    there before anything is read or allocated."""
    head = buf[off: off + 4]
    if head == _MAGIC_LE:
        order = "<"
    elif head == _MAGIC_BE:
        order = ">"
    else:
        raise _Invalid("no BTF magic (0xeb9f, version 1)", 0)
    if off + HEADER_LEN > len(buf):
        raise _Invalid(f"truncated header ({len(buf) - off} of {HEADER_LEN} bytes)", 4)
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(order + "5I", buf, off + 4)
    if hdr_len != HEADER_LEN:
        raise _Invalid(f"header length {hdr_len}, not {HEADER_LEN}", 4)
    if type_off % 4 or type_len % 4:
        raise _Invalid(f"type section at {type_off}, {type_len} bytes: not 4-byte aligned", 8)
    if not str_len:
        raise _Invalid("no string section", 20)
    body = off + hdr_len
    have = len(buf) - body
    if type_off + type_len > have:
        raise _Invalid(f"the header claims {type_len} bytes of types at {type_off}, past the "
                       f"end of the data ({have} bytes after the header)", 12)
    if str_off + str_len > have:
        raise _Invalid(f"the header claims {str_len} bytes of strings at {str_off}, past the "
                       f"end of the data ({have} bytes after the header)", 20)
    if type_off + type_len > str_off and str_off + str_len > type_off:
        raise _Invalid("the type and string sections overlap", 8)
    strings = buf[body + str_off: body + str_off + str_len]
    if strings[:1] != b"\0" or strings[-1:] != b"\0":
        raise _Invalid("the string section does not start and end with NUL", hdr_len + str_off)
    offsets = _walk_types(buf, body + type_off, type_len, order, off)
    return hdr_len + max(type_off + type_len, str_off + str_len), offsets


def _walk_types(buf: bytes, start: int, length: int, order: str, base: int) -> arraymod.array[int]:
    """Offsets (relative to ``base``) of every type record; raises _Invalid when the records
    do not tile the section. An array of u32: a big BTF has hundreds of thousands of types."""
    offsets: arraymod.array[int] = arraymod.array("I")
    pos, end = start, start + length
    info_fmt = struct.Struct(order + "I")
    while pos < end:
        if pos + 12 > end:
            raise _Invalid(f"type [{len(offsets) + 1}] runs past the type section",
                           pos - base)
        info = info_fmt.unpack_from(buf, pos + 4)[0]
        kind = (info >> 24) & 0x1F
        if not 1 <= kind <= MAX_KIND:
            raise _Invalid(f"type [{len(offsets) + 1}] has unknown kind {kind}", pos - base)
        offsets.append(pos - base)
        pos += 12 + 4 * (_PER_VLEN.get(kind, 0) * (info & 0xFFFF) + _FIXED.get(kind, 0))
    if pos != end:
        raise _Invalid(f"type [{len(offsets)}] runs past the type section", pos - base)
    return offsets


def find_blobs(buf: bytes) -> Iterator[tuple[int, int]]:
    """(offset, length) of every well-formed BTF blob in ``buf`` (e.g. a raw kernel Image)."""
    for magic in (_MAGIC_LE, _MAGIC_BE):
        pos = buf.find(magic)
        while pos >= 0:
            n = blob_length(buf, pos)
            if n is not None:
                yield pos, n
            pos = buf.find(magic, pos + 1)


def essential_name(name: str) -> str:
    """libbpf's rule: 'task_struct___pre55' -> 'task_struct' (the last '___' flavor suffix)."""
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1: i + 4] == "___" and name[i + 4] != "_":
            return name[: i + 1]
    return name


class RawBtf:
    """A parsed BTF blob. Type ids start at 1 (0 is void), as in the kernel."""

    def __init__(self, blob: bytes, source: str = "") -> None:
        self.source = source = source or "data"
        try:
            n, offsets = _layout(blob, 0)
        except _Invalid as e:
            raise BtfFormatError(f"not a valid BTF blob: {e.why}", source=source,
                                 offset=e.at) from None
        self.blob = blob[:n]
        self.order = "<" if blob[:2] == b"\x9f\xeb" else ">"
        self.big_endian = self.order == ">"
        _, type_off, _, str_off, str_len = struct.unpack_from(self.order + "5I", blob, 4)
        body = HEADER_LEN
        self._strings = self.blob[body + str_off: body + str_off + str_len]
        self._types_start = body + type_off
        self._offsets = offsets
        self._cache: dict[int, BType] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> RawBtf:
        """Raw BTF (/sys/kernel/btf/vmlinux, a tailored .btf) or an ELF file's .BTF section."""
        try:
            size = Path(path).stat().st_size
            if size > MAX_IMAGE:
                raise BtfFormatError(f"{size} bytes, more than a kernel BTF or vmlinux can be "
                                     f"({size_text(MAX_IMAGE)}): refused", source=str(path))
            data = Path(path).read_bytes()
        except OSError as e:
            raise BtfFormatError(f"cannot read: {e.strerror}", source=str(path)) from None
        if data[:4] == ELF_MAGIC:
            elf = Elf(data, str(path))
            sec = elf.section(".BTF")
            if sec is None:
                raise BtfFormatError("an ELF file without a .BTF section", source=str(path))
            return cls(elf.section_data(sec), str(path))
        return cls(data, str(path))

    def __len__(self) -> int:
        """Number of type ids, void included (like btf__type_cnt)."""
        return len(self._offsets) + 1

    def name_at(self, off: int) -> str:
        end = self._strings.find(b"\0", off)
        return self._strings[off:end].decode("utf-8", "replace")

    def type(self, type_id: int) -> BType:
        if type_id == 0:
            return BType(0, 0, "void", 0, False, 0)
        t = self._cache.get(type_id)
        if t is not None:
            return t
        if not 0 < type_id <= len(self._offsets):
            raise BtfFormatError(f"type id {type_id} is out of range ({len(self._offsets)} "
                                 f"types)", source=self.source)
        pos = self._offsets[type_id - 1]
        o = self.order
        name_off, info, size = struct.unpack_from(o + "3I", self.blob, pos)
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
        p = pos + 12
        members: tuple[Member, ...] = ()
        array = None
        enc = 0
        if kind in (KIND_STRUCT, KIND_UNION):
            recs = struct.unpack_from(o + f"{3 * vlen}I", self.blob, p)
            members = tuple(
                Member(self.name_at(recs[i]), recs[i + 1],
                       recs[i + 2] & 0xFFFFFF if kflag else recs[i + 2],
                       recs[i + 2] >> 24 if kflag else 0)
                for i in range(0, 3 * vlen, 3))
        elif kind == KIND_ENUM:
            recs = struct.unpack_from(o + f"{2 * vlen}I", self.blob, p)
            members = tuple(Member(self.name_at(recs[i]), 0, recs[i + 1])
                            for i in range(0, 2 * vlen, 2))
        elif kind == KIND_ENUM64:
            recs = struct.unpack_from(o + f"{3 * vlen}I", self.blob, p)
            members = tuple(Member(self.name_at(recs[i]), 0, recs[i + 2] << 32 | recs[i + 1])
                            for i in range(0, 3 * vlen, 3))
        elif kind == KIND_FUNC_PROTO:
            recs = struct.unpack_from(o + f"{2 * vlen}I", self.blob, p)
            members = tuple(Member(self.name_at(recs[i]), recs[i + 1], 0)
                            for i in range(0, 2 * vlen, 2))
        elif kind == KIND_DATASEC:
            recs = struct.unpack_from(o + f"{3 * vlen}I", self.blob, p)
            members = tuple(Member(self._name_of(recs[i]), recs[i], recs[i + 1], recs[i + 2])
                            for i in range(0, 3 * vlen, 3))
        elif kind == KIND_ARRAY:
            a = struct.unpack_from(o + "3I", self.blob, p)
            array = (a[0], a[1], a[2])
        elif kind == KIND_INT:
            enc = struct.unpack_from(o + "I", self.blob, p)[0]
        t = BType(type_id, kind, self.name_at(name_off), vlen, kflag, size, members, array, enc)
        self._cache[type_id] = t
        return t

    def _name_of(self, type_id: int) -> str:
        """A type's name without decoding it (a DATASEC may name itself: no recursion)."""
        if not 0 < type_id <= len(self._offsets):
            raise BtfFormatError(f"type id {type_id} is out of range ({len(self._offsets)} "
                                 f"types)", source=self.source)
        return self.name_at(struct.unpack_from(self.order + "I", self.blob,
                                               self._offsets[type_id - 1])[0])

    def types(self) -> Iterator[BType]:
        for i in range(1, len(self)):
            yield self.type(i)

    @cached_property
    def _by_name(self) -> dict[str, list[int]]:
        """Type ids by name, built in one pass over the headers (no member decoding)."""
        index: dict[str, list[int]] = {}
        name_fmt = struct.Struct(self.order + "I")
        for i, pos in enumerate(self._offsets, start=1):
            off = name_fmt.unpack_from(self.blob, pos)[0]
            if off:
                index.setdefault(self.name_at(off), []).append(i)
        return index

    @cached_property
    def _by_essential_name(self) -> dict[str, list[int]]:
        index: dict[str, list[int]] = {}
        for name, ids in self._by_name.items():
            index.setdefault(essential_name(name), []).extend(ids)
        return index

    def by_name(self, name: str, kind: int | None = None) -> list[BType]:
        ts = [self.type(i) for i in self._by_name.get(name, ())]
        return [t for t in ts if kind is None or t.kind == kind]

    def by_essential_name(self, name: str) -> list[BType]:
        """Every type whose name, flavor suffix stripped, is ``name`` (libbpf's candidates)."""
        return [self.type(i) for i in self._by_essential_name.get(name, ())]

    def skip_mods(self, type_id: int) -> BType:
        """The type behind typedefs and const/volatile/restrict/type tags."""
        t = self.type(type_id)
        seen = 0
        while t.kind in _MODIFIERS and seen < 64:
            t = self.type(t.size_or_type)
            seen += 1
        return t

    def flat_members(self, t: BType, depth: int = 0,
                     seen: set[int] | None = None) -> Iterator[Member]:
        """Named members of a struct/union, those of anonymous inner ones included.

        Each anonymous type is entered once (C cannot hold the same one twice: its member
        names would clash), to a depth no real kernel reaches: a damaged BTF may nest a
        struct in itself, or share one inner struct between many members at every level,
        which would make the walk exponential."""
        seen = set() if seen is None else seen
        for m in t.members:
            if m.name:
                yield m
                continue
            inner = self.skip_mods(m.type)
            if inner.kind in (KIND_STRUCT, KIND_UNION) and depth < _MAX_NESTING \
                    and inner.id not in seen:
                seen.add(inner.id)
                yield from self.flat_members(inner, depth + 1, seen)

    def _direct_owner(self, t: BType, member: str, depth: int = 0,
                      seen: set[int] | None = None) -> BType | None:
        """The struct/union (``t`` or an anonymous one inside it) that holds ``member``."""
        seen = set() if seen is None else seen
        for m in t.members:
            if m.name == member:
                return t
            if not m.name:
                inner = self.skip_mods(m.type)
                if inner.kind in (KIND_STRUCT, KIND_UNION) and depth < _MAX_NESTING \
                        and inner.id not in seen:
                    seen.add(inner.id)
                    found = self._direct_owner(inner, member, depth + 1, seen)
                    if found is not None:
                        return found
        return None

    def size_of(self, type_id: int, depth: int = 0) -> int | None:
        """Bytes of a type (None for void, functions and forward declarations)."""
        t = self.skip_mods(type_id)
        if t.kind == 2:  # pointer
            return self.pointer_size
        if t.kind == KIND_ARRAY and t.array is not None and depth < 16:
            elem = self.size_of(t.array[0], depth + 1)
            return None if elem is None else elem * t.array[2]
        if t.kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, 16):
            return t.size_or_type
        return None

    @cached_property
    def pointer_size(self) -> int:
        """4 or 8: the size of the kernel's `long` (how libbpf guesses it too)."""
        for name in ("long", "long int", "long unsigned int", "unsigned long"):
            for t in self.by_name(name, KIND_INT):
                return t.size_or_type
        return 8

    def in_byte_order(self, big_endian: bool) -> bytes:
        """This blob in the given byte order (libbpf reads both, but a kernel's own order is
        what its tools expect). Every field after the magic is a u32 word; strings are bytes."""
        if big_endian == self.big_endian:
            return self.blob
        src, dst = self.order, ">" if big_endian else "<"
        _, type_off, type_len, _, _ = struct.unpack_from(src + "5I", self.blob, 4)
        out = bytearray(self.blob)
        struct.pack_into(dst + "H", out, 0, BTF_MAGIC)
        words = struct.unpack_from(src + "5I", self.blob, 4)
        struct.pack_into(dst + "5I", out, 4, *words)
        start, n = HEADER_LEN + type_off, type_len // 4
        struct.pack_into(dst + f"{n}I", out, start,
                         *struct.unpack_from(src + f"{n}I", self.blob, start))
        return bytes(out)

    def with_member_removed(self, struct_name: str, member: str) -> bytes:
        """A copy of this blob in which ``struct struct_name`` lacks ``member`` (for tests that
        need a kernel without some field). The struct keeps its size."""
        target = None
        for t in self.by_name(struct_name, KIND_STRUCT):
            target = self._direct_owner(t, member)
            if target is not None:
                break
        if target is None:
            raise KeyError(f"no struct {struct_name} with a member {member!r} in {self.source}")
        idx = [m.name for m in target.members].index(member)
        pos = self._offsets[target.id - 1]
        o = self.order
        name_off, info, size = struct.unpack_from(o + "3I", self.blob, pos)
        rec = pos + 12 + 12 * idx
        new_info = (info & ~0xFFFF) | (target.vlen - 1)
        out = bytearray(self.blob[:pos])
        out += struct.pack(o + "3I", name_off, new_info, size)
        out += self.blob[pos + 12: rec] + self.blob[rec + 12:]
        hdr = list(struct.unpack_from(o + "5I", out, 4))
        hdr[2] -= 12  # type_len
        if hdr[3] > hdr[1]:
            hdr[3] -= 12  # str_off: the strings follow the types
        struct.pack_into(o + "5I", out, 4, *hdr)
        return bytes(out)


_MODIFIERS = {KIND_TYPEDEF, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag

# Members of `struct pt_regs` (anonymous unions flattened) that only one architecture has.
_PT_REGS_MARKERS = (
    ("r15", "x86_64"), ("orig_x0", "aarch64"), ("uregs", "armv7l"), ("bx", "i686"),
    ("gpr", "ppc64le"), ("gprs", "s390x"), ("epc", "riscv64"),
)


def detect_arch(btf: RawBtf) -> str | None:
    """The uname -m name of the kernel this BTF describes, from its `struct pt_regs`; None when
    it is not a kernel's BTF (a tailored BTF may lack pt_regs) or the layout is unknown."""
    for t in btf.by_name("pt_regs", KIND_STRUCT):
        names = {m.name for m in btf.flat_members(t)}
        for marker, arch in _PT_REGS_MARKERS:
            if marker in names:
                if arch == "ppc64le" and btf.big_endian:
                    return "ppc64"  # big-endian POWER: not an architecture Vigil ships
                return arch
    return None
