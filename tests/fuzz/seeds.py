"""Builds the fuzz seed corpus from real inputs: `python -m tests.fuzz.seeds [--kernel-deb DEB]`.

Writes tests/fuzz/corpus/<target>/<name> (committed: a few hundred KB in all; rerun this only
to refresh them). Every seed is a real file or made by the real tool of its format:

- ring: records packed with the struct layouts of vigil/events/layout.py (the C mirror);
- elf, bpfobj: Vigil's compiled BPF objects (little- and big-endian);
- btf, btfcheck, archive: the tailored BTFs of the shipped archive, the archive itself;
- image: a BPF object (an ELF with .BTF) padded to a kernel's megabyte and compressed with
  gzip, xz, bzip2, lzma, zstd and lz4 (the kernel's legacy frame), raw BTF inside other bytes,
  and a bzImage whose setup header points at its payload (with --kernel-deb, the real setup
  code of that Debian kernel's vmlinuz, its payload replaced: for a local run only, the
  committed corpus is made without it and carries no kernel code);
- package, tar: .deb packages made by dpkg-deb (xz, gzip, zstd, none) holding such an image,
  its config and a module, a small real .deb from apt's cache; .rpm packages made by rpmbuild
  (gzip, xz, zstd payloads); the uncompressed data.tar;
- cpio: an rpm's payload, by rpm2cpio;
- config: vigil/data/default.yaml and a file setting every key.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import lzma
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fuzz.targets import CORPUS, OBJECTS, ROOT
from vigil.events import layout
from vigil.kernel.btf_archive import SHIPPED, ArchiveIndex, BtfArchive, write_archive

RELEASE = "6.1.0-fuzz-amd64"
# The targets whose seeds this script makes (the rules target's are its owner's: SigmaHQ rules).
SEEDED = ("ring", "elf", "btf", "btfcheck", "bpfobj", "image", "package", "tar", "cpio",
          "config", "archive", "uprobe")
MiB = 1 << 20


def _objects(arch: str = "x86_64") -> Path:
    return OBJECTS.parent / arch


def _tailored() -> dict[str, bytes]:
    """One tailored BTF per architecture, from the shipped archive."""
    a = BtfArchive(SHIPPED)
    out: dict[str, bytes] = {}
    for key, sha in sorted(a.index.kernels.items()):
        out.setdefault(key.split("/")[2], a.blob(sha))
    return out


def _records() -> dict[str, bytes]:
    proc = layout.PROC.pack(123 * 10**7, 7 * 10**7, 99, 42, 43, 1, 1000, 1000, 0, 0, 1000, 3,
                            4026, b"touch")

    def file(op: int, path: bytes, path2: bytes = b"", flags: int = 0) -> bytes:
        tail = layout.FILE_TAIL.pack(op, 0, 0o644, 0xFFFFFFFF, 0xFFFFFFFF, 0o1101, 77, 5, 8,
                                     len(path), len(path2))
        body = proc + tail + path + path2
        return layout.HDR.pack(layout.Kind.FILE, flags, 16 + len(body), 5) + body

    exe, args, cwd = b"/usr/bin/touch", b"touch\0/etc/x\0", b"/root"
    body = proc + layout.EXEC_TAIL.pack(len(exe), len(args), len(cwd), 0x800001, 1234,
                                            1_700_000_000 * 10**9) + exe + args + cwd
    exec_ = layout.HDR.pack(layout.Kind.EXEC, 0, 16 + len(body), 1) + body
    body = proc + layout.EXIT_TAIL.pack(0, 0)
    exit_ = layout.HDR.pack(layout.Kind.EXIT, 0, 16 + len(body), 2) + body

    def net(op: int, family: int, local: bytes, remote: bytes, path: bytes = b"") -> bytes:
        tail = layout.NET_TAIL.pack(op, 0, family, 6 if family != 1 else 0, 40000, 443,
                                    local.ljust(16, b"\0"), remote.ljust(16, b"\0"),
                                    0xFFFF888000001000, len(path), 0)
        body = proc + tail + path
        return layout.HDR.pack(layout.Kind.NET, 0, 16 + len(body), 3) + body

    def cred(op: int, path: bytes = b"") -> bytes:
        old = (1000,) * 8 + (0, 0, 0, 4026531837)
        new = (1000, 1000, 0, 1000, 0, 1000, 0, 1000, (1 << 41) - 1, (1 << 41) - 1, 0,
               4026531837)
        body = proc + layout.CRED_HEAD.pack(op, len(path)) + layout.CREDS.pack(*old) \
            + layout.CREDS.pack(*new) + path
        return layout.HDR.pack(layout.Kind.CRED, 0, 16 + len(body), 6) + body

    def sec(op: int, name: bytes, path: bytes = b"", path2: bytes = b"") -> bytes:
        tail = layout.SEC_TAIL.pack(op, -1, 4242, 16, 1, 2, 55 * 10**7, b"sleep", name,
                                    len(path), len(path2), 0)
        body = proc + tail + path + path2
        return layout.HDR.pack(layout.Kind.SEC, 0, 16 + len(body), 7) + body

    def shell(cmd: bytes, tty: bytes = b"pts0", flags: int = 0) -> bytes:
        body = proc + layout.SHELL_TAIL.pack(136, 0, 42, len(cmd), tty) + cmd
        return layout.HDR.pack(layout.Kind.SHELL, flags, 16 + len(body), 8) + body

    def framed(*recs: bytes) -> bytes:
        return b"".join(struct.pack("<H", len(r)) + r for r in recs)

    return {
        "file-events": framed(file(1, b"/etc/passwd"), file(4, b"/etc/a", b"/etc/b"),
                              file(layout.OP_OPEN_WRITE, b"/etc/n", flags=32)),
        "exec-exit": framed(exec_, exit_),
        "mixed": framed(exec_, file(2, b"/usr/bin/\xffname"), exit_, file(8, b"/etc/d")),
        "network": framed(net(1, 2, b"\x7f\0\0\1", b"\xc6\x33\x64\2"),
                          net(2, 10, b"\0" * 15 + b"\1", b"\0" * 10 + b"\xff\xff\x7f\0\0\1"),
                          net(7, 1, b"", b"", b"/run/docker.sock")),
        "privilege": framed(cred(10, b"/usr/bin/su"), cred(3), cred(11),
                            sec(4, b""), sec(6, b"tmpfs", b"/mnt", b"none"),
                            sec(8, b"", b"/new", b"/new/old"), sec(2, b"prog"), sec(9, b"")),
        "shell": framed(shell(b"echo binary >> /dev/null"), shell(b"\xff\xfe", b""),
                        shell(b"x" * 64, flags=4)),
    }


def _kernel_payload(arch: str = "x86_64") -> bytes:
    """An ELF with .BTF, padded to a kernel's size, with a kernel's banner."""
    elf = (_objects(arch) / "probes.bpf.o").read_bytes()
    banner = f"Linux version {RELEASE} (debian-kernel@lists.debian.org) #1 SMP\n".encode()
    return elf + banner + b"\0" * (MiB + 4096 - len(elf) - len(banner))


def _compressed(payload: bytes) -> dict[str, bytes]:
    out = {"gzip": gzip.compress(payload, 9, mtime=0), "xz": lzma.compress(payload),
           "bzip2": bz2.compress(payload),
           "lzma": lzma.compress(payload, format=lzma.FORMAT_ALONE)}
    for name, argv in (("zstd", ["zstd", "-19", "-cq"]), ("lz4", ["lz4", "-l", "-9", "-cq"])):
        out[name] = subprocess.run(argv, input=payload, capture_output=True,
                                   check=True).stdout
    return out


def _bzimage(payload: bytes, setup: bytes | None) -> bytes:
    """An x86 boot image: setup sectors whose header (boot protocol 2.08+) says where the
    compressed payload is; ``setup`` is a real kernel's setup code when given."""
    if setup is None:
        made = bytearray(2 * 512)
        made[0x1F1] = 1  # setup_sects
        made[0x202:0x206] = b"HdrS"
        struct.pack_into("<H", made, 0x206, 0x20F)
        version = f"{RELEASE} (debian-kernel@lists.debian.org) #1 SMP\0".encode()
        made[0x300: 0x300 + len(version)] = version
        struct.pack_into("<H", made, 0x20E, 0x300 - 0x200)
        setup = bytes(made)
    buf = bytearray(setup)
    start = (buf[0x1F1] + 1) * 512
    del buf[start:]
    struct.pack_into("<II", buf, 0x248, 0, len(payload))
    return bytes(buf) + payload + struct.pack("<I", 0)


