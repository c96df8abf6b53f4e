"""Bounds on hostile input for the BTF tooling: size limits, bounded decompression, safe writes.

Owns what every reader of outside data in vigil.btfhub shares: the size limits (a kernel image,
one compressed payload, all payloads tried for one image, a package's decompressed stream), the
decompressors that stop at them and turn every decompressor failure into one typed error
(``DecompressError``, naming the file and where), the zstd/lz4 tools run as bounded streams,
and writing an output file atomically (a temporary file in the same directory, renamed on
success, removed on failure). It knows compression formats only: vigil.btfhub.images finds
payloads in images, vigil.btfhub.packages and vigil.btfhub.rpm read packages.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from vigil.kernel.errors import InputError, VigilError

MiB = 1 << 20
# A kernel image or vmlinux read into memory (a whole file, or one package member). Debian's
# biggest, a debug vmlinux with DWARF, is about 400 MiB; a bzImage is about 8 MiB.
MAX_IMAGE = 512 * MiB
# What one compressed payload inside an image may decompress to: a vmlinux with BTF is 30-90
# MiB on every architecture Debian ships. More is a decompression bomb, not a kernel.
MAX_PAYLOAD = 256 * MiB
# Everything decompressed while searching one image (stray magic numbers are tried too).
MAX_PAYLOADS_TOTAL = 1024 * MiB
# A package's tar or cpio stream is read through, never held: this bounds time, not memory.
# A kernel package's data is a few hundred MiB; a debug package's a few GiB.
MAX_STREAM = 16 * 1024 * MiB
# Control files, configs, names, pax and GNU long-name headers.
MAX_SMALL = 4 * MiB

# What Python's decompressors raise on damaged or truncated input.
DECOMPRESS_ERRORS = (EOFError, OSError, ValueError, lzma.LZMAError, zlib.error)


class DecompressError(InputError):
    """A compressed stream is damaged, truncated, or decompresses to more than its limit."""


class TooBigError(DecompressError):
    """A stream decompresses to more than its limit (a decompression bomb, not a kernel)."""


class ToolMissingError(VigilError):
    """A decompressor Vigil calls (zstd, lz4) is not installed."""


def size_text(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n} bytes"


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes | memoryview, max_length: int = -1, /) -> bytes: ...


# name -> factory of an incremental decompressor of the whole stream format
STDLIB: dict[str, Callable[[], _Decompressor]] = {
    "gzip": lambda: zlib.decompressobj(31),
    "xz": lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ),
    "lzma": lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE),
    "bzip2": bz2.BZ2Decompressor,
}
TOOLS = {"zstd": (["zstd", "-dcq"], "zstd"), "lz4": (["lz4", "-dcq"], "lz4")}


def decompress(name: str, data: bytes | memoryview, limit: int, *, source: str,
               offset: int = 0) -> tuple[bytes, bool]:
    """(output, complete) of the ``name`` stream at the start of ``data``; ``complete`` is
    False for a stream that ends early (the output so far is kept: a truncated kernel may still
    hold its BTF). Raises DecompressError for damaged data or more output than ``limit``."""
    if name in TOOLS:
        argv, package = TOOLS[name]
        out = run_tool(argv, package, data, limit, source=source, offset=offset)
        return out, True  # the tools complain about the bytes after a payload: no verdict
    d = STDLIB[name]()
    try:
        out = d.decompress(data, limit + 1)
    except DECOMPRESS_ERRORS as e:
        raise DecompressError(f"damaged {name} stream: {e}", source=source,
                              offset=offset) from None
    if len(out) > limit:
        raise TooBigError(f"the {name} stream decompresses to more than "
                              f"{size_text(limit)}: refused (not a kernel; a decompression "
                              f"bomb?)", source=source, offset=offset)
    return out, d.eof


def _feed(src: IO[bytes], dst: IO[bytes]) -> None:
    """Copy ``src`` into a tool's stdin; the reader may stop early and close the pipe."""
    with contextlib.suppress(OSError, ValueError):
        while chunk := src.read(MiB):
            dst.write(chunk)
    with contextlib.suppress(OSError):
        dst.close()


