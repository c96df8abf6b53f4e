"""The tailored-BTF archive shipped in the package: its format, reading and writing.

One tar.xz holding `index.json` and `btf/<sha256>.btf`. The index maps a kernel key
`<os-release ID>/<VERSION_ID>/<uname -m>/<uname -r>` (BTFHub's layout) to the sha256 of its
tailored BTF, so kernels whose tailored BTF is identical share one blob. It also records, per
architecture, the CO-RE relocation signature of the objects the BTFs were tailored for: a
different signature means the archive is stale (the objects now ask for other types).

Written by `vigil btf gen` (vigil.btfhub.gen), read at run time by vigil.kernel.btf_source.
Stdlib only: the agent host needs nothing more to read it. Writing is deterministic (sorted
members, zero times and owners), so regenerating from the same inputs gives the same bytes.
"""

from __future__ import annotations

import io
import json
import lzma
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.kernel.errors import InputError

FORMAT = 1
INDEX = "index.json"
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "btf-archive.tar.xz"
# The shipped archive unpacks to about 100 KiB (tailored BTFs are a few KiB each); one
# tailored for thousands of kernels stays far below this. More is a decompression bomb.
MAX_UNPACKED = 256 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BtfArchiveError(InputError):
    """The tailored-BTF archive is missing, damaged or of an unknown format."""


def kernel_key(distro: str, version: str, arch: str, release: str) -> str:
    return f"{distro}/{version}/{arch}/{release}"


@dataclass
class ArchiveIndex:
    kernels: dict[str, str] = field(default_factory=dict)  # kernel key -> sha256
    signatures: dict[str, str] = field(default_factory=dict)  # arch -> CO-RE signature
    source_sizes: dict[str, int] = field(default_factory=dict)  # kernel key -> bytes

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "core_signatures": dict(sorted(self.signatures.items())),
            "kernels": {k: {"btf": v, "source_bytes": self.source_sizes.get(k, 0)}
                        for k, v in sorted(self.kernels.items())},
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, source: str) -> ArchiveIndex:
        try:
            doc: Any = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise BtfArchiveError(f"{source}: {INDEX} is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise BtfArchiveError(f"{source}: {INDEX} is not a JSON object")
        if doc.get("format") != FORMAT:
            raise BtfArchiveError(f"{source}: archive format {doc.get('format')!r}, this "
                                  f"Vigil reads format {FORMAT}")
        kernels, sigs = doc.get("kernels", {}), doc.get("core_signatures", {})
        if not isinstance(kernels, dict) or not isinstance(sigs, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("btf"), str)
                and _SHA256.fullmatch(v["btf"])
                and isinstance(v.get("source_bytes", 0), int) for k, v in kernels.items()):
            raise BtfArchiveError(f"{source}: {INDEX} is damaged: 'kernels' must map each "
                                  f"kernel key to its BTF's sha256 and source size")
        return cls(kernels={k: v["btf"] for k, v in kernels.items()},
                   signatures={str(k): str(v) for k, v in sigs.items()},
                   source_sizes={k: int(v.get("source_bytes", 0)) for k, v in kernels.items()})


def member_name(sha: str) -> str:
    return f"btf/{sha}.btf"


def write_archive(path: Path, index: ArchiveIndex, blobs: dict[str, bytes]) -> int:
    """Write the archive atomically; returns its size in bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        members = [(INDEX, index.to_json())]
        members += [(member_name(sha), blobs[sha]) for sha in sorted(set(index.kernels.values()))]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    packed = lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                           preset=9 | lzma.PRESET_EXTREME)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(packed)
    tmp.replace(path)
    return len(packed)


class BtfArchive:
    """A read-only view of an archive: the index, and blobs by sha256."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            packed = path.read_bytes()
        except FileNotFoundError:
            raise BtfArchiveError(f"no tailored-BTF archive at {path}") from None
        except OSError as e:
            raise BtfArchiveError(f"{path}: cannot read the archive: {e.strerror}") from None
        self._read(_unpack(packed, str(path)))

    @classmethod
    def from_bytes(cls, packed: bytes, source: str) -> BtfArchive:
        """An archive held in memory (``source`` names it in errors)."""
        self = cls.__new__(cls)
        self.path = Path(source)
        self._read(_unpack(packed, source))
        return self

    def _read(self, raw: bytes) -> None:
        path = self.path
        self._members: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                for m in tar:
                    f = tar.extractfile(m) if m.isfile() else None
                    if f is not None:
                        self._members[m.name] = f.read()
        except (tarfile.TarError, EOFError) as e:
            raise BtfArchiveError(f"{path}: damaged archive: {e}") from None
        if INDEX not in self._members:
            raise BtfArchiveError(f"{path}: no {INDEX} in the archive")
        self.index = ArchiveIndex.from_json(self._members[INDEX], str(path))

    def blob(self, sha: str) -> bytes:
        try:
            return self._members[member_name(sha)]
        except KeyError:
            raise BtfArchiveError(f"{self.path}: the index names {sha}, which is not in the "
                                  f"archive") from None

    def lookup(self, key: str) -> bytes | None:
        sha = self.index.kernels.get(key)
        return None if sha is None else self.blob(sha)


def _unpack(packed: bytes, source: str) -> bytes:
    """The archive's tar, at most MAX_UNPACKED bytes."""
    d = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    try:
        raw = d.decompress(packed, MAX_UNPACKED + 1)
    except lzma.LZMAError as e:
        raise BtfArchiveError(f"{source}: cannot read the archive: {e}") from None
    if len(raw) > MAX_UNPACKED:
        raise BtfArchiveError(f"{source}: the archive unpacks to more than "
                              f"{MAX_UNPACKED >> 20} MiB: refused (a decompression bomb?)")
    if not d.eof:
        raise BtfArchiveError(f"{source}: the archive is truncated (the xz stream ends early)")
    return raw
