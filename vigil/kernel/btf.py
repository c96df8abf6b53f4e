"""Read BTF (the kernel's or a compiled BPF object's) through libbpf.

Owns decoding of `struct btf_type` records into layouts Python can use: struct field offsets
and sizes (to check our decoders against the C side), function prototypes (argument positions
of kernel functions such as vfs_unlink, which differ between kernels) and DATASEC variables
(where `.rodata` globals live). It does not choose which BTF to use or load programs
(vigil.kernel.loader) and declares no ctypes prototypes (vigil.kernel.libbpf).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from vigil.kernel import libbpf

# BTF_KIND_* from the uapi header <linux/btf.h>.
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

# Qualifiers that do not change layout; skipped when looking for the "real" type.
_TRANSPARENT = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}
_QUALIFIER_WORD = {KIND_CONST: "const", KIND_VOLATILE: "volatile", KIND_RESTRICT: "restrict"}
_HEADER = 12  # name_off, info, size/type


@dataclass(frozen=True)
class Field:
    name: str
    offset_bytes: int
    size_bytes: int | None  # None for bitfields and types without a fixed size
    type_name: str
    bit_offset: int = 0  # offset in bits from the struct start (useful for bitfields)
    bitfield_size: int = 0


@dataclass(frozen=True)
class StructLayout:
    name: str
    size: int
    fields: list[Field]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"struct {self.name} has no field {name!r}")


@dataclass(frozen=True)
class _Type:
    """One decoded `struct btf_type` header plus its kind-specific trailing u32 words."""

    id: int
    name: str
    kind: int
    vlen: int
    kind_flag: bool
    size_or_type: int
    extra: tuple[int, ...]


_EXTRA_WORDS = {  # u32 words per trailing record, by kind (vlen records unless noted)
    KIND_STRUCT: 3, KIND_UNION: 3, KIND_ENUM: 2, KIND_ENUM64: 3, KIND_FUNC_PROTO: 2,
    KIND_DATASEC: 3,
}
_FIXED_WORDS = {KIND_INT: 1, KIND_ARRAY: 3, KIND_VAR: 1, KIND_DECL_TAG: 1}


class Btf:
    """A parsed BTF blob. Owned instances are freed with btf__free on close()."""

    def __init__(self, ptr: int, *, owned: bool = True, source: str = "") -> None:
        self._ptr: int | None = ptr
        self._owned = owned
        self.source = source

    @classmethod
    def parse(cls, path: str | Path) -> Btf:
        """Raw BTF (/sys/kernel/btf/vmlinux) or the .BTF section of an ELF file (a .bpf.o)."""
        return cls(libbpf.btf__parse(str(path)), source=str(path))

    @classmethod
    def borrow(cls, ptr: int, source: str = "") -> Btf:
        """Wrap BTF owned by someone else (e.g. bpf_object__btf); close() will not free it."""
        return cls(ptr, owned=False, source=source)

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr and self._owned:
            libbpf.btf__free(ptr)

    def __enter__(self) -> Btf:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # Objects dropped without close() would leak the C allocation.
        if getattr(self, "_ptr", None):
            self.close()

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise ValueError("BTF is closed")
        return self._ptr

    # --- raw access -------------------------------------------------------------------------

    def type_count(self) -> int:
        return libbpf.btf__type_cnt(self.ptr)

    def _name(self, off: int) -> str:
        return libbpf.btf__name_by_offset(self.ptr, off) if off else ""

    def type(self, type_id: int) -> _Type:
        if type_id == 0:
            return _Type(0, "void", 0, 0, False, 0, ())
        addr = libbpf.btf__type_by_id(self.ptr, type_id)
        name_off, info, size_or_type = (ctypes.c_uint32 * 3).from_address(addr)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        words = _EXTRA_WORDS.get(kind, 0) * vlen + _FIXED_WORDS.get(kind, 0)
        extra = tuple((ctypes.c_uint32 * words).from_address(addr + _HEADER)) if words else ()
        return _Type(type_id, self._name(name_off), kind, vlen, bool(info >> 31),
                     size_or_type, extra)

    def find(self, name: str, kind: int) -> int | None:
        return libbpf.btf__find_by_name_kind(self.ptr, name, kind)

    def resolve(self, type_id: int) -> _Type:
        """The type behind typedefs and qualifiers."""
        t = self.type(type_id)
        while t.kind in _TRANSPARENT:
            t = self.type(t.size_or_type)
        return t

    def sizeof(self, type_id: int) -> int | None:
        t = self.resolve(type_id)
        if t.kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT,
                      KIND_DATASEC):
            return t.size_or_type
        if t.kind == KIND_PTR:
            return libbpf.btf__pointer_size(self.ptr)
        if t.kind == KIND_ARRAY:
            elem = self.sizeof(t.extra[0])
            return None if elem is None else elem * t.extra[2]
        return None  # void, functions, forward declarations

    def type_str(self, type_id: int) -> str:
        """C-like spelling: 'unsigned int', 'char[16]', 'struct dentry *', 'const char *'."""
        t = self.type(type_id)
        if t.kind == 0:
            return "void"
        if t.kind == KIND_PTR:
            inner = self.type_str(t.size_or_type)
            return f"{inner}*" if inner.endswith("*") else f"{inner} *"
        if t.kind == KIND_ARRAY:
            return f"{self.type_str(t.extra[0])}[{t.extra[2]}]"
        if t.kind in _QUALIFIER_WORD:
            return f"{_QUALIFIER_WORD[t.kind]} {self.type_str(t.size_or_type)}"
        if t.kind == KIND_TYPE_TAG:
            return self.type_str(t.size_or_type)
        if t.kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FWD):
            word = {KIND_STRUCT: "struct", KIND_UNION: "union", KIND_FWD: "struct"}.get(
                t.kind, "enum")
            if t.kind == KIND_FWD and t.kind_flag:
                word = "union"
            return f"{word} {t.name or '(anon)'}"
        if t.kind == KIND_FUNC_PROTO:
            return f"{self.type_str(t.size_or_type)} (*)(...)"
        return t.name or f"<kind {t.kind}>"

    # --- layouts ----------------------------------------------------------------------------

    def struct_layout(self, name: str) -> StructLayout:
        """Field offsets and sizes of `struct name` (or a typedef to a struct/union)."""
        type_id = self.find(name, KIND_STRUCT) or self.find(name, KIND_UNION)
        if type_id is None:
            tid = self.find(name, KIND_TYPEDEF)
            if tid is None:
                raise KeyError(f"no struct or union named {name!r} in BTF {self.source}")
            type_id = self.resolve(tid).id
        t = self.resolve(type_id)
        if t.kind not in (KIND_STRUCT, KIND_UNION):
            raise KeyError(f"{name!r} is not a struct or union in BTF {self.source}")
        return StructLayout(name=name, size=t.size_or_type, fields=self._members(t, 0))

    def _members(self, t: _Type, base_bits: int) -> list[Field]:
        fields: list[Field] = []
        for i in range(t.vlen):
            name_off, mtype, moff = t.extra[3 * i: 3 * i + 3]
            # With kind_flag the offset word packs bitfield size (high 8) and bit offset (low 24).
            bits, bitsize = (moff & 0xFFFFFF, moff >> 24) if t.kind_flag else (moff, 0)
            bits += base_bits
            mres = self.resolve(mtype)
            if not name_off and mres.kind in (KIND_STRUCT, KIND_UNION):
                # Anonymous struct/union: C code names its members directly (file->f_path
                # lives in one since 6.17), so flatten them.
                fields.extend(self._members(mres, bits))
                continue
            if not bitsize and mres.kind == KIND_INT:
                enc = mres.extra[0]  # old-style bitfields are described in the INT itself
                if (enc & 0xFF) != mres.size_or_type * 8 or (enc >> 16) & 0xFF:
                    bitsize = enc & 0xFF
                    bits += (enc >> 16) & 0xFF
            is_bitfield = bitsize != 0 or bits % 8 != 0
            fields.append(Field(
                name=self._name(name_off), offset_bytes=bits // 8,
                size_bytes=None if is_bitfield else self.sizeof(mtype),
                type_name=self.type_str(mtype), bit_offset=bits, bitfield_size=bitsize))
        return fields

    def func_proto(self, func_name: str) -> list[tuple[str, str]]:
        """(parameter name, C type) of a BTF_KIND_FUNC, in argument order."""
        fid = self.find(func_name, KIND_FUNC)
        if fid is None:
            raise KeyError(f"no function {func_name!r} in BTF {self.source}")
        proto = self.type(self.type(fid).size_or_type)
        params = []
        for i in range(proto.vlen):
            name_off, ptype = proto.extra[2 * i: 2 * i + 2]
            params.append((self._name(name_off), "..." if ptype == 0 else self.type_str(ptype)))
        return params

    def func_return(self, func_name: str) -> str:
        """The C return type of a BTF_KIND_FUNC ('int', 'struct dentry *', 'void')."""
        fid = self.find(func_name, KIND_FUNC)
        if fid is None:
            raise KeyError(f"no function {func_name!r} in BTF {self.source}")
        return self.type_str(self.type(self.type(fid).size_or_type).size_or_type)

    def datasec_vars(self, section_name: str) -> dict[str, tuple[int, int]]:
        """{variable: (offset, size)} of a DATASEC such as '.rodata', '.bss' or '.data'."""
        sid = self.find(section_name, KIND_DATASEC)
        if sid is None:
            raise KeyError(f"no section {section_name!r} in BTF {self.source}")
        sec = self.type(sid)
        out: dict[str, tuple[int, int]] = {}
        for i in range(sec.vlen):
            vtype, offset, size = sec.extra[3 * i: 3 * i + 3]
            out[self.type(vtype).name] = (offset, size)
        return out
