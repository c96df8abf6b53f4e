"""CO-RE relocations of a compiled BPF object, and whether they resolve against a kernel BTF.

Owns reading the `.BTF.ext` CO-RE records of an object (either byte order) and resolving each
against a target BTF the way libbpf does at load time:

- candidates are the target's types whose name, flavor suffix (`___pre55`) stripped, equals the
  local type's, of a compatible kind;
- a field access string ("0:3:1") is followed by member *name* through the target, looking
  inside anonymous structs/unions, with libbpf's field compatibility rules;
- `bpf_core_field_exists()`-style relocations may legitimately find nothing (they become 0);
- any other relocation that finds nothing is *poisoned* by libbpf, which breaks the load only if
  the verifier can reach the instruction. So each program is walked with the `exists` answers
  as constants (a small constant-propagation pass over the instructions), and an unresolved
  relocation in dead code (a fallback for older kernels) is not a failure;
- a field read that resolves but would copy the wrong number of bytes (a 32-bit kernel's
  4-byte pointers and longs read as 8, see width_problem()) fails like an unresolved one.

Does not load anything and needs no libbpf: it answers offline, for any architecture.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from vigil.btfhub.elf import STT_FUNC, Elf, ElfError, Section
from vigil.btfhub.rawbtf import BType, RawBtf, essential_name
from vigil.kernel.btf import (
    KIND_ARRAY,
    KIND_ENUM,
    KIND_ENUM64,
    KIND_FLOAT,
    KIND_FUNC_PROTO,
    KIND_FWD,
    KIND_INT,
    KIND_PTR,
    KIND_STRUCT,
    KIND_UNION,
)


class ReloKind(IntEnum):
    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12


_RELO_KINDS = frozenset(k.value for k in ReloKind)
FIELD_KINDS = {ReloKind.FIELD_BYTE_OFFSET, ReloKind.FIELD_BYTE_SIZE, ReloKind.FIELD_EXISTS,
               ReloKind.FIELD_SIGNED, ReloKind.FIELD_LSHIFT_U64, ReloKind.FIELD_RSHIFT_U64}
ENUM_KINDS = {ReloKind.ENUMVAL_EXISTS, ReloKind.ENUMVAL_VALUE}
# Relocations whose "not found" is an answer (0), not a failure.
EXISTS_KINDS = {ReloKind.FIELD_EXISTS, ReloKind.TYPE_EXISTS, ReloKind.ENUMVAL_EXISTS,
                ReloKind.TYPE_MATCHES}
# Field relocations libbpf refuses on an array element (a[n]): only its offset and size work.
_NOT_FOR_ELEMENTS = {ReloKind.FIELD_SIGNED, ReloKind.FIELD_LSHIFT_U64, ReloKind.FIELD_RSHIFT_U64}
_COMPOSITE = (KIND_STRUCT, KIND_UNION)
_KIND_WORD = {KIND_STRUCT: "struct", KIND_UNION: "union", KIND_ENUM: "enum",
              KIND_ENUM64: "enum", KIND_FWD: "struct", KIND_INT: "", KIND_PTR: "",
              KIND_FUNC_PROTO: "func_proto"}


class CoreError(ElfError):
    """An object's CO-RE information cannot be read."""


@dataclass(frozen=True)
class Relo:
    section: str
    insn_off: int  # bytes from the start of the section
    type_id: int  # the root type, in the object's BTF
    access: str  # "0:3:1" (field), "0" (type), "N" (enum value)
    kind: ReloKind
    spec: str  # readable: "struct file.f_path.dentry", "enum bpf_func_id::BPF_FUNC_x"

    @property
    def signature(self) -> str:
        """What the relocation asks for, independent of where it sits: the key of the
        relocation set that decides what a tailored BTF must contain."""
        return f"{self.kind.name} {self.spec} [{self.access}]"


@dataclass(frozen=True)
class Resolution:
    ok: bool
    reason: str = ""  # why not: "struct file has no field f_path"


