"""`vigil btf extract / gen / check` on real Debian kernel packages of six architectures.

Everything runs through the real command line; bpftool is the real one. The packages are
downloaded once (see conftest.py).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from btfpkgs import KERNELS, VERSION_IDS, vigil

from vigil.btfhub.core import BpfObject, check_object, width_problem
from vigil.btfhub.packages import read_package
from vigil.btfhub.rawbtf import RawBtf, detect_arch
from vigil.kernel import arch as archmod
from vigil.kernel.btf_archive import BtfArchive
from vigil.kernel.loader import bundled_object

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
# Debian arch -> how its image carries the BTF (what `extract` reports)
HOW = {
    "amd64": "xz payload",  # bzImage: the payload its setup header points at
    "arm64": "BTF blob found by its header",  # raw Image
    "s390x": "payload",  # zstd inside the s390 image
    "ppc64el": "ELF .BTF section",  # an ELF vmlinux
    "riscv64": "BTF blob found by its header",  # EFI Image
}


def _layout_path(out: Path, name: str, release: str) -> Path:
    suite, deb_arch = KERNELS[name]
    arch = archmod.canonical(deb_arch)
    return out / "debian" / VERSION_IDS[suite] / arch / f"{release}.btf"


def _release(deb: Path) -> str:
    return next(iter(read_package(deb).images))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["amd64", "arm64", "s390x", "ppc64el", "riscv64"])
def test_extract_from_a_debian_package(name: str, kernel_deb: Callable[[str], Path],
                                       tmp_path: Path) -> None:
    deb = kernel_deb(name)
    suite, deb_arch = KERNELS[name]
    p = vigil("btf", "extract", "--distro", f"debian/{VERSION_IDS[suite]}", "--out",
              str(tmp_path), str(deb))
    release = _release(deb)
    out = _layout_path(tmp_path, name, release)
    assert out.is_file(), p.stdout
    assert HOW[name] in p.stdout
    btf = RawBtf.from_file(out)
    assert detect_arch(btf) == archmod.canonical(deb_arch)
    assert btf.big_endian == (name == "s390x")
    assert len(btf) > 50_000 and btf.by_name("task_struct")
    # the real bpftool reads what we wrote
    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(out)], capture_output=True,
                          text=True, check=True).stdout
    assert "STRUCT 'task_struct'" in dump


@pytest.mark.slow
def test_a_package_without_btf_is_a_clear_error(kernel_deb: Callable[[str], Path],
                                                tmp_path: Path) -> None:
    deb = kernel_deb("armhf")
    p = vigil("btf", "extract", "--out", str(tmp_path), str(deb), check=False)
    assert p.returncode == 2
    assert "no BTF inside" in p.stderr and "CONFIG_DEBUG_INFO_BTF is not set" in p.stderr
    assert not list(tmp_path.iterdir())
    # --skip-missing reports it and goes on
    p = vigil("btf", "extract", "--skip-missing", "--out", str(tmp_path), str(deb),
              str(kernel_deb("amd64")), check=False)
    assert p.returncode == 0 and "skipped:" in p.stdout
    assert [f.name for f in tmp_path.iterdir()] == [f"{_release(kernel_deb('amd64'))}.btf"]


# The kernel's own compressors for Image.gz and friends (arch/arm64/boot/Makefile, scripts/
# Makefile.lib): the same tools, and like the kernel's, a few bytes after the stream.
COMPRESSORS = {
    "gz": ["gzip", "-n", "-1"],
    "xz": ["xz", "--check=crc32", "-0"],
    "zst": ["zstd", "-1", "-q"],
    "lz4": ["lz4", "-l", "-1", "-q"],  # the legacy frame format, as the kernel writes it
    "bz2": ["bzip2", "-1"],
    "lzma": ["xz", "--format=lzma", "-0"],
}


@pytest.fixture(scope="module")
def arm64_image(kernel_deb: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, str]:
    pkg = read_package(kernel_deb("arm64"))
    release, (_, data) = next(iter(pkg.images.items()))
    path = tmp_path_factory.mktemp("image") / "Image"
    path.write_bytes(data)
    return path, release


@pytest.mark.slow
@pytest.mark.parametrize("ext", list(COMPRESSORS))
def test_extract_from_a_compressed_arm64_image(ext: str, arm64_image: tuple[Path, str],
                                               tmp_path: Path) -> None:
    image, release = arm64_image
    argv = COMPRESSORS[ext]
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} missing: ./do setup installs it")
    packed = subprocess.run([*argv, "-c", str(image)], capture_output=True, check=True).stdout
    src = tmp_path / f"Image.{ext}"
    src.write_bytes(packed + b"\x00\x10\x00\x02")  # the kernel appends the size like this
    p = vigil("btf", "extract", "--out", str(tmp_path / "out"), str(src))
    fmt = {"gz": "gzip", "zst": "zstd", "bz2": "bzip2"}.get(ext, ext)
    assert f"{fmt} payload at 0x0" in p.stdout
    got = (tmp_path / "out" / f"{release}.btf").read_bytes()
    raw = vigil("btf", "extract", "--out", str(tmp_path / "raw"), str(image))
    assert "found by its header" in raw.stdout
    assert got == (tmp_path / "raw" / f"{release}.btf").read_bytes()


SPEC = """\
Name: kernel-core
Version: {version}
Release: 1.vigiltest
Summary: A Debian kernel image packaged the Fedora way (image in /lib/modules)
License: GPL-2.0-only
BuildArch: x86_64
%description
Test package for vigil btf extract.
%install
mkdir -p %{{buildroot}}/lib/modules/{release}
cp %{{_sourcedir}}/vmlinuz %{{buildroot}}/lib/modules/{release}/vmlinuz
cp %{{_sourcedir}}/config %{{buildroot}}/lib/modules/{release}/config
%files
/lib/modules/{release}/vmlinuz
/lib/modules/{release}/config
"""


@pytest.mark.slow
@pytest.mark.parametrize("payload", ["w9.gzdio", "w2.xzdio", "w3.zstdio"])
def test_extract_from_an_rpm(payload: str, kernel_deb: Callable[[str], Path],
                             tmp_path: Path) -> None:
    if shutil.which("rpmbuild") is None:
        pytest.fail("rpmbuild missing: ./do setup installs the rpm package")
    pkg = read_package(kernel_deb("amd64"))
    release, (_, image) = next(iter(pkg.images.items()))
    (tmp_path / "SOURCES").mkdir()
    (tmp_path / "SOURCES" / "vmlinuz").write_bytes(image)
    (tmp_path / "SOURCES" / "config").write_text(pkg.configs[release])
    spec = tmp_path / "kernel.spec"
    spec.write_text(SPEC.format(version=release.split("-")[0], release=release))
    subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {tmp_path}",
                    "--define", f"_binary_payload {payload}",
                    "--define", "__os_install_post %{nil}", "--define", "_build_id_links none",
                    str(spec)], capture_output=True, check=True)
    rpm = next((tmp_path / "RPMS").rglob("*.rpm"))
    vigil("btf", "extract", "--distro", "fedora/99", "--out", str(tmp_path / "out"), str(rpm))
    got = RawBtf.from_file(tmp_path / "out" / "fedora" / "99" / "x86_64" / f"{release}.btf")
    assert detect_arch(got) == "x86_64" and got.by_name("task_struct")


@pytest.fixture(scope="module")
def sources(kernel_deb: Callable[[str], Path],
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kernel BTFs of five architectures in BTFHub's layout, plus one kernel filed twice
    (the same BTF under a second release) to show de-duplication."""
    src = tmp_path_factory.mktemp("sources")
    for name in ("amd64", "arm64", "s390x", "ppc64el", "riscv64"):
        suite, _ = KERNELS[name]
        vigil("btf", "extract", "--distro", f"debian/{VERSION_IDS[suite]}", "--out", str(src),
              str(kernel_deb(name)))
    amd64 = _layout_path(src, "amd64", _release(kernel_deb("amd64")))
    shutil.copy(amd64, amd64.with_name("6.1.0-0-vigiltest-amd64.btf"))
    return src


