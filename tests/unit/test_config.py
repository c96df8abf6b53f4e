"""Configuration loading: the embedded default, every validation error with its file:line."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from vigil.config import (
    EMBEDDED_NAME,
    ConfigError,
    DirectoryConfig,
    Pattern,
    check_config_main,
    load_config,
)
from vigil.config import load as config_mod


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "vigil.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.exit_code == 2
    msg = str(e.value)
    assert msg.startswith(f"{p}:"), msg
    return msg[len(str(p)) + 1:]


def test_embedded_default_keeps_existing_dirs_only() -> None:
    cfg = load_config(None)
    paths = [d.path for d in cfg.directories]
    assert b"/etc" in paths
    assert all(os.path.exists(p) for p in paths)
    # merged /usr: /bin -> usr/bin is watched once, as /usr/bin
    if os.path.islink("/bin") and os.path.realpath("/bin") == "/usr/bin":
        assert b"/bin" not in paths and b"/usr/bin" in paths
    etc = next(d for d in cfg.directories if d.path == b"/etc")
    assert etc.report_changes and etc.hashes == ("sha256",)
    assert any(p.matches(b"/etc/shadow") for p in etc.nodiff)
    assert any(p.matches(b"/etc/ssl/private/x.pem") for p in etc.nodiff)
    assert not any(p.matches(b"/etc/passwd") for p in etc.nodiff)
    assert cfg.ring_buffer_mb == 16 and cfg.scan.interval == 12 * 3600
    assert cfg.failed_errno_numbers == {1, 13, 30}
    assert cfg.source == EMBEDDED_NAME


def test_embedded_default_skips_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.stat

    def fake_stat(p: object, *a: object, **kw: object) -> os.stat_result:
        if str(p) == "/boot":
            raise FileNotFoundError(2, "No such file or directory")
        if str(p) == "/etc/ssh":
            raise PermissionError(13, "Permission denied")  # as for /root/.ssh when not root
        return real(p, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", fake_stat)
    assert b"/etc/ssh" not in [d.path for d in load_config(None).directories]
    assert b"/boot" not in [d.path for d in load_config(None).directories]


def test_full_file(tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    p = write(tmp_path, f"""
exec_events: false
failed_errnos: [EPERM, ENOENT]
ring_buffer_mb: 64
output: json
json_file: /var/log/vigil.json
database: /x/b.db
state_dir: /x
scan: {{interval: 30m, max_files: 10, hash_workers: 3, max_file_size: 100}}
diff: {{quota_mb: 2, max_file_size: 5}}
ignore: ["*.tmp"]
directories:
  - path: {d}
    recursive: false
    realtime: false
    check: [size, hashes]
    hashes: [sha1, md5]
    report_changes: true
    ignore: ["re:\\\\.log$"]
    restrict: ["*.conf"]
    nodiff: ["secret*"]
    follow_symlinks: true
    tags: [a, b]