def _setup_of(deb: Path) -> bytes:
    from vigil.btfhub.packages import read_package

    _, data = next(iter(read_package(deb).images.values()))
    return data[: (data[0x1F1] + 1) * 512]


def _deb(tmp: Path, image: bytes, comp: str) -> bytes:
    root = tmp / f"deb-{comp}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: linux-image-{RELEASE}\nVersion: 6.1.0-1\nArchitecture: amd64\n"
        f"Maintainer: Vigil <vigil@example.org>\nDescription: fuzz seed\n")
    (root / "boot").mkdir()
    (root / "boot" / f"vmlinuz-{RELEASE}").write_bytes(image)
    (root / "boot" / f"config-{RELEASE}").write_text("CONFIG_DEBUG_INFO_BTF=y\nCONFIG_BPF=y\n")
    mod = root / "lib" / "modules" / RELEASE / "kernel"
    mod.mkdir(parents=True)
    (mod / "fuzz.ko").write_bytes(b"\x7fELF module")
    out = tmp / f"{comp}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{comp}", "--build", str(root),
                    str(out)], check=True, capture_output=True)
    return out.read_bytes()


def _ar_member(deb: bytes, prefix: str) -> bytes:
    pos = 8
    while pos + 60 <= len(deb):
        name, size = deb[pos: pos + 16].strip().decode(), int(deb[pos + 48: pos + 58])
        if name.startswith(prefix):
            return deb[pos + 60: pos + 60 + size]
        pos += 60 + size + (size & 1)
    raise LookupError(prefix)


