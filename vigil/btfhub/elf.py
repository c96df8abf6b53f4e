"""A minimal ELF reader: header, sections by name, symbols; 32/64-bit, either byte order.

Owns reading the ELF files the BTF tooling meets: kernel vmlinux images of every architecture
(their .BTF section) and Vigil's compiled BPF objects (.BTF, .BTF.ext, program sections and
symbols), including big-endian ones this little-endian host's libbpf refuses to open. Does not
interpret BTF (vigil.btfhub.rawbtf) nor relocate anything.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vigil.kernel.errors import InputError

ELF_MAGIC = b"\x7fELF"
EM_BPF = 247
SHT_PROGBITS, SHT_SYMTAB, SHT_NOBITS, SHT_REL = 1, 2, 8, 9
SHT_DYNAMIC, SHT_DYNSYM = 6, 11
SHF_EXECINSTR = 0x4
STT_FUNC = 2


_NAME_MAX = 4096  # a section or symbol name longer than this is cut (real ones are short)
# ELF class -> (header fields after e_ident, their size, e_shentsize's offset, section header)
_HEADER = {32: ("HHIIIIIHHHHHH", 36, 0x2E, 40), 64: ("HHIQQQIHHHHHH", 48, 0x3A, 64)}


class ElfError(InputError):
    """A file is not the ELF file it should be (or is damaged: names the byte offset)."""


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int


class Elf:
    """An ELF image held in memory; ``order`` is '<' or '>' for struct formats."""

    def __init__(self, data: bytes, source: str = "") -> None:
        self.data = data
        self.source = source = source or "data"
        if data[:4] != ELF_MAGIC:
            raise ElfError(f"{source} is not an ELF file")
        if len(data) < 6:
            raise ElfError("truncated ELF header", source=source, offset=len(data))
        cls, enc = data[4], data[5]
        if cls not in (1, 2) or enc not in (1, 2):
            raise ElfError(f"unknown ELF class {cls} or data encoding {enc}", source=source,
                           offset=4)
        self.bits = 32 if cls == 1 else 64
        self.order = "<" if enc == 1 else ">"
        self.big_endian = enc == 2
        self._symbols: dict[int, list[Symbol]] = {}
        hdr, hdr_size, shentsize_at, shsize = _HEADER[self.bits]
        if len(data) < 16 + hdr_size:
            raise ElfError(f"truncated ELF header ({len(data)} bytes)", source=source,
                           offset=len(data))
        (self.type, self.machine, _, _, _, shoff, _, _, _, _, shentsize, shnum,
         shstrndx) = struct.unpack_from(self.order + hdr, data, 16)
        shfmt = self.order + ("IIQQQQIIQQ" if self.bits == 64 else "IIIIIIIIII")
        if shoff == 0 or shnum == 0:
            self.sections: list[Section] = []
            return
        if shentsize < shsize:
            raise ElfError(f"section header entries of {shentsize} bytes, less than the "
                           f"{shsize} of ELF{self.bits}", source=source, offset=shentsize_at)
        if shoff + shnum * shentsize > len(data):
            raise ElfError(f"truncated ELF file ({shnum} section headers at {shoff:#x} run "
                           f"past the end, {len(data)} bytes)", source=source, offset=shoff)
        raw = [struct.unpack_from(shfmt, data, shoff + i * shentsize) for i in range(shnum)]
        names_off = raw[shstrndx][4] if shstrndx < shnum else 0
        self.sections = [
            Section(i, self._cstr(names_off + r[0]), r[1], r[2], r[4], r[5], r[6], r[7], r[9])
            for i, r in enumerate(raw)
        ]

    def _cstr(self, off: int) -> str:
        """The NUL-terminated name at ``off``; "" outside the file, cut at _NAME_MAX."""
        if not 0 <= off < len(self.data):
            return ""
        end = self.data.find(b"\0", off, off + _NAME_MAX)
        return self.data[off: end if end >= 0 else off + _NAME_MAX].decode("utf-8", "replace")

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def section_data(self, sec: Section) -> bytes:
        if sec.type == SHT_NOBITS:
            return b""
        if sec.offset + sec.size > len(self.data):
            raise ElfError(f"section {sec.name} ({sec.size} bytes at {sec.offset:#x}) runs "
                           f"past the end of the file ({len(self.data)} bytes)",
                           source=self.source, offset=sec.offset)
        return self.data[sec.offset: sec.offset + sec.size]

    def symbols(self, table: int = SHT_SYMTAB) -> list[Symbol]:
        """The symbols of the first section of type ``table`` (SHT_SYMTAB, or SHT_DYNSYM:
        what a stripped executable or library still exports and imports)."""
        if table not in self._symbols:
            self._symbols[table] = self._read_symbols(table)
        return self._symbols[table]

    def _read_symbols(self, table: int) -> list[Symbol]:
        symtab = next((s for s in self.sections if s.type == table), None)
        if symtab is None:
            return []
        if symtab.link >= len(self.sections):
            raise ElfError(f"symbol table {symtab.name} links to section {symtab.link}, past "
                           f"the {len(self.sections)} sections", source=self.source,
                           offset=symtab.offset)
        strtab = self.sections[symtab.link]
        data = self.section_data(symtab)
        out = []
        if self.bits == 64:
            fmt, size = self.order + "IBBHQQ", 24
            for off in range(0, len(data) - size + 1, size):
                name, info, _, shndx, value, sz = struct.unpack_from(fmt, data, off)
                out.append(Symbol(self._cstr(strtab.offset + name), value, sz, info & 0xF,
                                  info >> 4, shndx))
        else:
            fmt, size = self.order + "IIIBBH", 16
            for off in range(0, len(data) - size + 1, size):
                name, value, sz, info, _, shndx = struct.unpack_from(fmt, data, off)
                out.append(Symbol(self._cstr(strtab.offset + name), value, sz, info & 0xF,
                                  info >> 4, shndx))
        return out

    def relocations(self, section: Section) -> dict[int, Symbol]:
        """{offset in ``section``: the symbol it refers to} from its SHT_REL section(s) (what
        an unlinked BPF object uses to point instructions at maps and global data)."""
        syms = self.symbols()
        out: dict[int, Symbol] = {}
        for rel in self.sections:
            if rel.type != SHT_REL or rel.info != section.index:
                continue
            data = self.section_data(rel)
            if self.bits == 64:
                for off in range(0, len(data) - 15, 16):
                    r_offset, r_info = struct.unpack_from(self.order + "QQ", data, off)
                    if r_info >> 32 < len(syms):
                        out[r_offset] = syms[r_info >> 32]
            else:
                for off in range(0, len(data) - 7, 8):
                    r_offset, r_info = struct.unpack_from(self.order + "II", data, off)
                    if r_info >> 8 < len(syms):
                        out[r_offset] = syms[r_info >> 8]
        return out
