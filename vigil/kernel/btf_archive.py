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
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.kernel.errors import VigilError

FORMAT = 1
INDEX = "index.json"
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "btf-archive.tar.xz"


class BtfArchiveError(VigilError):
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
            doc: dict[str, Any] = json.loads(data)
        except ValueError as e:
            raise BtfArchiveError(f"{source}: {INDEX} is not JSON: {e}") from None
        if doc.get("format") != FORMAT:
            raise BtfArchiveError(f"{source}: archive format {doc.get('format')!r}, this "
                                  f"Vigil reads format {FORMAT}")
        kernels = doc.get("kernels", {})
        return cls(kernels={k: v["btf"] for k, v in kernels.items()},
                   signatures=dict(doc.get("core_signatures", {})),
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
            raw = lzma.decompress(path.read_bytes())
        except FileNotFoundError:
            raise BtfArchiveError(f"no tailored-BTF archive at {path}") from None
        except (lzma.LZMAError, OSError) as e:
            raise BtfArchiveError(f"{path}: cannot read the archive: {e}") from None
        self._members: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                for m in tar:
                    f = tar.extractfile(m) if m.isfile() else None
                    if f is not None:
                        self._members[m.name] = f.read()
        except tarfile.TarError as e:
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