""")
    cfg = load_config(p)
    assert not cfg.exec_events and cfg.failed_errnos == ("EPERM", "ENOENT")
    assert (cfg.ring_buffer_mb, cfg.output) == (64, "json")
    assert cfg.json_file == Path("/var/log/vigil.json") and cfg.database == Path("/x/b.db")
    assert (cfg.scan.interval, cfg.scan.max_files, cfg.scan.hash_workers) == (1800, 10, 3)
    assert (cfg.diff.quota_mb, cfg.diff.max_file_size) == (2, 5)
    (dc,) = cfg.directories
    assert dc.path == os.fsencode(d) and dc.max_depth == 0 and not dc.realtime
    assert dc.check == {"size", "hashes"} and dc.hashes == ("sha1", "md5")
    assert dc.ignore[0].matches(b"/a/x.log") and not dc.ignore[0].matches(b"/a/x.logs")
    assert dc.restrict[0].matches(b"/a/b.conf") and dc.nodiff[0].matches(b"/q/secret.txt")
    assert dc.follow_symlinks and dc.tags == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.output = "pretty"  # type: ignore[misc]


def test_user_file_without_directories_uses_default_set(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "output: pretty\n"))
    assert cfg.directories == load_config(None).directories


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("directories:\n  - path: /etc\n    recursiv: true\n", 3,
     "unknown key 'recursiv' in a directories entry (did you mean 'recursive'?)"),
    ("outptu: json\n", 1, "unknown key 'outptu' in the top level (did you mean 'output'?)"),
    ("directories:\n  - path: etc\n", 2, "'path' must be an absolute path"),
    ("directories:\n  - path: /nonexistent/vigil-x\n", 2,
     "watched path /nonexistent/vigil-x does not exist"),
    ("\n\nring_buffer_mb: 3\n", 3, "power of two"),
    ("ring_buffer_mb: 0\n", 1, "must be >= 1"),
    ("ring_buffer_mb: true\n", 1, "must be an integer"),
    ("output: xml\n", 1, "'output' must be one of auto, pretty, compact, json, ocsf"),
    ("failed_errnos: [EPERM,\n  EBOGUS]\n", 2, "unknown errno name 'EBOGUS'"),
    ("scan:\n  interval: 12 hours\n", 2, "'interval' must be seconds or like"),
    ("scan:\n  hash_wrokers: 2\n", 2, "did you mean 'hash_workers'"),
    ("directories:\n  - path: /etc\n    recursive: false\n    depth: 2\n", 4, "conflicts"),
    ("directories:\n  - path: /etc\n    hashes: [sha512]\n", 3,
     "choose from sha256, sha1, md5, blake3"),
    ("directories:\n  - path: /etc\n    check: [sise]\n", 3, "did you mean 'size'"),
    ("directories:\n  - path: /etc\n    realtime: 'yes'\n", 3, "'realtime' must be true or false"),
    ("directories:\n  - path: /etc\n    ignore: ['re:(']\n", 3, "bad regex"),
    ("directories:\n  - path: /etc\n  - path: /etc\n", 3, "listed twice"),
    ("output: json\noutput: pretty\n", 2, "duplicate key 'output'"),
    ("directories: [\n", 2, "YAML syntax error"),
    ("- a\n", 1, "the top level must be a mapping"),
    ("", 1, "the file is empty"),
])
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, needle: str) -> None:
    msg = error_of(tmp_path, text)
    assert msg.startswith(f"{line}: "), msg
    assert needle in msg, msg


def test_blake3_missing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = config_mod.importlib.util.find_spec
    monkeypatch.setattr(config_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "blake3" else real(name, *a))
    msg = error_of(tmp_path, "directories:\n  - path: /etc\n    hashes: [sha256, blake3]\n")
    assert msg.startswith("3: ") and "vigil[blake3]" in msg


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_with_watch_overrides(tmp_path: Path) -> None:
    cfg = load_config(None).with_watch_overrides([tmp_path])
    assert cfg.directories == (DirectoryConfig(path=os.fsencode(tmp_path)),)
    assert cfg.directories[0].realtime and cfg.directories[0].max_depth is None
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.with_watch_overrides([tmp_path / "nope"])


def test_check_config_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, f"directories:\n  - path: {tmp_path}\n  - path: /etc\n")
    assert check_config_main(good) == 0
    assert capsys.readouterr().out.strip() == "OK: 2 directories"
    bad = tmp_path / "bad.yaml"
    bad.write_text("directories:\n  - path: /etc\n    tagz: []\n")
    assert check_config_main(bad) == 2
    assert capsys.readouterr().err.strip().startswith(f"{bad}:3: unknown key 'tagz'")


def test_patterns_on_bytes() -> None:
    assert Pattern.parse("*.swp").matches(b"/x/y/\xff.swp")
    assert not Pattern.parse("*.swp").matches(b"/x.swp/y")
    assert Pattern.parse("/etc/*").matches(b"/etc/a/b")  # a glob with '/' matches the whole path
    assert not Pattern.parse("/etc/*").matches(b"/usr/etc/a")
    assert Pattern.parse("re:^/a/[0-9]+$").matches(b"/a/12")
    assert not Pattern.parse("re:^/a/[0-9]+$").matches(b"/a/12x")
