"""The host-side build of the test kernel module (tests/vm/kmod_build.py): choosing the
packages and make's arguments, without the network or a VM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))

import kmod  # tests/kernel/kmod.py
import kmod_build
from kmod_build import KmodError, choose_kbuild, make_args, parse_depends, upstream

LIBC = "2.36-9+deb12u14"  # Debian 12's


def kbuild(name: str, version: str, libc: str) -> dict[str, str]:
    return {"Package": name, "Version": version,
            "Depends": f"libc6 (>= {libc}), libelf1 (>= 0.144), pahole"}


def test_parse_depends_takes_first_alternative_and_constraint() -> None:
    field = ("linux-base (>= 4.12~), linux-headers-6.12.118+deb13-common (= 6.12.118-1), "
             "linux-image-6.12.118+deb13-amd64 (= 6.12.118-1) | linux-image-x-unsigned, "
             "linux-kbuild-6.12.118+deb13, gcc-14")
    assert parse_depends(field) == [
        ("linux-base", ">= 4.12~"), ("linux-headers-6.12.118+deb13-common", "= 6.12.118-1"),
        ("linux-image-6.12.118+deb13-amd64", "= 6.12.118-1"),
        ("linux-kbuild-6.12.118+deb13", ""), ("gcc-14", "")]


def test_upstream_version() -> None:
    assert upstream("6.12.118-1~deb12u1") == "6.12.118"
    assert upstream("5.10.262-1") == "5.10.262"


def test_own_kbuild_when_it_runs_here() -> None:
    own = kbuild("linux-kbuild-6.1", "6.1.192-3", "2.34")
    assert choose_kbuild(own, [own], LIBC) is own


def test_kbuild_of_same_upstream_built_for_older_libc() -> None:
    own = kbuild("linux-kbuild-6.12.118+deb13", "6.12.118-1", "2.38")
    older = kbuild("linux-kbuild-6.12.118+deb12", "6.12.118-1~deb12u1", "2.34")
    other = kbuild("linux-kbuild-6.12.117+deb12", "6.12.117-1~deb12u1", "2.34")
    assert choose_kbuild(own, [own, other, older], LIBC) is older


def test_no_kbuild_runs_here_says_why() -> None:
    own = kbuild("linux-kbuild-6.12.118+deb13", "6.12.118-1", "2.38")
    with pytest.raises(KmodError, match=r"needs libc6 >= 2\.38 \(the host has 2\.36"):
        choose_kbuild(own, [own], LIBC)


def test_make_args_fall_back_for_an_older_compiler(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".config").write_text("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=y\n")
    monkeypatch.setattr(kmod_build, "_accepts", lambda cc, flag: False)
    assert make_args(tmp_path, "gcc") == ["CC=gcc", "CONFIG_DEBUG_INFO_BTF_MODULES=",
                                          "CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT="]
    monkeypatch.setattr(kmod_build, "_accepts", lambda cc, flag: True)
    assert "CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=" not in make_args(tmp_path, "gcc-14")


def test_guest_helper_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kmod, "KMOD_DIR", tmp_path)
    assert kmod.escalate_module("6.1.0-57-amd64") is None
    ko = tmp_path / "6.1.0-57-amd64" / "vigil_escalate.ko"
    ko.parent.mkdir()
    ko.write_bytes(b"")
    assert kmod.escalate_module("6.1.0-57-amd64") == ko == kmod_build.module_path(
        "6.1.0-57-amd64", tmp_path)


def test_guest_looks_where_the_host_builds() -> None:
    assert kmod.KMOD_DIR == kmod_build.OUT