class BpfObject:
    """A compiled CO-RE object: its BTF, its relocations, its programs."""

    def __init__(self, data: bytes, source: str = "") -> None:
        self.source = source
        self.elf = Elf(data, source)
        btf_sec = self.elf.section(".BTF")
        if btf_sec is None:
            raise CoreError(f"{source} has no .BTF section (compile it with -g)")
        self.btf = RawBtf(self.elf.section_data(btf_sec), f"{source}:.BTF")
        self.relos = self._read_relos()
        self._rodata_loads: dict[int, frozenset[int]] = {}

    @classmethod
    def from_file(cls, path: str) -> BpfObject:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise CoreError(f"cannot read: {e.strerror}", source=path) from None
        return cls(data, path)

    def _read_relos(self) -> list[Relo]:
        ext = self.elf.section(".BTF.ext")
        if ext is None:
            return []
        data = self.elf.section_data(ext)
        try:
            return self._parse_relos(data)
        except struct.error:
            raise CoreError(f".BTF.ext ({len(data)} bytes at {ext.offset:#x}) is truncated or "
                            f"its record counts run past it", source=self.source,
                            offset=ext.offset) from None

    def _parse_relos(self, data: bytes) -> list[Relo]:
        o = self.elf.order
        magic, version, _flags, hdr_len = struct.unpack_from(o + "HBBI", data, 0)
        if magic != 0xEB9F or version != 1:
            raise CoreError(f"{self.source}: .BTF.ext has magic {magic:#x} version {version}")
        if hdr_len < 32:
            return []  # written before CO-RE relocations existed
        core_off, core_len = struct.unpack_from(o + "II", data, 24)
        pos, end = hdr_len + core_off, hdr_len + core_off + core_len
        if end > len(data):
            raise CoreError(f"{self.source}: .BTF.ext CO-RE records run past the section")
        if core_len == 0:
            return []
        rec_size = struct.unpack_from(o + "I", data, pos)[0]
        if rec_size < 16:
            raise CoreError(f"{self.source}: CO-RE record size {rec_size} < 16")
        pos += 4
        out: list[Relo] = []
        while pos < end:
            sec_off, n = struct.unpack_from(o + "II", data, pos)
            pos += 8
            section = self.btf.name_at(sec_off)
            for _ in range(n):
                insn_off, type_id, access_off, kind = struct.unpack_from(o + "4I", data, pos)
                pos += rec_size
                access = self.btf.name_at(access_off)
                if kind not in _RELO_KINDS:
                    raise CoreError(f".BTF.ext: unknown CO-RE relocation kind {kind}",
                                    source=self.source)
                k = ReloKind(kind)
                out.append(Relo(section, insn_off, type_id, access, k,
                                describe(self.btf, type_id, access, k)))
        return out

    def programs(self) -> dict[str, list[tuple[str, int, int]]]:
        """{section: [(program, first byte, end byte)]} for every function symbol."""
        out: dict[str, list[tuple[str, int, int]]] = {}
        for sym in self.elf.symbols():
            if sym.type != STT_FUNC or not 0 < sym.shndx < len(self.elf.sections):
                continue
            sec = self.elf.sections[sym.shndx]
            out.setdefault(sec.name, []).append((sym.name, sym.value, sym.value + sym.size))
        return out

    def rodata_loads(self, sec: Section, rodata: set[int]) -> frozenset[int]:
        """Indexes of the instructions of ``sec`` that load a pointer into .rodata."""
        key = sec.index
        if key not in self._rodata_loads:
            self._rodata_loads[key] = frozenset(
                off // 8 for off, sym in self.elf.relocations(sec).items()
                if sym.shndx in rodata)
        return self._rodata_loads[key]

    def signature(self) -> list[str]:
        """Sorted distinct relocation signatures (see Relo.signature)."""
        return sorted({r.signature for r in self.relos})


# ---------------------------------------------------------------------------------------------
# Describing and resolving one relocation


def _type_word(t: BType) -> str:
    word = _KIND_WORD.get(t.kind, "")
    if t.kind == KIND_FWD and t.kflag:
        word = "union"
    return f"{word} {t.name}".strip() if t.name else f"(anonymous {word or 'type'})"


