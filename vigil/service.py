"""``vigil service install|uninstall|status``: Vigil as a systemd service.

The unit is data (vigil/data/vigil.service, shipped in the package): installing it means
writing that text with ExecStart= naming the running vigil and its configuration file, and
ReadWritePaths= for the directories that configuration writes outside the unit's state
directory (ProtectSystem=strict makes everything else read-only, so they are created here),
then ``systemctl daemon-reload`` and ``enable`` when systemd is the init system.

Owns rendering the unit and the three commands. Does not own the notification protocol
(vigil.sdnotify, re-exported here) nor what the agent does as a service (vigil.agent).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from vigil.kernel.errors import VigilError
from vigil.sdnotify import Notifier

__all__ = ["DEFAULT_CONFIG", "DEFAULT_UNIT_DIR", "UNIT_NAME", "Notifier", "ServiceError",
           "add_service_parser", "render_unit", "service_main", "shipped_unit",
           "writable_paths"]

UNIT_NAME = "vigil.service"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_CONFIG = Path("/etc/vigil/config.yaml")
# Writable through the unit's StateDirectory= / RuntimeDirectory=.
STATE_DIRECTORY = Path("/var/lib/vigil")
RUNTIME_DIRECTORY = Path("/run/vigil")
HEADER = "# Written by `vigil service install`"
_SHIPPED_EXEC = "ExecStart=/usr/bin/vigil run"


class ServiceError(VigilError):
    """A service command that cannot be done (exit 2)."""


def shipped_unit() -> str:
    return resources.files("vigil").joinpath("data", UNIT_NAME).read_text()


def systemd_booted() -> bool:
    """sd_booted(): is systemd the init system here (PID 1)?"""
    return os.path.isdir("/run/systemd/system")


def vigil_command() -> list[str]:
    """How to start the vigil that runs now: its console script by absolute path, else this
    interpreter with ``-m vigil.cli``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "vigil" and os.path.isfile(argv0):
        return [os.path.abspath(argv0)]
    beside = Path(sys.executable).parent / "vigil"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [os.path.abspath(sys.executable), "-m", "vigil.cli"]


# -- the unit text ----------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./%$-]+")