def _rpm(tmp: Path, image: bytes, payload: str) -> bytes:
    top = tmp / f"rpm-{payload}"
    for d in ("SPECS", "SOURCES", "BUILD", "RPMS", "SRPMS", "BUILDROOT"):
        (top / d).mkdir(parents=True)
    (top / "SOURCES" / "vmlinuz").write_bytes(image)
    (top / "SOURCES" / "config").write_text("CONFIG_DEBUG_INFO_BTF=y\n")
    spec = top / "SPECS" / "k.spec"
    spec.write_text(f"""Name: kernel-core
Version: 6.1.0
Release: fuzz
Summary: fuzz seed
License: GPL-2.0
BuildArch: x86_64
%description
fuzz seed
%install
mkdir -p %{{buildroot}}/lib/modules/{RELEASE}
cp %{{_sourcedir}}/vmlinuz %{{_sourcedir}}/config %{{buildroot}}/lib/modules/{RELEASE}/
%files
/lib/modules/{RELEASE}
""")
    subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", "--define",
                    f"_binary_payload {payload}", "--define", "__os_install_post %{nil}",
                    "--define", "_build_id_links none", str(spec)],
                   check=True, capture_output=True)
    return next((top / "RPMS").rglob("*.rpm")).read_bytes()


_READLINE_LOOP = r"""
#include <stdio.h>
#include <stdlib.h>
%s
int main(void) { char *l; while ((l = readline("")) != NULL) free(l); return 0; }
"""
_OWN_READLINE = r"""__attribute__((noinline)) char *readline(const char *p) {
    char *l = NULL; size_t n = 0; (void)p;
    if (getline(&l, &n, stdin) < 0) { free(l); return NULL; } return l; }"""


def _readline_binaries() -> dict[str, bytes]:
    """Small binaries with readline each way vigil.kernel.uprobes looks for it: exported in
    .dynsym, only in .gnu_debugdata (MiniDebugInfo), imported from libreadline."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="vigil-seeds-") as t:
        d = Path(t)

        def cc(name: str, src: str, *flags: str) -> Path:
            (d / f"{name}.c").write_text(src)
            subprocess.run(["cc", "-Os", "-o", str(d / name), str(d / f"{name}.c"), *flags],
                           check=True)
            return d / name

        exported = cc("dynsym", _READLINE_LOOP % _OWN_READLINE, "-rdynamic")
        subprocess.run(["strip", "-s", str(exported)], check=True)
        out["dynsym"] = exported.read_bytes()
        mini = cc("debugdata", _READLINE_LOOP % _OWN_READLINE)
        subprocess.run(["objcopy", "--only-keep-debug", str(mini), str(d / "mini")], check=True)
        subprocess.run(["objcopy", "-S", "--keep-symbol=readline", str(d / "mini")], check=True)
        subprocess.run(["strip", "-s", str(mini)], check=True)
        subprocess.run(["xz", "-f", str(d / "mini")], check=True)
        subprocess.run(["objcopy", "--add-section", f".gnu_debugdata={d / 'mini.xz'}",
                        str(mini)], check=True)
        out["gnu-debugdata"] = mini.read_bytes()
        lib = cc("libreadline", _READLINE_LOOP % "#include <readline/readline.h>",
                 "-lreadline")
        subprocess.run(["strip", "-s", str(lib)], check=True)
        out["libreadline"] = lib.read_bytes()
    return out


def _full_config() -> bytes:
    return b"""# every key (README's configuration table)
directories:
  - path: /etc
    recursive: true
    depth: 3
    realtime: true
    check: [size, mode, owner, group, mtime, inode, hashes]
    hashes: [sha256, sha1]
    report_changes: true
    ignore: ["*.swp", "re:^/etc/.*~$"]
    restrict: ["/etc/ssh/*"]
    nodiff: ["shadow*"]
    follow_symlinks: false
    tags: [system]
