"""The real command line on mutated real inputs: `vigil btf extract`, `vigil btf check`,
`vigil config check` and `vigil run --config` must each exit 2 with one line on stderr that
names the file, never a traceback, and leave no output file behind.

The inputs are the seed corpus' real packages (made by dpkg-deb and rpmbuild, holding a
compressed kernel image with a real BTF), the shipped archive's tailored BTFs, the kernel's own
BTF and the embedded default configuration, damaged the ways the issue found: truncated,
byte-flipped, spliced, overwritten with random bytes, headers claiming gigabytes, characters
inserted into YAML. VIGIL_TEST_CLI (a command, split like a shell would) runs them against
another build of the command line, e.g. an older checkout's.
"""

from __future__ import annotations

import os
import random
import shlex
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fuzz.targets import CORPUS, ROOT

CLI = shlex.split(os.environ.get("VIGIL_TEST_CLI", "")) or [str(ROOT / ".venv" / "bin" / "vigil")]
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
Mutation = Callable[[bytes], bytes]


def vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, errors="replace",
                          timeout=300, check=False)


def assert_one_clean_line(p: subprocess.CompletedProcess[str], names: str) -> None:
    err = p.stderr.strip().splitlines()
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert len(err) == 1 and names in err[0], err


def _member(data: bytes, name: bytes) -> tuple[int, int]:
    """(offset, size) of an ar member's data."""
    i = data.index(name)
    return i + 60, int(data[i + 48: i + 58])


def truncated(at: float) -> Mutation:
    return lambda d: d[: int(len(d) * at)]


def flipped(where: Callable[[bytes], int]) -> Mutation:
    def f(d: bytes) -> bytes:
        b = bytearray(d)
        b[where(d)] ^= 0x5A
        return bytes(b)
    return f


def spliced(d: bytes) -> bytes:
    """A piece of the compressed data cut out (a download that lost a block)."""
    start, size = _member(d, b"data.tar")
    cut = start + size // 3
    return d[:cut] + d[cut + 700:]


def randomized(d: bytes) -> bytes:
    start, size = _member(d, b"data.tar")
    rnd = random.Random(11).randbytes(512)
    at = start + size // 2
    return d[:at] + rnd + d[at + len(rnd):]


def in_data(fraction: float) -> Callable[[bytes], int]:
    return lambda d: _member(d, b"data.tar")[0] + int(_member(d, b"data.tar")[1] * fraction)


def in_payload(d: bytes) -> int:
    """A byte of the kernel image's xz payload, inside an uncompressed data.tar."""
    return d.index(b"\xfd7zXZ\x00", _member(d, b"data.tar")[0]) + 300


# (seed, mutation, what it does, what the message must say)
PACKAGES: list[tuple[str, str, Mutation, str]] = [
    ("kernel-xz.deb", "truncated", truncated(0.6), "truncated"),
    ("kernel-xz.deb", "flipped", flipped(in_data(0.5)), "data.tar.xz is damaged"),
    ("kernel-xz.deb", "spliced", spliced, "truncated"),
    ("kernel-xz.deb", "random", randomized, "data.tar.xz is damaged"),
    ("kernel-gzip.deb", "flipped", flipped(in_data(0.4)), "data.tar.gz is damaged"),
    ("kernel-zstd.deb", "flipped", flipped(in_data(0.5)), "data.tar.zst is damaged"),
    ("kernel-none.deb", "payload-flipped", flipped(in_payload), "xz stream at 0x"),
    ("kernel-w6.xzdio.rpm", "truncated", truncated(0.7), "payload is damaged"),
    ("kernel-w9.gzdio.rpm", "flipped", flipped(lambda d: len(d) - 200), "payload is damaged"),
]


@pytest.mark.parametrize("seed,how,mutate,says", PACKAGES,
                         ids=[f"{s}-{h}" for s, h, _, _ in PACKAGES])
def test_extract_refuses_a_damaged_package_cleanly(tmp_path: Path, seed: str, how: str,
                                                   mutate: Mutation, says: str) -> None:
    real = (CORPUS / "package" / seed).read_bytes()
    bad = tmp_path / f"{how}-{seed}"
    bad.write_bytes(mutate(real))
    out = tmp_path / "out"
    p = vigil("btf", "extract", "--distro", "debian/12", "--out", str(out), str(bad))
    assert_one_clean_line(p, bad.name)
    assert says in p.stderr, p.stderr
    assert not out.exists() or not [f for f in out.rglob("*") if f.is_file()]


def _types_claim_4gib(d: bytes) -> bytes:
    b = bytearray(d)
    struct.pack_into("<I", b, 12, 0xFFFFFFFC)
    return bytes(b)


def _unknown_kind(d: bytes) -> bytes:
    b = bytearray(d)
    first_type = 24 + struct.unpack_from("<I", b, 8)[0]
    b[first_type + 7] = 0x1F  # kind 31 in type [1]'s info word
    return bytes(b)