@pytest.fixture(scope="module")
def twins() -> None:
    subprocess.run(["make", "-s", "-C", str(BPF_DIR), "le-twins"], check=True)


@pytest.mark.slow
def test_gen_tailors_dedups_indexes_and_archives(sources: Path, twins: None,
                                                 tmp_path: Path) -> None:
    p = vigil("btf", "gen", "--source", str(sources), "--out", str(tmp_path / "gen"))
    story = next(ln for ln in p.stdout.splitlines() if ln.startswith("size: "))
    assert "6 kernel BTFs" in story and "5 distinct" in story and "archive" in story
    archive = BtfArchive(tmp_path / "gen" / "btf-archive.tar.xz")
    keys = sorted(archive.index.kernels)
    assert len(keys) == 6 and len(set(archive.index.kernels.values())) == 5
    assert {k.split("/")[2] for k in keys} == {"x86_64", "aarch64", "s390x", "ppc64le",
                                               "riscv64"}
    for key, sha in archive.index.kernels.items():
        blob = RawBtf(archive.blob(sha), key)
        assert blob.big_endian == ("/s390x/" in key)
        assert len(blob.blob) < 16 << 10, f"{key}: tailored BTF of {len(blob.blob)} bytes"
    assert (tmp_path / "gen" / "btf-archive.tar.xz").stat().st_size < 16 << 10
    # deterministic: the same inputs give the same archive bytes
    vigil("btf", "gen", "--source", str(sources), "--out", str(tmp_path / "again"))
    assert (tmp_path / "gen" / "btf-archive.tar.xz").read_bytes() == \
        (tmp_path / "again" / "btf-archive.tar.xz").read_bytes()
    # every tailored BTF resolves every relocation of every object of its architecture
    p = vigil("btf", "check", "--btf", str(tmp_path / "gen"))
    assert "6 of 6 BTFs resolve every relocation" in p.stdout


