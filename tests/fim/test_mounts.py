"""Filesystems mounted below a watched directory (issue 11, item 7a): `mounts: include` (the
default) baselines them, like /boot/efi below /boot; `mounts: skip` stays on the directory's own
filesystem; pseudo filesystems are never walked; `vigil doctor` lists what is left out. Real
mounts (a tmpfs standing for the EFI partition, a procfs), the real baseline. Needs root."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fimutil import ROOT, make_config, scan, stored

from vigil.config import ConfigError, load_config
from vigil.fim.mounts import pseudo_devices, read_mounts, skipped_mounts

b = os.fsencode
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root "
                                "(tests/fim run as root in CI)")


@pytest.fixture
def boot(tree: Path) -> Iterator[Path]:
    """tree/boot with a separate filesystem on boot/efi (shim, grub) and a procfs on proc."""
    root = tree / "boot"
    efi, proc = root / "efi", root / "proc"
    for d in (efi, proc):
        d.mkdir(parents=True)
    (root / "vmlinuz").write_bytes(b"kernel")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "vigil-efi", str(efi)], check=True)
    try:
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
        try:
            (efi / "EFI" / "debian").mkdir(parents=True)
            (efi / "EFI" / "debian" / "grubx64.efi").write_bytes(b"grub, signed")
            yield root
        finally:
            subprocess.run(["umount", str(proc)], check=True)
    finally:
        subprocess.run(["umount", str(efi)], check=True)


def test_include_baselines_mounted_filesystems_but_never_pseudo_ones(tmp_path: Path,
                                                                     boot: Path) -> None:
    grub = boot / "efi" / "EFI" / "debian" / "grubx64.efi"
    cfg = make_config(tmp_path, boot)  # mounts: include is the default
    scan(cfg)
    rows = stored(cfg)
    assert b(grub) in rows and rows[b(grub)]["device"] != rows[b(boot)]["device"]
    assert b(boot / "proc") in rows  # the mount point itself, never what is inside
    assert not [p for p in rows if p.startswith(b(boot / "proc") + b"/")]
    grub.write_bytes(b"grub, backdoored")  # changed while Vigil was stopped
    (change,) = [e for e in scan(cfg) if e.path == b(grub)]
    assert change.action == "modified" and "sha256" in change.changed_attributes
    assert os.stat(boot / "proc").st_dev in pseudo_devices()
    (skip,) = skipped_mounts(cfg)
    assert skip[1].point == b(boot / "proc") and "pseudo" in skip[2]


def test_skip_stays_on_the_directory_filesystem(tmp_path: Path, boot: Path) -> None:
    cfg = make_config(tmp_path, boot, mounts="skip")
    scan(cfg)
    rows = stored(cfg)
    assert b(boot / "efi") in rows and b(boot / "vmlinuz") in rows
    assert not [p for p in rows if p.startswith(b(boot / "efi") + b"/")]
    assert [(m.point, why) for _, m, why in skipped_mounts(cfg)] == [
        (b(boot / "efi"), "tmpfs, mounts: skip"), (b(boot / "proc"), "pseudo filesystem (proc)")]
    # vigil doctor lists them
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "vigil"), "doctor", "--config", cfg.source],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    lines = r.stdout.splitlines()
    assert f"  skipped {boot / 'efi'} under {boot}: tmpfs, mounts: skip" in lines, r.stdout
    assert f"  skipped {boot / 'proc'} under {boot}: pseudo filesystem (proc)" in lines


def test_mounts_key_is_validated(tmp_path: Path, tree: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"directories": [{"path": str(tree), "mounts": "sometimes"}]},
                                sort_keys=False))
    with pytest.raises(ConfigError, match=rf"^{p}:3: 'mounts' must be one of include, skip"):
        load_config(p)
    embedded = load_config(None)
    assert all(d.mounts == "include" for d in embedded.directories)


def test_mountinfo_names_with_spaces() -> None:
    """mountinfo escapes a space in a mount point as \\040: the table must give the real name."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="vigil mnt ", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "x", str(d)], check=True)
    try:
        assert any(m.point == b(d) and m.fstype == "tmpfs" for m in read_mounts())
    finally:
        subprocess.run(["umount", str(d)], check=True)
        d.rmdir()