def _word(value: str, *, exec_line: bool) -> str:
    """One word of a unit setting: specifiers (%) escaped, ``$`` too on Exec lines, quoted
    when it holds anything but plain characters."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ServiceError(f"{value!r}: a control character cannot be written into a unit")
    value = value.replace("%", "%%")
    if exec_line:
        value = value.replace("$", "$$")
    if _PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(command: Sequence[str], config: Path | None,
                read_write: Iterable[Path] = (), *, events_elsewhere: bool = False,
                template: str | None = None) -> str:
    """The unit for ``command`` (the vigil executable) running ``config`` (None: the
    embedded default), with ``read_write`` directories writable; ``events_elsewhere``: the
    configuration sends events to files or syslog, so stdout (the journal) gets none."""
    text = template if template is not None else shipped_unit()
    if text.count(f"\n{_SHIPPED_EXEC}\n") != 1:
        raise ServiceError(f"the unit template has no single line {_SHIPPED_EXEC!r}")
    argv = [*command, "run", *(["--config", str(config)] if config is not None else [])]
    # $ is expanded in the arguments, not in the program's path
    exec_start = "ExecStart=" + " ".join(_word(a, exec_line=i > 0) for i, a in enumerate(argv))
    extra = [exec_start]
    rw = [str(p) for p in read_write]
    if rw:
        extra += ["# Outside /var/lib/vigil, written by the configuration (state, database,",
                  "# spools, health check, output files):",
                  "ReadWritePaths=" + " ".join(_word(p, exec_line=False) for p in rw)]
    if events_elsewhere:
        extra += ["# Events go to the configuration's outputs; the journal gets diagnostics "
                  "only.", "StandardOutput=null"]
    text = text.replace(f"\n{_SHIPPED_EXEC}\n", "\n" + "\n".join(extra) + "\n")
    source = str(config) if config is not None else "the embedded default configuration"
    return f"{HEADER} for {source}; edits are lost on the next install.\n{text}"


def _covered(path: Path, by: Iterable[Path]) -> bool:
    return any(path == b or b in path.parents for b in by)


def writable_paths(config: Any) -> list[Path]:
    """Directories ``config`` (a vigil.config.Config) writes outside the unit's state and
    runtime directories, outermost first, none inside another."""
    wanted: list[Path] = [config.state_dir, config.database.parent, config.health_dir]
    outputs = getattr(config, "outputs", None)
    for out in getattr(outputs, "syslog", ()):
        wanted.append(config.spool_dir(out))
    for out in getattr(outputs, "file", ()):
        wanted.append(Path(out.path).parent)
    if config.json_file is not None:
        wanted.append(Path(config.json_file).parent)
    result: list[Path] = []
    for p in sorted({Path(os.path.abspath(w)) for w in wanted}, key=lambda p: (len(p.parts), p)):
        if not _covered(p, (STATE_DIRECTORY, RUNTIME_DIRECTORY, *result)):
            result.append(p)
    return result


def _events_elsewhere(config: Any) -> bool:
    outputs = getattr(config, "outputs", None)
    return bool(config.json_file is not None or getattr(outputs, "syslog", ())
                or getattr(outputs, "file", ()))


# -- the commands -----------------------------------------------------------------------------

def _systemctl(*args: str) -> None:
    try:
        r = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    except OSError as e:
        raise ServiceError(f"cannot run systemctl: {e.strerror or e}") from None
    if r.returncode != 0:
        why = (r.stderr or r.stdout).strip() or f"exit code {r.returncode}"
        raise ServiceError(f"systemctl {' '.join(args)} failed: {why}")


def _load_config(path: Path | None) -> Any:
    from vigil.config import load_config

    return load_config(path)


def _install(args: argparse.Namespace, say: Any) -> int:
    config_path: Path | None = args.config
    if config_path is not None:
        if not config_path.is_file():
            raise ServiceError(f"--config {config_path}: no such file")
        config_path = Path(os.path.abspath(config_path))
    elif DEFAULT_CONFIG.is_file():
        config_path = DEFAULT_CONFIG
    config = _load_config(config_path)  # a broken file is refused now, not at boot
    rw = writable_paths(config)
    unit_dir: Path = args.unit_dir
    if not unit_dir.is_dir():
        raise ServiceError(f"--unit-dir {unit_dir}: no such directory")
    text = render_unit(vigil_command(), config_path, rw,
                       events_elsewhere=_events_elsewhere(config))
    for d in rw:
        if not d.is_dir():
            try:
                d.mkdir(mode=0o700, parents=True)
            except OSError as e:
                raise ServiceError(f"cannot create {d} (the configuration writes there): "
                                   f"{e.strerror or e}") from None
            say(f"created {d} (the service may write only there and in {STATE_DIRECTORY})")
    unit = unit_dir / UNIT_NAME
    tmp = unit_dir / f".{UNIT_NAME}.tmp"
    try:
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, unit)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ServiceError(f"cannot write {unit}: {e.strerror or e}") from None
    which = config_path or "the embedded default configuration"
    say(f"wrote {unit} (runs {' '.join(vigil_command())} with {which})")
    if unit_dir.resolve() != DEFAULT_UNIT_DIR.resolve():
        say(f"{unit_dir} is not {DEFAULT_UNIT_DIR}: systemctl not run")
        return 0
    if not systemd_booted():
        say("systemd is not the init system here (PID 1): the unit is written but not "
            "loaded; on a systemd host: systemctl daemon-reload && systemctl enable --now "
            f"{UNIT_NAME}")
        return 0
    _systemctl("daemon-reload")
    if args.no_enable:
        say(f"loaded; not enabled (--no-enable): systemctl enable --now {UNIT_NAME}")
        return 0
    _systemctl("enable", *(["--now"] if args.now else []), UNIT_NAME)
    say(f"enabled{' and started' if args.now else ''}: {UNIT_NAME}"
        + ("" if args.now else f" (start it: systemctl start {UNIT_NAME})"))
    return 0


def _uninstall(args: argparse.Namespace, say: Any) -> int:
    unit = args.unit_dir / UNIT_NAME
    if not unit.exists():
        say(f"no {unit}: nothing to remove")
        return 0
    if not unit.read_text(errors="replace").startswith(HEADER):
        raise ServiceError(f"{unit} was not written by `vigil service install`; remove it "
                           "yourself")
    managed = (args.unit_dir.resolve() == DEFAULT_UNIT_DIR.resolve() and systemd_booted())
    if managed:
        _systemctl("disable", "--now", UNIT_NAME)
    try:
        unit.unlink()
    except OSError as e:
        raise ServiceError(f"cannot remove {unit}: {e.strerror or e}") from None
    if managed:
        _systemctl("daemon-reload")
    say(f"removed {unit}{' (stopped and disabled)' if managed else ''}; "
        f"{STATE_DIRECTORY} (baseline, spool) is kept")
    return 0


def _status(args: argparse.Namespace, say: Any) -> int:
    unit = args.unit_dir / UNIT_NAME
    if not unit.exists():
        say(f"not installed: no {unit}")
        return 1
    text = unit.read_text(errors="replace")
    exec_start = next((ln for ln in text.splitlines() if ln.startswith("ExecStart=")), "?")
    say(f"installed: {unit}")
    say(f"  {exec_start}")
    if systemd_booted() and shutil.which("systemctl"):
        for what in ("is-enabled", "is-active"):
            r = subprocess.run(["systemctl", what, UNIT_NAME], capture_output=True,
                               text=True, check=False)
            say(f"  {what.removeprefix('is-')}: {r.stdout.strip() or r.stderr.strip()}")
    else:
        say("  systemd is not the init system here: not loaded")
    return 0


def add_service_parser(subparsers: Any,
                       parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """``vigil service ...`` on the CLI's subparsers; each command runs ``service_main``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "service", help="install Vigil as a systemd service", parents=list(parents))
    sub = p.add_subparsers(dest="service_command", required=True)

    def unit_dir(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--unit-dir", type=Path, default=DEFAULT_UNIT_DIR, metavar="DIR",
                         help=f"where the unit file lives (default: {DEFAULT_UNIT_DIR}; "
                         "elsewhere, systemctl is not run)")
        cmd.set_defaults(func=service_main)

    inst = sub.add_parser("install", help=f"write {UNIT_NAME}, reload systemd, enable it")
    inst.add_argument("--config", type=Path, metavar="FILE",
                      help=f"configuration the service runs (default: {DEFAULT_CONFIG} if it "
                      "exists, else the embedded default)")
    inst.add_argument("--no-enable", action="store_true", help="write and load, do not enable")
    inst.add_argument("--now", action="store_true", help="also start it")
    unit_dir(inst)
    unit_dir(sub.add_parser("uninstall", help="stop, disable and remove the unit"))
    unit_dir(sub.add_parser("status", help="is the unit installed, enabled, running"))
    return p


def service_main(args: argparse.Namespace) -> int:
    """Run ``vigil service <command>``: 0 done, 1 not installed (status), 2 an error (said
    on stderr in one sentence)."""
    def say(line: str) -> None:
        print(f"vigil: {line}", flush=True)

    commands = {"install": _install, "uninstall": _uninstall, "status": _status}
    try:
        return commands[args.service_command](args, say)
    except VigilError as e:  # ServiceError, and ConfigError of the configuration file
        print(f"vigil: {e}", file=sys.stderr)
        return 2