def _access_path(btf: RawBtf, type_id: int, access: str) -> tuple[list[tuple], str | None]:
    """The named steps of a field access: ('field', name, local member type) or ('index', n).
    Returns the steps and an error for malformed access strings."""
    try:
        idx = [int(x) for x in access.split(":")]
    except ValueError:
        return [], f"malformed access string {access!r}"
    steps: list[tuple] = []
    cur = btf.skip_mods(type_id)
    for i in idx[1:]:
        if cur.kind in _COMPOSITE:
            if i >= len(cur.members):
                return steps, f"access index {i} past the members of {_type_word(cur)}"
            m = cur.members[i]
            if m.name:
                steps.append(("field", m.name, m.type))
            cur = btf.skip_mods(m.type)
        elif cur.kind == KIND_ARRAY and cur.array is not None:
            steps.append(("index", i))
            cur = btf.skip_mods(cur.array[0])
        else:
            return steps, f"access index {i} into a non-composite type"
    return steps, None


def describe(btf: RawBtf, type_id: int, access: str, kind: ReloKind) -> str:
    root = btf.type(type_id)
    if kind in ENUM_KINDS:
        try:
            return f"{_type_word(root)}::{root.members[int(access)].name}"
        except (ValueError, IndexError):
            return f"{_type_word(root)}::?{access}"
    if kind not in FIELD_KINDS:
        return _type_word(root)
    steps, _ = _access_path(btf, type_id, access)
    text = _type_word(root)
    for step in steps:
        text += f".{step[1]}" if step[0] == "field" else f"[{step[1]}]"
    return text


def _kinds_compat(a: int, b: int) -> bool:
    enums = (KIND_ENUM, KIND_ENUM64)
    return a == b or (a in enums and b in enums)


def _fields_compat(lb: RawBtf, lid: int, tb: RawBtf, tid: int, depth: int = 0) -> bool:
    """libbpf's bpf_core_fields_are_compat()."""
    lt, tt = lb.skip_mods(lid), tb.skip_mods(tid)
    if lt.kind in _COMPOSITE and tt.kind in _COMPOSITE:
        return True
    if not _kinds_compat(lt.kind, tt.kind):
        return False
    if lt.kind in (KIND_PTR, KIND_FLOAT):
        return True
    if lt.kind in (KIND_FWD, KIND_ENUM, KIND_ENUM64):
        return not lt.name or essential_name(lt.name) == essential_name(tt.name)
    if lt.kind == KIND_INT:
        # only old-style bitfield-like integers (with a bit offset) are incompatible
        return (lt.int_encoding >> 16) & 0xFF == 0 and (tt.int_encoding >> 16) & 0xFF == 0
    if lt.kind == KIND_ARRAY and lt.array and tt.array and depth < 16:
        return _fields_compat(lb, lt.array[0], tb, tt.array[0], depth + 1)
    return False


def _types_compat(lb: RawBtf, lid: int, tb: RawBtf, tid: int, depth: int = 0) -> bool:
    """libbpf's bpf_core_types_are_compat()."""
    if depth > 32:
        return False
    lt, tt = lb.skip_mods(lid), tb.skip_mods(tid)
    if not _kinds_compat(lt.kind, tt.kind):
        return False
    if lt.kind in (*_COMPOSITE, KIND_ENUM, KIND_ENUM64, KIND_FWD, KIND_FLOAT):
        return True
    if lt.kind == KIND_INT:
        return (lt.int_encoding >> 16) & 0xFF == 0 and (tt.int_encoding >> 16) & 0xFF == 0
    if lt.kind == KIND_PTR:
        return _types_compat(lb, lt.size_or_type, tb, tt.size_or_type, depth + 1)
    if lt.kind == KIND_ARRAY and lt.array and tt.array:
        return _types_compat(lb, lt.array[0], tb, tt.array[0], depth + 1)
    if lt.kind == KIND_FUNC_PROTO:
        if len(lt.members) != len(tt.members):
            return False
        pairs = [(lt.size_or_type, tt.size_or_type)]
        pairs += [(a.type, b.type) for a, b in zip(lt.members, tt.members, strict=True)]
        return all(_types_compat(lb, a, tb, b, depth + 1) for a, b in pairs)
    return False