exec_events: false
failed_errnos: [EPERM, EACCES]
ring_buffer_mb: 32
output: json
json_file: /var/log/vigil.json
database: /var/lib/vigil/baseline.db
state_dir: /var/lib/vigil
scan: {interval: 12h, max_files: 100000, hash_workers: 2, max_file_size: 1048576}
diff: {quota_mb: 64, max_file_size: 1048576}
ignore: ["/etc/mtab"]
network:
  enabled: true
  kinds: [connect, accept, listen, bind, udp, unix]
  exclude_cidrs: [10.0.0.0/8, "fd00::/8"]
  exclude_ports: [53, 123]
  rate_limit: 1000
  rate_burst: 2000
  udp_flow_ttl: 2m
  udp_flows: 4096
  unix_paths: [/run/docker.sock]
shell: {enabled: false}
"""


def build(kernel_deb: Path | None) -> dict[str, dict[str, bytes]]:
    seeds: dict[str, dict[str, bytes]] = {name: {} for name in SEEDED}
    seeds["ring"] = _records()
    for arch in ("x86_64", "s390x"):
        for obj in ("probes", "testprog"):
            data = (_objects(arch) / f"{obj}.bpf.o").read_bytes()
            seeds["elf"][f"{obj}-{arch}.o"] = data
            seeds["bpfobj"][f"{obj}-{arch}.o"] = data
    tailored = _tailored()
    for arch in ("x86_64", "s390x", "armv7l", "aarch64"):
        seeds["btf"][f"tailored-{arch}.btf"] = tailored[arch]
    seeds["btfcheck"]["tailored-x86_64.btf"] = tailored["x86_64"]
    seeds["btfcheck"]["tailored-aarch64.btf"] = tailored["aarch64"]
    seeds["archive"]["shipped.tar.xz"] = SHIPPED.read_bytes()

    payload = _kernel_payload()
    compressed = _compressed(payload)
    for name, data in compressed.items():
        seeds["image"][f"vmlinuz.{name}"] = data
    seeds["image"]["vmlinux.elf"] = (_objects() / "probes.bpf.o").read_bytes()
    seeds["image"]["raw-Image"] = b"\x4d\x5a" + b"\0" * 62 + tailored["aarch64"] + b"\0" * 64
    setup = _setup_of(kernel_deb) if kernel_deb else None
    bzimage = _bzimage(compressed["xz"], setup)
    seeds["image"]["bzImage"] = bzimage

    with tempfile.TemporaryDirectory(prefix="vigil-seeds-") as t:
        tmp = Path(t)
        with tempfile.TemporaryDirectory(dir=tmp) as scratch:
            archive = Path(scratch) / "one.tar.xz"
            write_archive(archive, ArchiveIndex(kernels={f"debian/12/x86_64/{RELEASE}":
                                                         "0" * 64}),
                          {"0" * 64: tailored["x86_64"]})
            seeds["archive"]["one.tar.xz"] = archive.read_bytes()
        small_image = _bzimage(_compressed(payload)["gzip"], None)
        for comp in ("xz", "gzip", "zstd", "none"):
            deb = _deb(tmp, small_image if comp != "none" else bzimage, comp)
            seeds["package"][f"kernel-{comp}.deb"] = deb
        seeds["tar"]["data.tar"] = _ar_member(seeds["package"]["kernel-none.deb"], "data.tar")
        apt = sorted(Path("/var/cache/apt/archives").glob("*.deb"), key=lambda p: p.stat().st_size)
        if apt:
            seeds["package"]["apt-" + apt[0].name] = apt[0].read_bytes()
        for payload_spec in ("w9.gzdio", "w6.xzdio", "w19.zstdio"):
            rpm = _rpm(tmp, small_image, payload_spec)
            seeds["package"][f"kernel-{payload_spec}.rpm"] = rpm
        rpm_path = tmp / "k.rpm"
        rpm_path.write_bytes(seeds["package"]["kernel-w9.gzdio.rpm"])
        seeds["cpio"]["payload.cpio"] = subprocess.run(
            ["rpm2cpio", str(rpm_path)], check=True, capture_output=True).stdout
    seeds["config"]["default.yaml"] = (ROOT / "vigil" / "data" / "default.yaml").read_bytes()
    seeds["config"]["every-key.yaml"] = _full_config()
    seeds["uprobe"] = _readline_binaries()
    return seeds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel-deb", type=Path, help="a Debian linux-image .deb: its bzImage's "
                   "real setup code heads the bzImage seed")
    args = p.parse_args()
    for tool in ("dpkg-deb", "rpmbuild", "rpm2cpio", "zstd", "lz4", "cc", "objcopy", "xz"):
        if shutil.which(tool) is None:
            print(f"seeds: {tool} is needed (./do installs it)", file=sys.stderr)
            return 2
    total = 0
    for target, files in build(args.kernel_deb).items():
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
        for name, data in files.items():
            (d / name).write_bytes(data)
            total += len(data)
        print(f"{target}: {len(files)} seeds, {sum(map(len, files.values())) / 1024:.1f} KiB")
    print(f"corpus: {total / 1024:.1f} KiB in {CORPUS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
