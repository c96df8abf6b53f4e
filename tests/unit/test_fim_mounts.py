"""vigil.fim.mounts as pure logic: parsing a mount table, and which mounts below watched
directories the walk leaves out (the real mounts are in tests/fim/test_mounts.py)."""

from __future__ import annotations

import os
from pathlib import Path

from vigil.config import Config, DirectoryConfig
from vigil.fim.mounts import Mount, pseudo_devices, read_mounts, skipped_mounts

TABLE = b"""\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 27 8:1 / /boot/efi rw,relatime shared:5 - vfat /dev/sda1 rw,fmask=0077
31 27 0:40 / /srv/my\\040share rw - nfs4 host:/x rw
32 30 0:41 / /boot/efi/x rw - efivarfs efivarfs rw
garbage line
"""


def test_read_mounts_unescapes_and_skips_what_it_cannot_parse(tmp_path: Path) -> None:
    p = tmp_path / "mountinfo"
    p.write_bytes(TABLE)
    got = read_mounts(p)
    assert [(m.point, m.fstype) for m in got] == [
        (b"/proc", "proc"), (b"/", "ext4"), (b"/boot/efi", "vfat"), (b"/srv/my share", "nfs4"),
        (b"/boot/efi/x", "efivarfs")]
    assert got[2].device == os.makedev(8, 1)  # optional fields ("shared:5") before the "-"
    assert pseudo_devices(got) == {os.makedev(0, 21), os.makedev(0, 41)}
    assert read_mounts(tmp_path / "missing") == []


def test_skipped_mounts_follow_each_directory_setting() -> None:
    table = [Mount(b"/boot/efi", "vfat", 1), Mount(b"/boot/efi/x", "efivarfs", 2),
             Mount(b"/srv/data", "ext4", 3), Mount(b"/srv/data/proc", "proc", 4),
             Mount(b"/elsewhere", "ext4", 5)]
    cfg = Config(directories=(DirectoryConfig(b"/boot"),
                              DirectoryConfig(b"/srv", mounts="skip")))
    got = [(m.point, why) for _, m, why in skipped_mounts(cfg, table)]
    # /boot includes its mounts (only the pseudo one below is left out); /srv skips its own, and
    # what is mounted inside a skipped mount is not listed again; /elsewhere is not watched
    assert got == [(b"/boot/efi/x", "pseudo filesystem (efivarfs)"),
                   (b"/srv/data", "ext4, mounts: skip")]