def _find_member(tb: RawBtf, t: BType, name: str, depth: int = 0,
                 seen: set[int] | None = None) -> int | None:
    """Type id of member ``name`` of ``t``, looking through anonymous members like libbpf
    (each anonymous type once: a hostile BTF sharing one at every level is not exponential)."""
    seen = set() if seen is None else seen
    for m in t.members:
        if m.name == name:
            return m.type
        if not m.name and depth < 16:
            inner = tb.skip_mods(m.type)
            if inner.kind in _COMPOSITE and inner.id not in seen:
                seen.add(inner.id)
                found = _find_member(tb, inner, name, depth + 1, seen)
                if found is not None:
                    return found
    return None


def _match_fields(lb: RawBtf, relo: Relo, tb: RawBtf, cand: BType) -> str | None:
    """None when ``relo``'s field path exists in ``cand``; otherwise the reason it does not."""
    steps, err = _access_path(lb, relo.type_id, relo.access)
    if err:
        return err
    cur = tb.skip_mods(cand.id)
    where = _type_word(cand)
    for step in steps:
        if step[0] == "field":
            _, name, local_type = step
            if cur.kind not in _COMPOSITE:
                return f"{where} is not a struct or union in the target"
            found = _find_member(tb, cur, name)
            if found is None:
                return f"{where} has no field {name}"
            if not _fields_compat(lb, local_type, tb, found):
                t = tb.skip_mods(found)
                return f"{where}.{name} has an incompatible type ({_type_word(t)}, kind {t.kind})"
            where = f"{where}.{name}"
            cur = tb.skip_mods(found)
        else:
            if cur.kind != KIND_ARRAY or cur.array is None:
                return f"{where} is not an array in the target"
            n = cur.array[2]
            if n and step[1] >= n:
                return f"{where}[{step[1]}] is past the end (the target has {n} elements)"
            where = f"{where}[{step[1]}]"
            cur = tb.skip_mods(cur.array[0])
    return None


def _scalar_at(btf: RawBtf, root: int, steps: list[tuple],
               by_name: bool) -> int | None:
    """Type id of the scalar a field access ends at (a member or an array element), following
    ``steps`` from ``root``: by member position in the object's BTF, by member name (like
    libbpf) in a target's. None when the access does not end at a pointer, integer or enum."""
    cur, last = btf.skip_mods(root), None
    for step in steps:
        if step[0] == "field":
            found = _find_member(btf, cur, step[1]) if by_name else step[2]
            if found is None:
                return None
            last = found
        elif cur.array is not None:
            last = cur.array[0]
        else:
            return None
        cur = btf.skip_mods(last)
    if last is None or cur.kind not in (KIND_INT, KIND_PTR, KIND_ENUM, KIND_ENUM64):
        return None  # hand-declared structs are stubs: only their members' widths matter
    return last


def _unsigned_or_ptr(t: BType) -> bool:
    return t.kind == KIND_PTR or (t.kind == KIND_INT and not (t.int_encoding >> 24) & 1)


# BPF instruction code fields (the 8-bit opcode): class in the low 3 bits, mode in the top 3.
_CLASS_MASK, _CLASS_LDX = 0x07, 0x01
_MODE_MASK, _MODE_MEM = 0xE0, 0x60


def width_problem(obj: BpfObject, relo: Relo, target: RawBtf,
                  sized: frozenset[tuple[str, int, str]]) -> str | None:
    """Why a field read that resolves would carry a wrong value on ``target``, or None.

    A field whose width differs in the kernel (a 32-bit kernel's pointers and longs are 4
    bytes, a BPF program's 8) is read right in two ways only: with its size relocated too
    (``sized`` holds the (section, type, access) of the object's FIELD_BYTE_SIZE relocations:
    bpf/kread.h's KREAD), or by a direct load that libbpf narrows itself, which it does for
    pointers and unsigned integers and refuses for signed ones."""
    if relo.kind != ReloKind.FIELD_BYTE_OFFSET:
        return None
    lb = obj.btf
    steps, err = _access_path(lb, relo.type_id, relo.access)
    local_id = None if err or not steps else _scalar_at(lb, relo.type_id, steps, by_name=False)
    if local_id is None:
        return None
    local = lb.type(relo.type_id)
    for cand in target.by_essential_name(essential_name(local.name)):
        if not _kinds_compat(cand.kind, local.kind) or _match_fields(lb, relo, target, cand):
            continue
        target_id = _scalar_at(target, cand.id, steps, by_name=True)
        if target_id is None:
            return None
        want, have = lb.size_of(local_id), target.size_of(target_id)
        if want is None or have is None or want == have:
            return None
        what = f"{relo.spec} is {have} bytes in the kernel, {want} in the object"
        if (relo.section, relo.type_id, relo.access) in sized:
            return None  # read at the kernel's width
        sec = obj.elf.section(relo.section)
        code = obj.elf.section_data(sec)[relo.insn_off] if sec else 0
        if code & _CLASS_MASK == _CLASS_LDX and code & _MODE_MASK == _MODE_MEM:
            if _unsigned_or_ptr(lb.skip_mods(local_id)) and \
                    _unsigned_or_ptr(target.skip_mods(target_id)):
                return None  # libbpf narrows the load
            return f"{what}: a direct load of a signed field, which libbpf cannot narrow"
        return f"{what}, and read at the object's width"
    return None


