"""The fuzz targets: one per parser of outside data, each a function of one input's bytes.

A target passes when its parser accepts the input or refuses it with an InputError (the typed
error the CLI prints as one line and exit status 2) whose message is one line naming the file.
Anything else (IndexError, struct.error, EOFError, LZMAError, RecursionError, MemoryError, ...)
is a crash: atheris (tests/fuzz/engine.py) saves the input, and tests/fuzz/test_fuzz.py replays
every saved input as a regression test.

The Sigma rule loader's target lives in tests/fuzz/target_rules.py (its owner's), registered
here. The ring-record target is stricter: the Decoder must never raise, and must account for every
record (an event, or a count in ``Decoder.malformed``).
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.fuzz import target_rules
from vigil.btfhub.core import BpfObject, check_object
from vigil.btfhub.elf import Elf
from vigil.btfhub.images import btf_from_image
from vigil.btfhub.packages import read_package_file
from vigil.btfhub.rawbtf import RawBtf, detect_arch, find_blobs
from vigil.btfhub.rpm import cpio_newc
from vigil.config import load_config
from vigil.events.layout import Clock, Decoder, RawFile
from vigil.kernel.btf import KIND_STRUCT, KIND_UNION
from vigil.kernel.btf_archive import BtfArchive
from vigil.kernel.errors import InputError
from vigil.kernel.uprobes import HOOKS, resolve
from vigil.outputs.ecs import to_ecs

ROOT = Path(__file__).resolve().parents[2]
FUZZ = Path(__file__).resolve().parent
CORPUS = FUZZ / "corpus"
REGRESSIONS = FUZZ / "regressions"
OBJECTS = ROOT / "vigil" / "bpf_objects" / "x86_64"


class BadError(AssertionError):
    """A typed error whose message does not say which file, or spans lines."""


def check_message(e: InputError, source: str) -> None:
    msg = str(e)
    if "\n" in msg or source not in msg:
        raise BadError(f"{type(e).__name__} message must be one line naming {source!r}: "
                       f"{msg!r}")


def ring(data: bytes) -> None:
    """Records framed as u16 length + bytes (the reader hands the Decoder such slices)."""
    records: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data):
        n = struct.unpack_from("<H", data, pos)[0]
        records.append(data[pos + 2: pos + 2 + n])
        pos += 2 + n
    d = Decoder(Clock(1_000_000_000, 100))
    events = list(d.decode_batch(memoryview(r) for r in records))
    if len(events) + sum(d.malformed.values()) != len(records):
        raise AssertionError(f"{len(records)} records, {len(events)} events, "
                             f"{dict(d.malformed)} dropped: some are unaccounted for")
    for ev in events:   # every decoded event renders (addresses, names of any bytes)
        if not isinstance(ev, RawFile):
            json.dumps(to_ecs(ev, {"name": "fuzz"}))


def elf(data: bytes) -> None:
    f = Elf(data, "fuzz.elf")
    for sec in f.sections:
        f.section_data(sec)
        f.relocations(sec)
    f.symbols()


def btf(data: bytes) -> None:
    list(find_blobs(data))
    b = RawBtf(data, "fuzz.btf")
    for t in b.types():
        if t.kind in (KIND_STRUCT, KIND_UNION):
            list(b.flat_members(t))
        b.size_of(t.id)
        b.skip_mods(t.id)
    detect_arch(b)
    b.by_essential_name("task_struct")
    RawBtf(b.in_byte_order(not b.big_endian), "fuzz.btf")


@cache
def _vigil_object() -> BpfObject:
    return BpfObject.from_file(str(OBJECTS / "vigil.bpf.o"))


def btfcheck(data: bytes) -> None:
    """`vigil btf check`: Vigil's real object against a hostile kernel BTF."""
    check_object(_vigil_object(), RawBtf(data, "fuzz.btf"))


def bpfobj(data: bytes) -> None:
    obj = BpfObject(data, "fuzz.bpf.o")
    obj.programs()
    obj.signature()


def image(data: bytes) -> None:
    btf_from_image(data, "fuzz-vmlinuz")


def package(data: bytes) -> None:
    """A .deb or an .rpm (read_package tells them apart by their magic)."""
    read_package_file(io.BytesIO(data), Path("fuzz.pkg"))


@cache
def _control_tar() -> bytes:
    import tarfile

    buf = io.BytesIO()
    text = b"Package: linux-image-fuzz\nVersion: 1\nArchitecture: amd64\n"
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("./control")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return buf.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, body in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
        out += body + (b"\n" if len(body) % 2 else b"")
    return out


def tar(data: bytes) -> None:
    """The data.tar of a .deb, uncompressed (dpkg allows it): tarfile's header parsing."""
    deb = _ar([("debian-binary", b"2.0\n"), ("control.tar", _control_tar()),
               ("data.tar", data)])
    read_package_file(io.BytesIO(deb), Path("fuzz.deb"))


def cpio(data: bytes) -> None:
    """An rpm's payload, decompressed: every member is read."""
    for _ in cpio_newc(io.BytesIO(data), "fuzz.cpio", keep=lambda _name: True):
        pass


@cache
def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="vigil-fuzz-config-"))


def config(data: bytes) -> None:
    """`vigil config check FILE` / `vigil run --config FILE`: the file as a user wrote it."""
    path = _scratch() / "fuzz.yaml"
    path.write_bytes(data)
    load_config(path)


_SEEN = frozenset({"ready", "symbol-not-found", "not-elf", "unreadable"})


def uprobe(data: bytes) -> None:
    """vigil.kernel.uprobes: a bash of a container image (anyone's) searched for readline:
    its symbol tables, its .gnu_debugdata (xz), the libraries it needs. resolve() never
    raises: it says what it found."""
    root = _scratch() / "rootfs"
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    path = root / "usr" / "bin" / "bash"
    path.write_bytes(data)
    t = resolve(HOOKS[0], str(path), str(root))
    if t.status not in _SEEN or (t.status == "ready" and t.attach_path is None):
        raise AssertionError(f"resolve() said {t.status!r}: {t.line()}")


def archive(data: bytes) -> None:
    a = BtfArchive.from_bytes(data, "fuzz.tar.xz")
    for key in a.index.kernels:
        a.lookup(key)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    source: str  # the name its errors must say
    max_len: int  # the biggest input libFuzzer makes


TARGETS = {t.name: t for t in [
    Target("ring", ring, "", 1 << 14),
    Target("elf", elf, "fuzz.elf", 1 << 16),
    Target("btf", btf, "fuzz.btf", 1 << 15),
    Target("btfcheck", btfcheck, "fuzz.btf", 1 << 15),
    Target("bpfobj", bpfobj, "fuzz.bpf.o", 1 << 16),
    Target("image", image, "fuzz-vmlinuz", 1 << 16),
    Target("package", package, "fuzz.pkg", 1 << 17),
    Target("tar", tar, "fuzz.deb", 1 << 15),
    Target("cpio", cpio, "fuzz.cpio", 1 << 15),
    Target("config", config, "fuzz.yaml", 1 << 13),
    Target("archive", archive, "fuzz.tar.xz", 1 << 15),
    Target("uprobe", uprobe, "", 1 << 16),
    Target("rules", target_rules.rules, target_rules.SOURCE, target_rules.MAX_LEN),
]}


def run_one(target: Target, data: bytes) -> None:
    """One input through one target: returns when it is handled cleanly, raises otherwise."""
    try:
        target.run(data)
    except InputError as e:
        if not target.source:  # the ring decoder refuses nothing: it counts
            raise
        check_message(e, target.source)
