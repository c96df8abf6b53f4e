"""The Python mirror of the kernel records matches what was compiled.

Reads each struct from the compiled object's BTF and compares size, field names and offsets with
the struct formats the decoder uses; reads the enums from the shared C header and compares them
with the Python enums. A field added on one side only fails here, not in production.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from vigil.events import layout
from vigil.events.model import FileOp
from vigil.kernel.loader import bundled_object

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "vigil_events.h"


def _items(s: struct.Struct) -> list[tuple[int, int]]:
    """(offset, size) of each item of an unaligned ("=") struct format; "16s" is one item."""
    fmt = s.format.lstrip("=<>!@")
    out, off = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", fmt):
        n = int(count or 1)
        if code == "s":
            out.append((off, n))
            off += n
            continue
        size = struct.calcsize("=" + code)
        for _ in range(n):
            out.append((off, size))
            off += size
    return out


def _python_fields(name: str) -> list[tuple[str, int, int]]:
    names, structs = layout.LAYOUTS[name]
    fields: list[tuple[str, int, int]] = []
    off = 0
    items: list[tuple[int, int]] = []
    for s in structs:
        if s in (layout.HDR, layout.PROC, layout.CREDS) and len(structs) > 1:
            items.append((off, s.size))  # nested struct: one field
        else:
            items.extend((off + o, sz) for o, sz in _items(s))
        off += s.size
    for i, fname in enumerate(names):
        if i < len(items):
            fields.append((fname, items[i][0], items[i][1]))
        else:  # trailing flexible array
            fields.append((fname, off, 0))
    return fields


@pytest.fixture(scope="module")
def btf():  # type: ignore[no-untyped-def]
    from vigil.kernel.btf import Btf

    obj = bundled_object("vigil")
    if not obj.exists():
        pytest.skip(f"{obj} not built (run ./do setup)")
    with Btf.parse(obj) as b:
        yield b


@pytest.mark.parametrize("name", sorted(layout.LAYOUTS))
def test_struct_matches_btf(btf, name: str) -> None:  # type: ignore[no-untyped-def]
    c = btf.struct_layout(name)
    py = _python_fields(name)
    assert [f.name for f in c.fields] == [f[0] for f in py]
    for f, (fname, off, size) in zip(c.fields, py, strict=True):
        assert (f.offset_bytes, f.size_bytes or 0) == (off, size), fname
    total = sum(s.size for s in layout.LAYOUTS[name][1])
    assert c.size == total


def test_record_sizes(btf) -> None:  # type: ignore[no-untyped-def]
    assert btf.struct_layout("vigil_file_event").size == layout.FILE_EVENT_SIZE
    assert btf.struct_layout("vigil_exec_event").size == layout.EXEC_EVENT_SIZE
    assert btf.struct_layout("vigil_exit_event").size == layout.EXIT_EVENT_SIZE
    assert btf.struct_layout("vigil_net_event").size == layout.NET_EVENT_SIZE
    key = btf.struct_layout("vigil_watch_key")
    assert key.size == 4 + layout.WATCH_KEY_LEN


def _c_enum(prefix: str) -> dict[str, int]:
    text = HEADER.read_text()
    return {m[1]: int(m[2], 0) for m in re.finditer(rf"\b{prefix}(\w+)\s*=\s*(\w+)", text)}


def test_file_ops_match_header() -> None:
    c = _c_enum("VIGIL_OP_")
    assert c.pop("OPEN_WRITE") == layout.OP_OPEN_WRITE
    assert c == {op.name: op.value for op in FileOp}


def test_flags_and_stats_match_header() -> None:
    assert _c_enum("VIGIL_F_") == {f.name: f.value for f in layout.Flag}
    stats = _c_enum("VIGIL_STAT_")
    assert stats.pop("MAX") == layout.STAT_SLOTS
    assert stats == {s.name: s.value for s in layout.Stat}
    kinds = _c_enum("VIGIL_EV_")
    assert kinds == {k.name: k.value for k in layout.Kind}


def test_cred_and_sec_ops_match_header() -> None:
    from vigil.events.security import CredOp, SecOp

    cred = _c_enum("VIGIL_CRED_")
    assert cred.pop("OP_MAX") == max(CredOp) + 1
    assert cred == {op.name: op.value for op in CredOp}
    sec = {k: v for k, v in _c_enum("VIGIL_SEC_").items() if k != "NAME_LEN"}
    assert sec.pop("OP_MAX") == max(SecOp) + 1
    assert sec == {op.name: op.value for op in SecOp}


def test_own_object_kinds_match_header() -> None:
    from vigil.kernel.backend import _OWN_KINDS

    assert {k.lower(): v for k, v in _c_enum("VIGIL_OWN_").items()} == {
        {"prog": "prog", "map": "map", "link": "link"}[k]: v for k, v in _OWN_KINDS.items()}