def resolve(obj: BpfObject, relo: Relo, target: RawBtf) -> Resolution:
    """Does ``relo`` find what it asks for in ``target``? (Not whether that is fatal: see
    check_programs.)"""
    if relo.kind == ReloKind.TYPE_ID_LOCAL:
        return Resolution(True)
    lb = obj.btf
    local = lb.type(relo.type_id)
    if not local.name:
        return Resolution(False, f"relocation against an anonymous type ({relo.spec})")
    cands = [t for t in target.by_essential_name(essential_name(local.name))
             if _kinds_compat(t.kind, local.kind)]
    what = _type_word(local)
    if essential_name(local.name) != local.name:
        what += f" (as {_type_word(local).rsplit(' ', 1)[0]} {essential_name(local.name)})"
    if not cands:
        return Resolution(False, f"no {_KIND_WORD.get(local.kind) or 'type'} "
                                 f"{essential_name(local.name)} in the target")
    if relo.kind in FIELD_KINDS:
        steps, _ = _access_path(lb, relo.type_id, relo.access)
        if relo.kind in _NOT_FOR_ELEMENTS and steps and steps[-1][0] == "index":
            return Resolution(False, f"libbpf cannot apply {relo.kind.name} to an array "
                                     f"element ({relo.spec})")
        reasons = [_match_fields(lb, relo, target, c) for c in cands]
        if any(r is None for r in reasons):
            return Resolution(True)
        return Resolution(False, next(r for r in reasons if r))
    if relo.kind in ENUM_KINDS:
        try:
            wanted = essential_name(local.members[int(relo.access)].name)
        except (ValueError, IndexError):
            return Resolution(False, f"malformed enum access {relo.access!r}")
        for c in cands:
            if any(essential_name(m.name) == wanted for m in c.members):
                return Resolution(True)
        return Resolution(False, f"{what} has no value {wanted} in the target")
    if any(_types_compat(lb, relo.type_id, target, c.id) for c in cands):
        if relo.kind != ReloKind.TYPE_MATCHES:
            return Resolution(True)
        for c in cands:
            tt = target.skip_mods(c.id)
            lt = lb.skip_mods(relo.type_id)
            if all(_find_member(target, tt, m.name) is not None
                   for m in lb.flat_members(lt)):
                return Resolution(True)
        return Resolution(False, f"{what} does not match the target's layout")
    return Resolution(False, f"{what} has an incompatible definition in the target")


# ---------------------------------------------------------------------------------------------
# Which relocated instructions can the verifier reach?