class ToolStream:
    """A decompressing tool (zstd, lz4) run over ``src``, its output read as a stream; at most
    ``limit`` bytes. Use as a context manager: leaving it kills the tool if still running."""

    def __init__(self, argv: list[str], package: str, src: IO[bytes], limit: int, *,
                 source: str) -> None:
        if shutil.which(argv[0]) is None:
            raise ToolMissingError(f"{argv[0]} is needed to decompress {source}: apt-get "
                                   f"install {package}")
        self.argv, self.source, self.limit, self.count = argv, source, limit, 0
        self._p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        assert self._p.stdin is not None and self._p.stdout is not None
        self._out = self._p.stdout
        self._feeder = threading.Thread(target=_feed, args=(src, self._p.stdin), daemon=True)
        self._feeder.start()

    def read(self, n: int = -1, /) -> bytes:
        want = self.limit + 1 - self.count if n < 0 else min(n, self.limit + 1 - self.count)
        data = self._out.read(max(want, 0)) if want > 0 else b""
        self.count += len(data)
        if self.count > self.limit:
            raise TooBigError(f"{self.argv[0]} output exceeds {size_text(self.limit)}: "
                                  f"refused (a decompression bomb?)", source=self.source)
        return data

    def status(self) -> tuple[int, str]:
        """The tool's exit status and last words, once its output has been read to the end."""
        assert self._p.stderr is not None
        err = self._p.stderr.read(4096).decode("utf-8", "replace").strip()
        return self._p.wait(), err

    def close(self) -> None:
        if self._p.poll() is None:
            self._p.kill()
        self._p.wait()
        for f in (self._p.stdout, self._p.stderr):
            if f is not None:
                f.close()
        self._feeder.join(timeout=5)

    def __enter__(self) -> ToolStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_tool(argv: list[str], package: str, data: bytes | memoryview, limit: int, *, source: str,
             offset: int = 0) -> bytes:
    """All of a tool's output over ``data`` (at most ``limit`` bytes). A kernel payload is
    followed by other bytes (its size, the rest of the image), which the tools complain about
    after writing the real output: their status is not a verdict here."""
    where = f"{source}: at byte {offset:#x}" if offset else source
    with ToolStream(argv, package, io.BytesIO(data), limit, source=where) as t:
        return t.read()


# ---------------------------------------------------------------------------------------------
# Package streams: read through, counted, their failures typed


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of one member, read through: every decompressor failure becomes
    a DecompressError naming the member and the offset in its decompressed data, and more than
    MAX_STREAM bytes is refused."""

    def __init__(self, src: _Readable, what: str, source: str,
                 at_end: Callable[[], None] | None = None) -> None:
        self._src, self._what, self._source, self._at_end = src, what, source, at_end
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._src.read(len(b))
        except DECOMPRESS_ERRORS as e:
            after = f" (after {self.count} good bytes)" if self.count else ""
            raise DecompressError(f"{self._what} is damaged{after}: {e}",
                                  source=self._source) from None
        if not data and self._at_end is not None:
            self._at_end()
        self.count += len(data)
        if self.count > MAX_STREAM:
            raise DecompressError(f"{self._what} decompresses to more than "
                                  f"{size_text(MAX_STREAM)}: refused", source=self._source)
        b[: len(data)] = data
        return len(data)


def decompressing(f: IO[bytes], suffix: str, what: str, source: str,
                  tools: list[ToolStream]) -> IO[bytes]:
    """``f``'s data decompressed as its ``suffix`` says; a tool started is added to
    ``tools`` (the caller stops it)."""
    raw: _Readable
    at_end = None
    if suffix in ("", ".tar"):
        raw = f
    elif suffix == ".xz":
        raw = lzma.LZMAFile(f)  # noqa: SIM115 (read through by the caller, dropped with it)
    elif suffix == ".gz":
        raw = gzip.GzipFile(fileobj=f)
    elif suffix == ".bz2":
        raw = bz2.BZ2File(f)
    elif suffix == ".zst":
        tool = ToolStream(["zstd", "-dcq"], "zstd", f, MAX_STREAM, source=source)
        tools.append(tool)
        raw = tool

        def at_end() -> None:
            status, err = tool.status()
            if status != 0:
                raise DecompressError(f"{what} is damaged: zstd: "
                                      f"{err or f'exit status {status}'}", source=source)
    else:
        raise DecompressError(f"{what}: unknown compression {suffix!r}", source=source)
    return io.BufferedReader(_Decompressed(raw, what, source, at_end), 1 << 20)


def write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` completely or is untouched: written to a temporary file in the
    same directory, renamed over ``path``; the temporary file is removed on any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
