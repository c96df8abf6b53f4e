"""The kernel's watch list and its symlink aliases (vigil.watchlist), on a real scratch tree."""

from __future__ import annotations

from pathlib import Path

import yaml

from vigil.config import Config, load_config
from vigil.watchlist import Alias, AliasSet, leads_into, static_aliases


def config_for(tmp: Path, directories: list[dict[str, object]]) -> Config:
    cfg = tmp / "vigil.yaml"
    cfg.write_text(yaml.safe_dump({"directories": directories}))
    return load_config(cfg)


def test_leads_into_inside_at_and_above_a_root() -> None:
    roots = [b"/t/usr/bin"]
    assert leads_into(b"/t/usr/bin", roots)
    assert leads_into(b"/t/usr/bin/sub", roots)
    assert leads_into(b"/t/usr", roots)  # above: /t/usr/bin is reached through it
    assert leads_into(b"/", roots)
    assert not leads_into(b"/t/usr/bin2", roots)
    assert not leads_into(b"/t/usr/lib", roots)


def test_ancestor_links_into_a_root_are_aliases(tmp_path: Path) -> None:
    usr_bin = tmp_path / "usr" / "bin"
    usr_bin.mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    (tmp_path / "bin").symlink_to("usr/bin")  # merged /usr
    (tmp_path / "u").symlink_to(tmp_path / "usr")  # above the root
    (tmp_path / "l").symlink_to("lib")  # elsewhere: not an alias
    (tmp_path / "dangling").symlink_to("nowhere")
    (usr_bin / "inside").symlink_to(".")  # inside the tree: the kernel passes it on anyway
    config = config_for(tmp_path, [{"path": str(usr_bin)}])
    found = {a.link: a for a in static_aliases(config)}
    t = bytes(tmp_path)
    assert found[t + b"/bin"] == Alias(t + b"/bin", bytes(usr_bin), "ancestor")
    assert found[t + b"/u"].target == t + b"/usr"
    assert t + b"/l" not in found and t + b"/dangling" not in found
    assert bytes(usr_bin / "inside") not in found


def test_a_configured_symlink_is_an_alias(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    config = config_for(tmp_path, [{"path": str(tmp_path / "link")}])
    found = {a.link: a.found_by for a in static_aliases(config)}
    assert found[bytes(tmp_path / "link")] == "config"


def test_alias_set_is_bounded_and_skips_what_the_kernel_passes(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    config = config_for(tmp_path, [{"path": str(tmp_path / "w")}])
    w = bytes(tmp_path / "w")
    aliases = AliasSet(config, limit=2)
    assert not aliases.add(Alias(w + b"/x", w, "created"))  # inside the watched tree
    assert not aliases.add(Alias(b"/elsewhere/a", b"/usr/lib", "created"))  # not into it
    assert aliases.add(Alias(b"/o/a", w, "created"))
    assert not aliases.add(Alias(b"/o/a", w, "created"))  # already there
    assert aliases.add(Alias(b"/o/b", w + b"/sub", "baseline"))
    assert not aliases.add(Alias(b"/o/c", w, "created"))
    assert aliases.refused == 1 and len(aliases) == 2