class _Sym:
    """Abstract values besides "a known int" and None ("unknown")."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# A pointer into .rodata (the `const volatile` settings), and a value read through one: known
# to the verifier at load time (the map is frozen), unknowable offline.
RODATA_PTR, SETTING = _Sym("rodata-pointer"), _Sym("setting")
Value = int | _Sym | None
Regs = tuple[Value, ...]
_UNKNOWN: Regs = (None,) * 11


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _cond(op: int, a: int, b: int, bits: int) -> bool | None:
    ua, ub = a & ((1 << bits) - 1), b & ((1 << bits) - 1)
    sa, sb = _signed(a, bits), _signed(b, bits)
    table = {0x10: ua == ub, 0x50: ua != ub, 0x20: ua > ub, 0x30: ua >= ub, 0xA0: ua < ub,
             0xB0: ua <= ub, 0x60: sa > sb, 0x70: sa >= sb, 0xC0: sa < sb, 0xD0: sa <= sb,
             0x40: bool(ua & ub)}
    return table.get(op)


def _alu(op: int, a: Value, b: Value, bits: int) -> Value:
    if a is SETTING or b is SETTING:
        return SETTING  # arithmetic on a setting is still decided at load time
    if not isinstance(a, int) or not isinstance(b, int):
        return None
    mask = (1 << bits) - 1
    ops = {0x00: a + b, 0x10: a - b, 0x40: a | b, 0x50: a & b, 0xA0: a ^ b,
           0x60: a << (b & (bits - 1)), 0x70: (a & mask) >> (b & (bits - 1))}
    r = ops.get(op)
    return None if r is None else r & mask


def _join(a: Value, b: Value) -> Value:
    return a if a is b or (isinstance(a, int) and a == b) else None


def reachable(code: bytes, big_endian: bool, start: int, end: int,
              constants: dict[int, int | None],
              rodata_loads: frozenset[int] = frozenset()) -> dict[int, bool]:
    """Instruction indexes in [start, end) reachable from ``start``, each mapped to True when
    some path to it does not depend on a load-time setting (a `const volatile` read from
    .rodata, whose value the verifier knows and prunes on, but this offline pass does not).

    ``constants`` maps the index of each instruction whose immediate libbpf rewrites to the
    value it gets (0/1 for `exists` relocations, None = unknown for the others);
    ``rodata_loads`` are the indexes of ld_imm64 instructions that point into .rodata. Branches
    on known values take one side only, as the verifier's dead-code elimination does."""
    o = ">" if big_endian else "<"
    insn = struct.Struct(o + "BBhi")
    states: dict[int, tuple[Regs, bool]] = {start: (_UNKNOWN, True)}
    work = [start]
    while work:
        pc = work.pop()
        in_regs, free = states[pc]
        regs = list(in_regs)
        code_b, r, off, imm = insn.unpack_from(code, pc * 8)
        dst, src = (r >> 4, r & 0xF) if big_endian else (r & 0xF, r >> 4)
        if dst > 10 or src > 10:
            continue
        cls, op = code_b & _CLASS_MASK, code_b & 0xF0
        succ: list[tuple[int, Regs, bool]] = []
        if cls == 0:  # LD: ld_imm64 takes two slots
            if code_b == 0x18:
                if pc in rodata_loads:
                    regs[dst] = RODATA_PTR
                elif pc in constants:
                    regs[dst] = constants[pc]
                elif src == 0 and (pc + 1) * 8 + 8 <= len(code):
                    hi = insn.unpack_from(code, (pc + 1) * 8)[3]
                    regs[dst] = ((hi & 0xFFFFFFFF) << 32) | (imm & 0xFFFFFFFF)
                else:
                    regs[dst] = None
                succ.append((pc + 2, tuple(regs), free))
            else:
                regs[0] = None
                succ.append((pc + 1, tuple(regs), free))
        elif cls in (1, 2, 3):  # LDX, ST, STX
            if cls == _CLASS_LDX:
                regs[dst] = SETTING if regs[src] is RODATA_PTR else None
            elif cls == 3 and code_b & 0xE0 == 0xC0:  # atomics may write src and r0
                regs[src] = None
                regs[0] = None
            succ.append((pc + 1, tuple(regs), free))
        elif cls in (4, 7):  # ALU, ALU64
            bits = 64 if cls == 7 else 32
            b_val: Value = regs[src] if code_b & 0x08 else imm
            if pc in constants:
                b_val = constants[pc]
            if op == 0xB0:  # mov
                regs[dst] = b_val & ((1 << bits) - 1) if isinstance(b_val, int) else \
                    b_val if b_val in (SETTING, RODATA_PTR) else None
            else:
                regs[dst] = _alu(op, regs[dst], b_val, bits)
            succ.append((pc + 1, tuple(regs), free))
        elif cls in (5, 6):  # JMP, JMP32
            if op == 0x90:  # exit
                pass
            elif op == 0x80:  # call: helpers and subprograms clobber r0-r5
                for i in range(6):
                    regs[i] = None
                succ.append((pc + 1, tuple(regs), free))
                if src == 1 and start <= pc + 1 + imm < end:
                    succ.append((pc + 1 + imm, _UNKNOWN, free))
            elif op == 0x00:
                succ.append((pc + 1 + (imm if cls == 6 else off), tuple(regs), free))
            else:
                a = regs[dst]
                b = regs[src] if code_b & 0x08 else imm
                by_setting = a is SETTING or b is SETTING
                taken = _cond(op, a, b, 32 if cls == 6 else 64) \
                    if isinstance(a, int) and isinstance(b, int) else None
                if taken is not False:
                    succ.append((pc + 1 + off, tuple(regs), free and not by_setting))
                if taken is not True:
                    succ.append((pc + 1, tuple(regs), free and not by_setting))
        for npc, nregs, nfree in succ:
            if not start <= npc < end:
                continue
            old = states.get(npc)
            merged = (nregs, nfree) if old is None else (
                tuple(_join(x, y) for x, y in zip(old[0], nregs, strict=True)),
                old[1] or nfree)
            if merged != old:
                states[npc] = merged
                work.append(npc)
    return {pc: free for pc, (_, free) in states.items()}


