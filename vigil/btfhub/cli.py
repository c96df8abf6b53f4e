"""The `vigil btf` command group: arguments only; the work is in the modules named below.

    vigil btf fetch    Debian kernel packages through a private apt (vigil.btfhub.debian)
    vigil btf extract  kernel BTF out of packages and images        (vigil.btfhub.extract)
    vigil btf gen      tailored BTF, de-duplicated, indexed, archived (vigil.btfhub.gen)
    vigil btf check    offline CO-RE compatibility matrix           (vigil.btfhub.check)
    vigil btf which    the BTF `vigil run` would use here            (vigil.kernel.btf_source)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def _fetch(args: argparse.Namespace) -> int:
    from vigil.btfhub.debian import FLAVOURS, fetch

    arches = list(FLAVOURS) if args.arch == ["all"] else args.arch
    got = fetch(args.suite, arches, args.cache, every=args.every, refresh=args.refresh,
                dbg=args.dbg)
    return 0 if got else 1


def _extract(args: argparse.Namespace) -> int:
    from vigil.btfhub.extract import extract

    done = extract(args.inputs, args.out, args.distro, skip_missing=args.skip_missing,
                   from_dwarf=args.from_dwarf)
    return 0 if done else 1


def _gen(args: argparse.Namespace) -> int:
    from vigil.btfhub.gen import DEFAULT_TWINS, gen
    from vigil.kernel.loader import OBJECTS_DIR

    gen(args.source, args.out, objects_dir=args.objects or OBJECTS_DIR,
        twins_dir=args.twins or DEFAULT_TWINS, archive=args.archive)
    return 0


def _check(args: argparse.Namespace) -> int:
    from vigil.btfhub.check import main

    return main(args.btf, args.arch, bool(getattr(args, "verbose", 0)))


def _which(args: argparse.Namespace) -> int:
    from vigil.kernel.btf_source import resolve_btf

    src = resolve_btf(args.btf)
    print(f"{src.kind}\t{src.path}\t{src.origin}")
    if not src.kernel_btf_hooks:
        print("note: not the kernel's own BTF: fentry, LSM and tp_btf hooks are unavailable",
              file=sys.stderr)
    return 0


def configure_parser(btf: argparse.ArgumentParser, verbose: argparse.ArgumentParser) -> None:
    sub = btf.add_subparsers(dest="btf_command", required=True)

    p = sub.add_parser("fetch", parents=[verbose],
                       help="download Debian kernel packages (private apt configuration)")
    p.add_argument("--suite", type=_csv, default=["bookworm"], metavar="S[,S...]",
                   help="bullseye, bookworm, trixie (default: bookworm)")
    p.add_argument("--arch", type=_csv, default=["amd64"], metavar="A[,A...]",
                   help="Debian architectures, or 'all' (default: amd64)")
    p.add_argument("--cache", type=Path, default=Path("/var/cache/vigil-kernels/btf"),
                   metavar="DIR", help="apt state and downloads (default: %(default)s)")
    p.add_argument("--every", action="store_true",
                   help="every kernel version in the suite, not only the newest")
    p.add_argument("--refresh", action="store_true", help="update the package lists now")
    p.add_argument("--dbg", action="store_true",
                   help="each image's debug package (-dbg, DWARF) instead, into DIR/dbg/: "
                   "for kernels built without BTF (extract --from-dwarf)")
    p.set_defaults(func=_fetch)

    p = sub.add_parser("extract", parents=[verbose],
                       help="kernel BTF out of .deb/.rpm packages or kernel images")
    p.add_argument("inputs", type=Path, nargs="+", metavar="PACKAGE_OR_IMAGE")
    p.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                   help="where <release>.btf goes (default: .)")
    p.add_argument("--distro", metavar="ID/VERSION_ID",
                   help="write DIR/ID/VERSION_ID/<arch>/<release>.btf (BTFHub layout)")
    p.add_argument("--skip-missing", action="store_true",
                   help="report and skip inputs without BTF instead of stopping")
    p.add_argument("--from-dwarf", action="store_true",
                   help="make BTF with pahole from a debug vmlinux's DWARF (e.g. Debian's "
                   "linux-image-*-dbg) when there is no BTF")
    p.set_defaults(func=_extract)

    p = sub.add_parser("gen", parents=[verbose],
                       help="tailored BTF for every source BTF; index and archive")
    p.add_argument("--source", type=Path, required=True, metavar="DIR",
                   help="kernel BTFs as DIR/<distro>/<version>/<arch>/<release>.btf")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="index.json, btf/<sha256>.btf and the archive")
    p.add_argument("--archive", type=Path, metavar="FILE",
                   help="write the archive here (default: DIR/btf-archive.tar.xz); the "
                   "shipped one is vigil/data/btf-archive.tar.xz")
    p.add_argument("--objects", type=Path, metavar="DIR",
                   help="BPF objects as DIR/<arch>/*.bpf.o (default: the package's)")
    p.add_argument("--twins", type=Path, metavar="DIR",
                   help="little-endian twins of big-endian objects (default: "
                   "build/bpf-le-twins, made by `make -C bpf le-twins`)")
    p.set_defaults(func=_gen)

    p = sub.add_parser("check", parents=[verbose],
                       help="offline: does every CO-RE relocation resolve against each BTF?")
    p.add_argument("--btf", type=Path, action="append", required=True, metavar="FILE|DIR",
                   help="a BTF or vmlinux file, a directory of *.btf, a `btf gen` output "
                   "directory or an archive (repeatable)")
    p.add_argument("--arch", metavar="ARCH",
                   help="the BTFs' architecture (default: from the layout or the BTF)")
    p.set_defaults(func=_check)

    p = sub.add_parser("which", parents=[verbose],
                       help="the BTF `vigil run` would use on this machine, and why")
    p.add_argument("--btf", metavar="FILE", help="as `vigil run --btf`")
    p.set_defaults(func=_which)