BTFS: list[tuple[str, Mutation]] = [
    ("truncated", truncated(0.5)),
    ("4gib-types", _types_claim_4gib),
    ("unknown-kind", _unknown_kind),
    ("random", lambda d: d[:24] + random.Random(5).randbytes(len(d) - 24)),
]


@pytest.mark.parametrize("how,mutate", BTFS, ids=[h for h, _ in BTFS])
@pytest.mark.parametrize("source", ["tailored", "kernel"])
def test_check_refuses_a_damaged_btf_cleanly(tmp_path: Path, source: str, how: str,
                                             mutate: Mutation) -> None:
    if source == "kernel" and not KERNEL_BTF.exists():
        pytest.skip("this kernel has no /sys/kernel/btf/vmlinux")
    real = (CORPUS / "btf" / "tailored-x86_64.btf").read_bytes() if source == "tailored" \
        else KERNEL_BTF.read_bytes()
    bad = tmp_path / f"{how}.btf"
    bad.write_bytes(mutate(real))
    p = vigil("btf", "check", "--arch", "x86_64", "--btf", str(bad))
    assert_one_clean_line(p, f"{bad.name}: at byte 0x")


def _with_index(index: bytes) -> Mutation:
    """The archive with its index.json replaced (repacked the way `vigil btf gen` packs)."""
    def f(d: bytes) -> bytes:
        import io
        import lzma
        import tarfile

        out = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress(d))) as src, \
                tarfile.open(fileobj=out, mode="w") as dst:
            for m in src:
                f = src.extractfile(m)
                body = index if m.name == "index.json" else f.read() if f else b""
                m.size = len(body)
                dst.addfile(m, io.BytesIO(body))
        return lzma.compress(out.getvalue())
    return f


INDEXES = {
    "a-list": b"[1, 2]",
    "kernels-without-btf": b'{"format": 1, "kernels": {"debian/12/x86_64/6.1.0-1": "ab"}}',
}
TRAVERSAL = b'{"format": 1, "kernels": {"k/x86_64/r": {"btf": "../../../../etc/passwd"}}}'


@pytest.mark.parametrize("how", INDEXES)
def test_check_refuses_a_damaged_archive_index_cleanly(tmp_path: Path, how: str) -> None:
    bad = tmp_path / f"{how}.tar.xz"
    bad.write_bytes(_with_index(INDEXES[how])((ROOT / "vigil" / "data" / "btf-archive.tar.xz")
                                              .read_bytes()))
    assert_one_clean_line(vigil("btf", "check", "--btf", str(bad)), bad.name)


def test_check_reads_no_file_a_gen_index_points_outside(tmp_path: Path) -> None:
    """A `vigil btf gen` output directory whose index names a path instead of a sha256."""
    gen = tmp_path / "gen"
    (gen / "btf").mkdir(parents=True)
    (gen / "index.json").write_bytes(TRAVERSAL)
    assert_one_clean_line(vigil("btf", "check", "--btf", str(gen)), "index.json")


def _insert(line: int, text: str) -> Callable[[str], str]:
    def f(doc: str) -> str:
        lines = doc.splitlines(keepends=True)
        lines[line - 1] = text + lines[line - 1]
        return "".join(lines)
    return f


CONFIGS: list[tuple[str, Callable[[str], str], int]] = [
    ("control-char", _insert(3, "\x01"), 3),
    ("brackets", lambda d: d.replace("directories:", "directories: " + "[" * 2000, 1), 0),
    ("bad-date", lambda d: d.replace("exec_events: true", "exec_events: 2001-02-30", 1), 0),
    ("nul-path", lambda d: d.replace("path: /etc", 'path: "/etc\\0"', 1), 0),
    ("huge-int", lambda d: d.replace("ring_buffer_mb: 16", "ring_buffer_mb: " + "7" * 5000,
                                     1), 0),
]


@pytest.mark.parametrize("how,mutate,line", CONFIGS, ids=[h for h, _, _ in CONFIGS])
def test_config_check_refuses_a_damaged_config_cleanly(tmp_path: Path, how: str,
                                                       mutate: Callable[[str], str],
                                                       line: int) -> None:
    real = (ROOT / "vigil" / "data" / "default.yaml").read_text()
    text = mutate(real)
    assert text != real, "the mutation must apply to the default config"
    bad = tmp_path / f"{how}.yaml"
    bad.write_text(text)
    p = vigil("config", "check", str(bad))
    assert_one_clean_line(p, f"{bad}:{line}:" if line else f"{bad}:")


def test_run_refuses_a_damaged_config_before_loading_anything(tmp_path: Path) -> None:
    bad = tmp_path / "v.yaml"
    bad.write_text("exec_events: true\nscan: {interval: 2001-13-45}\n")
    p = vigil("run", "--config", str(bad), "--duration", "1")
    assert_one_clean_line(p, f"{bad}:2:")


def test_invalid_utf8_config_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "v.yaml"
    bad.write_bytes(b"exec_events: true\n\noutput: js\xffon\n")
    assert_one_clean_line(vigil("config", "check", str(bad)), f"{bad}:3:")