@dataclass(frozen=True)
class Failure:
    program: str
    relo: Relo
    reason: str


@dataclass
class ObjectCheck:
    """The verdict for one object against one target BTF."""

    failures: list[Failure]  # unresolved and reachable: libbpf's load would fail
    # unresolved, reachable only past a branch on a load-time setting (a `const volatile` the
    # loader sets for this kernel, e.g. "vfs_rename takes a struct renamedata"): fine when the
    # loader's choice for this kernel makes that code dead, which this offline check cannot see
    conditional: list[Failure]
    dead: list[Failure]  # unresolved, but only in code this kernel's answers make dead
    resolved: int
    total: int

    @property
    def ok(self) -> bool:
        return not self.failures

    def missing(self) -> list[str]:
        """Distinct reasons, the first thing a reader needs."""
        return sorted({f.reason for f in self.failures})


def check_object(obj: BpfObject, target: RawBtf,
                 programs: Iterable[str] | None = None) -> ObjectCheck:
    """Resolve every relocation of ``obj`` against ``target``; an unresolved one counts as a
    failure when its instruction is reachable in its program (see reachable())."""
    wanted = set(programs) if programs is not None else None
    results = {r: resolve(obj, r, target) for r in obj.relos}
    by_section: dict[str, list[Relo]] = {}
    for r in obj.relos:
        by_section.setdefault(r.section, []).append(r)
    progs = obj.programs()
    rodata = {s.index for s in obj.elf.sections if s.name.startswith(".rodata")}
    sized = frozenset((r.section, r.type_id, r.access) for r in obj.relos
                      if r.kind == ReloKind.FIELD_BYTE_SIZE)
    for r in obj.relos:
        if results[r].ok:
            problem = width_problem(obj, r, target, sized)
            if problem:
                results[r] = Resolution(False, problem)
    out = ObjectCheck([], [], [], sum(1 for v in results.values() if v.ok), len(results))
    for section, relos in by_section.items():
        sec = obj.elf.section(section)
        if sec is None:
            raise CoreError(f"{obj.source}: CO-RE records for a missing section {section}")
        code = obj.elf.section_data(sec)
        constants: dict[int, int | None] = {
            r.insn_off // 8: int(results[r].ok) if r.kind in EXISTS_KINDS else None
            for r in relos}
        loads = obj.rodata_loads(sec, rodata)
        spans = progs.get(section) or [(section, 0, len(code))]
        for name, first, end in spans:
            if wanted is not None and name not in wanted:
                continue
            mine = [r for r in relos if first <= r.insn_off < end]
            bad = [r for r in mine if not results[r].ok and r.kind not in EXISTS_KINDS]
            if not bad:
                continue
            live = reachable(code, obj.elf.big_endian, first // 8, end // 8, constants, loads)
            for r in bad:
                f = Failure(name, r, results[r].reason)
                pc = r.insn_off // 8
                where = out.dead if pc not in live else \
                    out.failures if live[pc] else out.conditional
                where.append(f)
    return out
