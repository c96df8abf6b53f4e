"""The shipped systemd unit and ``vigil service install|uninstall|status``: the unit written by
install is checked by the real ``systemd-analyze verify`` (no problem reported) and scored by
``systemd-analyze security --offline=yes``; install, uninstall and status work on a unit
directory of the test's own (PID 1 is not systemd here, so nothing is started)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from vigil import service
from vigil.service import (
    HEADER,
    ServiceError,
    add_service_parser,
    render_unit,
    shipped_unit,
    writable_paths,
)

ROOT = Path(__file__).resolve().parents[2]
VIGIL = ROOT / ".venv" / "bin" / "vigil"
# Exposure systemd-analyze gives the installed unit (0 safest .. 10): 4.0 when written. Root
# with CAP_SYS_ADMIN, CAP_BPF and the host's network is what a BPF agent needs; a higher
# score means a hardening option was lost.
MAX_EXPOSURE = 4.5


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze missing: apt-get install systemd (./do setup installs it)"
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False)


def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``vigil service ARGV`` through the parser the CLI mounts, in this process."""
    p = argparse.ArgumentParser(prog="vigil")
    add_service_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["service", *argv])
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(autouse=True)
def no_etc_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This machine's /etc/vigil/config.yaml (if any) must not change what the tests see."""
    monkeypatch.setattr(service, "DEFAULT_CONFIG", tmp_path / "no-etc-config.yaml")


def config_file(tmp_path: Path, **extra: object) -> Path:
    state = tmp_path / "state dir"  # a space: quoting in ReadWritePaths=
    watched = tmp_path / "w"
    watched.mkdir(exist_ok=True)
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(state),
                                    "database": str(state / "db" / "baseline.db"),
                                    "directories": [{"path": str(watched)}], **extra}))
    return path