@pytest.mark.slow
def test_check_matrix_on_full_debian_btfs(sources: Path) -> None:
    """The per-architecture table: each architecture's objects against its Debian kernel."""
    p = vigil("btf", "check", "--btf", str(sources))
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("debian/")]
    assert len(rows) == 6 and all("missing" not in r for r in rows), p.stdout


@pytest.mark.slow
def test_check_names_a_field_missing_from_a_tailored_btf(sources: Path, twins: None,
                                                         tmp_path: Path) -> None:
    vigil("btf", "gen", "--source", str(sources), "--out", str(tmp_path / "gen"))
    archive = BtfArchive(tmp_path / "gen" / "btf-archive.tar.xz")
    key = next(k for k in archive.index.kernels if "/s390x/" in k)
    tailored = RawBtf(archive.blob(archive.index.kernels[key]), key)
    broken = tmp_path / "broken.btf"
    broken.write_bytes(tailored.with_member_removed("dentry", "d_parent"))
    p = vigil("btf", "check", "--arch", "s390x", "--btf", str(broken), check=False)
    assert p.returncode == 1
    assert "missing: struct dentry has no field d_parent" in p.stdout
    # and the same verdict straight from the library, for the big-endian object
    res = check_object(BpfObject.from_file(str(bundled_object("vigil", "s390x"))),
                       RawBtf.from_file(broken))
    assert res.missing() == ["struct dentry has no field d_parent"]


@pytest.mark.slow
def test_btf_from_a_debug_package_for_a_kernel_without_btf(
        debug_deb: Callable[[str], Path], tmp_path: Path) -> None:
    """Debian's armhf kernel has no BTF; its -dbg package's DWARF does, through pahole. On
    that 32-bit kernel every pointer and long is 4 bytes: the armv7l objects resolve and read
    each such field at the kernel's width; without their size relocations they would not."""
    if shutil.which("pahole") is None:
        pytest.fail("pahole missing: ./do setup installs dwarves")
    deb = debug_deb("armhf")
    p = vigil("btf", "extract", "--out", str(tmp_path / "a"), str(deb), check=False)
    assert p.returncode == 2 and "--from-dwarf makes BTF" in p.stderr
    p = vigil("btf", "extract", "--from-dwarf", "--distro", "debian/12", "--out",
              str(tmp_path), str(deb))
    assert "DWARF -> BTF (pahole" in p.stdout
    out = next((tmp_path / "debian" / "12" / "armv7l").glob("*.btf"))
    btf = RawBtf.from_file(out)
    assert detect_arch(btf) == "armv7l" and btf.pointer_size == 4
    p = vigil("-v", "btf", "check", "--btf", str(out))
    assert "1 of 1 BTFs resolve" in p.stdout, p.stdout
    obj = BpfObject.from_file(str(bundled_object("vigil", "armv7l")))
    assert check_object(obj, btf).ok
    # the same reads with the object's width (BPF_CORE_READ's) would be wrong, and say so
    wrong = {width_problem(obj, r, btf, frozenset()) for r in obj.relos} - {None}
    assert "struct dentry.d_parent is 4 bytes in the kernel, 8 in the object, and read at " \
           "the object's width" in wrong
    assert len(wrong) > 20