def test_installed_unit_passes_systemd_analyze_verify(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    units = tmp_path / "units"
    units.mkdir()
    cfg = config_file(tmp_path, json_file=str(tmp_path / "log" / "events.json"))
    rc, out, err = run("install", "--config", str(cfg), "--unit-dir", str(units), capsys=capsys)
    assert rc == 0, err
    unit = units / "vigil.service"
    text = unit.read_text()
    assert f"ExecStart={VIGIL} run --config {cfg}\n" in text
    assert f'ReadWritePaths={tmp_path}/log "{tmp_path}/state dir"\n' in text
    assert "StandardOutput=null" in text  # events go to json_file, not to the journal
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    for d in (tmp_path / "state dir", tmp_path / "log"):  # ProtectSystem=strict: made now
        assert d.is_dir() and stat.S_IMODE(d.stat().st_mode) == 0o700
    assert "systemctl not run" in out
    r = systemd_analyze("verify", str(unit))
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        f"systemd-analyze verify:\n{r.stdout}{r.stderr}"


def test_verify_sees_the_quoted_executable(tmp_path: Path) -> None:
    """An executable path with a space, '%' and '$' is written so that systemd finds it (verify
    checks that ExecStart='s program exists), and a bad one is reported: verify can fail."""
    odd = tmp_path / "bin dir%1$x"
    odd.mkdir()
    (odd / "vigil").symlink_to(VIGIL)
    unit = tmp_path / "vigil.service"
    unit.write_text(render_unit([str(odd / "vigil")], None))
    r = systemd_analyze("verify", str(unit))
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    unit.write_text(render_unit([str(tmp_path / "missing" / "vigil")], None))
    r = systemd_analyze("verify", str(unit))
    assert r.returncode != 0 and "missing/vigil" in r.stdout + r.stderr


def test_exposure_score(tmp_path: Path) -> None:
    unit = tmp_path / "vigil.service"
    unit.write_text(render_unit([str(VIGIL)], None))
    r = systemd_analyze("security", "--offline=yes", "--no-pager", str(unit))
    assert r.returncode == 0, r.stderr
    m = re.search(r"Overall exposure level for vigil\.service: ([\d.]+)", r.stdout)
    assert m, r.stdout
    print(f"systemd-analyze security: exposure {m[1]}")  # -s shows it; the README quotes it
    assert float(m[1]) <= MAX_EXPOSURE, r.stdout
    for ok in ("NoNewPrivileges=", "MemoryDenyWriteExecute=", "ProtectKernelTunables=",
               "RestrictNamespaces=~user", "CapabilityBoundingSet=~CAP_SYS_MODULE",
               "CapabilityBoundingSet=~CAP_NET_ADMIN"):
        assert any(ln.startswith(f"✓ {ok}") for ln in r.stdout.splitlines()), ok


def test_shipped_unit_settings() -> None:
    text = shipped_unit()
    settings = dict(ln.split("=", 1) for ln in text.splitlines()
                    if ln and not ln.startswith(("#", "[")))
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["StateDirectory"] == "vigil" and settings["ProtectSystem"] == "strict"
    assert settings["LimitMEMLOCK"] == "infinity"
    assert set(settings["CapabilityBoundingSet"].split()) == {
        "CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}
    # A file monitor must see the host's /tmp, /var/tmp and /dev/shm, and /usr/lib/modules
    for hiding in ("PrivateTmp", "PrivateDevices", "ProtectKernelModules", "InaccessiblePaths"):
        assert hiding not in settings


def test_default_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No --config and no /etc/vigil/config.yaml: the embedded default, which writes only
    below /var/lib/vigil, and events to the journal."""
    rc, out, err = run("install", "--unit-dir", str(tmp_path), capsys=capsys)
    assert rc == 0, err
    text = (tmp_path / "vigil.service").read_text()
    assert re.search(r"^ExecStart=\S+/vigil run$", text, re.M), text
    assert not re.search(r"^(ReadWritePaths|StandardOutput)=", text, re.M), text
    assert text.startswith(HEADER)
    assert "embedded default configuration" in out


def test_render_escapes_and_refuses_control_characters() -> None:
    text = render_unit(["/opt/v 1/vigil"], Path("/etc/vigil/100%.yaml"))
    assert 'ExecStart="/opt/v 1/vigil" run --config /etc/vigil/100%%.yaml\n' in text
    with pytest.raises(ServiceError, match="control character"):
        render_unit(["/opt/vigil"], Path("/etc/vigil/a\nb.yaml"))


def test_writable_paths_of_a_configuration(tmp_path: Path) -> None:
    from vigil.config import load_config

    cfg = config_file(tmp_path, json_file="/var/lib/vigil/events.json",
                      outputs={"file": [{"path": str(tmp_path / "out" / "e.ocsf.json"),
                                         "format": "ocsf"}]},
                      health={"directory": str(tmp_path / "state dir" / "h")})
    paths = writable_paths(load_config(cfg))
    # the database and health dirs are inside the state dir; /var/lib/vigil is the unit's
    assert paths == [tmp_path / "out", tmp_path / "state dir"]


@pytest.mark.parametrize("argv, message", [
    (["install", "--config", "/nonexistent/vigil.yaml"], "--config /nonexistent/vigil.yaml: "
     "no such file"),
    (["install", "--unit-dir", "/nonexistent/units"], "--unit-dir /nonexistent/units: no such "
     "directory"),
])
def test_errors_are_one_sentence(argv: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc, _out, err = run(*argv, capsys=capsys)
    assert rc == 2
    assert err == f"vigil: {message}\n"


def test_broken_configuration_is_refused_at_install(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("directories: []\nscan:\n  intervall: 5\n")
    rc, _out, err = run("install", "--config", str(cfg), "--unit-dir", str(tmp_path),
                        capsys=capsys)
    assert rc == 2 and "Traceback" not in err
    assert err.startswith(f"vigil: {cfg}:3") and "intervall" in err, err
    assert not (tmp_path / "vigil.service").exists()


def test_status_and_uninstall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert run("status", "--unit-dir", d, capsys=capsys)[0] == 1
    assert run("install", "--unit-dir", d, capsys=capsys)[0] == 0
    rc, out, _ = run("status", "--unit-dir", d, capsys=capsys)
    assert rc == 0 and "installed:" in out and "ExecStart=" in out
    rc, out, _ = run("uninstall", "--unit-dir", d, capsys=capsys)
    assert rc == 0 and "removed" in out and not (tmp_path / "vigil.service").exists()
    rc, out, _ = run("uninstall", "--unit-dir", d, capsys=capsys)
    assert rc == 0 and "nothing to remove" in out
    (tmp_path / "vigil.service").write_text("[Service]\nExecStart=/bin/true\n")
    rc, _, err = run("uninstall", "--unit-dir", d, capsys=capsys)
    assert rc == 2 and "not written by `vigil service install`" in err
    assert (tmp_path / "vigil.service").exists()


def test_vigil_service_command_line(tmp_path: Path) -> None:
    """The installed ``vigil service install`` (vigil.cli mounts add_service_parser)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cfg = config_file(tmp_path)
    r = subprocess.run([str(VIGIL), "service", "install", "--config", str(cfg), "--unit-dir",
                        str(tmp_path)], capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert f"ExecStart={VIGIL} run --config {cfg}\n" in (tmp_path / "vigil.service").read_text()
    r = subprocess.run([str(VIGIL), "service", "install", "--config", str(tmp_path / "nope"),
                        "--unit-dir", str(tmp_path)], capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 2 and r.stderr == f"vigil: --config {tmp_path}/nope: no such file\n"


def test_without_systemd_as_init_the_unit_is_only_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The default unit directory on a machine whose PID 1 is not systemd (this one): the
    file is written, systemctl is not run, and the user is told what to run instead."""
    assert not service.systemd_booted(), "PID 1 is systemd here: this test expects otherwise"
    monkeypatch.setattr(service, "DEFAULT_UNIT_DIR", tmp_path)
    p = argparse.ArgumentParser(prog="vigil")
    add_service_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["service", "install"])  # --unit-dir's default was bound at parse
    args.unit_dir = tmp_path
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "systemd is not the init system here (PID 1)" in out
    assert "systemctl daemon-reload && systemctl enable --now vigil.service" in out
    assert (tmp_path / "vigil.service").is_file()
