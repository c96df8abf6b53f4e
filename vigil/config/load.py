"""Reading a configuration: YAML nodes -> the typed tree of vigil.config.model, FILE:LINE errors.

Owns loading the embedded default (vigil/data/default.yaml) or a user's file, every key's type
and range check (unknown keys with a did-you-mean), the embedded default's leniency (watched
directories that do not exist on this host are skipped; merged-/usr duplicates dropped) and
``vigil config check``. Line numbers come from the nodes PyYAML's ``compose()`` returns, so
every value can be blamed on the line that wrote it.
"""

from __future__ import annotations

import difflib
import errno as errno_mod
import importlib.resources
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vigil import yamlfile
from vigil.config.model import (
    CHECKS,
    EMBEDDED_NAME,
    HASHES,
    LEVELS,
    MOUNTS,
    OUTPUTS,
    Config,
    ConfigError,
    DiffConfig,
    DirectoryConfig,
    Pattern,
    RulesConfig,
    ScanConfig,
)

T = TypeVar("T")


class _Ctx:
    def __init__(self, source: str, embedded: bool) -> None:
        self.source = source
        self.embedded = embedded
        self._loader = yaml.SafeLoader("")

    def error(self, node: yaml.Node, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}:{node.start_mark.line + 1}: {msg}")

    def value(self, node: yaml.Node) -> Any:
        try:
            return self._loader.construct_object(node, deep=True)
        except (ValueError, OverflowError, TypeError) as e:
            # PyYAML's own constructors: a date like 2001-02-30, an integer of 5,000 digits
            raise self.error(node, f"cannot read the value {_excerpt(node)}: {e}") from None

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        out: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            key = self.value(knode)
            if not isinstance(key, str):
                raise self.error(knode, f"{what}: keys must be strings, got {key!r}")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.error(knode, f"unknown key '{key}' in {what}{hint}")
            if key in out:
                raise self.error(knode, f"duplicate key '{key}' in {what}")
            out[key] = vnode
        return out

    def typed(self, node: yaml.Node, key: str, kind: type[T] | tuple[type, ...]) -> T:
        v = self.value(node)
        # bool is an int in Python; a YAML `true` must not pass for a number (nor 1 for a bool).
        if isinstance(v, bool) and kind in (int, (int, type(None))):
            raise self.error(node, f"'{key}' must be an integer, got {v!r}")
        if not isinstance(v, kind):
            want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.error(node, f"'{key}' must be {_NAMES.get(want, want)}, got {v!r}")
        return v  # type: ignore[return-value]

    def str_list(self, node: yaml.Node, key: str) -> list[tuple[str, yaml.Node]]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"'{key}' must be a list")
        return [(self.typed(item, key, str), item) for item in node.value]

    def patterns(self, node: yaml.Node, key: str) -> tuple[Pattern, ...]:
        out = []
        for text, item in self.str_list(node, key):
            try:
                out.append(Pattern.parse(text))
            except (re.error, OverflowError, RecursionError) as e:
                raise self.error(item, f"bad regex in '{key}': {text[:80]!r}: "
                                       f"{e if str(e) else 'nested too deeply'}") from None
        return tuple(out)


def _excerpt(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        text = str(node.value)
        return repr(text if len(text) <= 40 else text[:40] + "...")
    return f"({type(node).__name__})"


_NAMES = {"int": "an integer", "bool": "true or false", "str": "a string",
          "int/NoneType": "an integer or null"}

_TOP = ("directories", "exec_events", "failed_errnos", "ring_buffer_mb", "output", "json_file",
        "database", "state_dir", "scan", "diff", "ignore", "rules")
_DIR = ("path", "recursive", "depth", "realtime", "check", "hashes", "report_changes", "ignore",
        "restrict", "nodiff", "follow_symlinks", "tags", "mounts")
_DURATION = re.compile(r"^\s*(\d{1,12})\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _non_negative(ctx: _Ctx, node: yaml.Node, key: str, minimum: int = 0) -> int:
    v: int = ctx.typed(node, key, int)
    if v < minimum:
        raise ctx.error(node, f"'{key}' must be >= {minimum}, got {v}")
    return v


def _duration(ctx: _Ctx, node: yaml.Node, key: str = "interval") -> int:
    v = ctx.value(node)
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    m = _DURATION.match(v) if isinstance(v, str) else None
    if not m:
        raise ctx.error(node, f"'{key}' must be seconds or like 30m/12h/1d, got {v!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _subset(ctx: _Ctx, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> list[str]:
    out = []
    for v, item in ctx.str_list(node, key):
        if v not in allowed:
            close = difflib.get_close_matches(v, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ctx.error(item, f"'{key}': unknown value '{v}'{hint}; "
                                  f"choose from {', '.join(allowed)}")
        if v not in out:
            out.append(v)
    return out


def _choice(ctx: _Ctx, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> str:
    v: str = ctx.typed(node, key, str)
    if v not in allowed:
        raise ctx.error(node, f"'{key}' must be one of {', '.join(allowed)}, got {v!r}")
    return v


def _abs_path(ctx: _Ctx, node: yaml.Node, key: str) -> Path:
    v = ctx.typed(node, key, str)
    if not os.path.isabs(v):
        raise ctx.error(node, f"'{key}' must be an absolute path, got {v[:200]!r}")
    if "\0" in v:
        raise ctx.error(node, f"'{key}' holds a NUL character, which no path can")
    return Path(os.path.normpath(v))


def _directory(ctx: _Ctx, node: yaml.Node) -> DirectoryConfig | None:
    m = ctx.mapping(node, "a directories entry", _DIR)
    if "path" not in m:
        raise ctx.error(node, "a directories entry needs 'path'")
    path = _abs_path(ctx, m["path"], "path")
    try:
        os.stat(path)
    except FileNotFoundError:
        if ctx.embedded:
            return None
        raise ctx.error(m["path"], f"watched path {path} does not exist") from None
    except OSError as e:
        if ctx.embedded:  # e.g. /root/.ssh for a non-root `vigil scan`: nothing to watch there
            return None
        raise ctx.error(m["path"], f"watched path {path}: {e.strerror}") from None
    kw: dict[str, Any] = {"path": os.fsencode(path)}
    for key in ("recursive", "realtime", "report_changes", "follow_symlinks"):
        if key in m:
            kw[key] = ctx.typed(m[key], key, bool)
    if "depth" in m:
        depth: int | None = ctx.typed(m["depth"], "depth", (int, type(None)))
        if depth is not None and depth < 0:
            raise ctx.error(m["depth"], f"'depth' must be >= 0 or null, got {depth}")
        if depth not in (None, 0) and kw.get("recursive") is False:
            raise ctx.error(m["depth"],
                            "'depth' conflicts with 'recursive: false' (which means depth 0)")
        kw["depth"] = depth
    if "check" in m:
        kw["check"] = frozenset(_subset(ctx, m["check"], "check", CHECKS))
    if "hashes" in m:
        hashes = _subset(ctx, m["hashes"], "hashes", HASHES)
        if "blake3" in hashes and importlib.util.find_spec("blake3") is None:
            raise ctx.error(m["hashes"], "hash 'blake3' needs the optional package: "
                            "pip install 'vigil[blake3]'")
        kw["hashes"] = tuple(hashes)
    for key in ("ignore", "restrict", "nodiff"):
        if key in m:
            kw[key] = ctx.patterns(m[key], key)
    if "tags" in m:
        kw["tags"] = tuple(v for v, _ in ctx.str_list(m["tags"], "tags"))
    if "mounts" in m:
        kw["mounts"] = _choice(ctx, m["mounts"], "mounts", MOUNTS)
    return DirectoryConfig(**kw)


def _rules(ctx: _Ctx, node: yaml.Node) -> RulesConfig:
    m = ctx.mapping(node, "rules", ("enabled", "builtin", "paths", "disabled", "min_level",
                                    "suppress_window"))
    kw: dict[str, Any] = {}
    for key in ("enabled", "builtin"):
        if key in m:
            kw[key] = ctx.typed(m[key], key, bool)
    if "paths" in m:
        paths = []
        for _, item in ctx.str_list(m["paths"], "paths"):
            p = _abs_path(ctx, item, "paths")
            if not p.exists():
                raise ctx.error(item, f"rule path {p} does not exist")
            paths.append(p)
        kw["paths"] = tuple(paths)
    if "disabled" in m:
        kw["disabled"] = tuple(v for v, _ in ctx.str_list(m["disabled"], "disabled"))
    if "min_level" in m:
        kw["min_level"] = _choice(ctx, m["min_level"], "min_level", LEVELS)
    if "suppress_window" in m:
        kw["suppress_window"] = _duration(ctx, m["suppress_window"], "suppress_window")
    return RulesConfig(**kw)


def _dedupe_embedded(dirs: list[DirectoryConfig]) -> list[DirectoryConfig]:
    """Drop default entries that are symlinks to another entry (merged /usr: /bin -> usr/bin)."""
    real = {os.path.realpath(d.path): d.path for d in dirs if not os.path.islink(d.path)}
    return [d for d in dirs if not (os.path.islink(d.path) and os.path.realpath(d.path) in real)]


def _parse(ctx: _Ctx, root: yaml.Node | None) -> Config:
    if root is None:
        raise ConfigError(f"{ctx.source}:1: the file is empty")
    m = ctx.mapping(root, "the top level", _TOP)
    kw: dict[str, Any] = {"source": ctx.source}
    if "exec_events" in m:
        kw["exec_events"] = ctx.typed(m["exec_events"], "exec_events", bool)
    if "failed_errnos" in m:
        names = []
        for v, item in ctx.str_list(m["failed_errnos"], "failed_errnos"):
            if not isinstance(getattr(errno_mod, v, None), int) or not v.startswith("E"):
                raise ctx.error(item, f"'failed_errnos': unknown errno name '{v}'")
            names.append(v)
        kw["failed_errnos"] = tuple(names)
    if "ring_buffer_mb" in m:
        mb = _non_negative(ctx, m["ring_buffer_mb"], "ring_buffer_mb", 1)
        if mb & (mb - 1):
            raise ctx.error(m["ring_buffer_mb"],
                            f"'ring_buffer_mb' must be a power of two, got {mb}")
        kw["ring_buffer_mb"] = mb
    if "output" in m:
        kw["output"] = _choice(ctx, m["output"], "output", OUTPUTS)
    if "json_file" in m and ctx.value(m["json_file"]) is not None:
        kw["json_file"] = _abs_path(ctx, m["json_file"], "json_file")
    for key in ("database", "state_dir"):
        if key in m:
            kw[key] = _abs_path(ctx, m[key], key)
    if "scan" in m:
        sm = ctx.mapping(m["scan"], "scan",
                         ("interval", "max_files", "hash_workers", "max_file_size"))
        skw: dict[str, Any] = {}
        if "interval" in sm:
            skw["interval"] = _duration(ctx, sm["interval"])
        if "max_files" in sm:
            skw["max_files"] = _non_negative(ctx, sm["max_files"], "max_files", 1)
        if "hash_workers" in sm and ctx.value(sm["hash_workers"]) is not None:
            skw["hash_workers"] = _non_negative(ctx, sm["hash_workers"], "hash_workers", 1)
        if "max_file_size" in sm:
            skw["max_file_size"] = _non_negative(ctx, sm["max_file_size"], "max_file_size")
        kw["scan"] = ScanConfig(**skw)
    if "diff" in m:
        dm = ctx.mapping(m["diff"], "diff", ("quota_mb", "max_file_size"))
        kw["diff"] = DiffConfig(**{k: _non_negative(ctx, v, k) for k, v in dm.items()})
    if "ignore" in m:
        kw["ignore"] = ctx.patterns(m["ignore"], "ignore")
    if "rules" in m:
        kw["rules"] = _rules(ctx, m["rules"])
    if "directories" in m:
        node = m["directories"]
        if not isinstance(node, yaml.SequenceNode):
            raise ctx.error(node, "'directories' must be a list")
        dirs = [d for d in (_directory(ctx, item) for item in node.value) if d is not None]
        if ctx.embedded:
            dirs = _dedupe_embedded(dirs)
        seen: set[bytes] = set()
        for d, item in zip(dirs, node.value, strict=False):
            if d.path in seen and not ctx.embedded:
                raise ctx.error(item, f"directory {os.fsdecode(d.path)} is listed twice")
            seen.add(d.path)
        kw["directories"] = tuple(dirs)
    elif not ctx.embedded:
        kw["directories"] = load_config(None).directories
    return Config(**kw)


def _load_text(text: str, source: str, embedded: bool) -> Config:
    ctx = _Ctx(source, embedded)
    root = yamlfile.compose(text, source, ConfigError)
    try:
        return _parse(ctx, root)
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 1
        raise ConfigError(f"{source}:{line}: {e.problem}") from None


def _embedded_text() -> str:
    try:
        return importlib.resources.files("vigil").joinpath("data/default.yaml").read_text("utf-8")
    except (NotADirectoryError, FileNotFoundError, ModuleNotFoundError):
        # `vigil` is a namespace package; under an editable install importlib.resources cannot
        # multiplex its path, so read the file next to this module (where the wheel puts it too).
        return (Path(__file__).parent.parent / "data" / "default.yaml").read_text("utf-8")


def load_config(path: Path | None) -> Config:
    """Load and validate a configuration file; ``None`` loads the embedded default."""
    if path is None:
        return _load_text(_embedded_text(), EMBEDDED_NAME, embedded=True)
    text = yamlfile.read_text(Path(path), ConfigError)
    return _load_text(text, str(path), embedded=False)


def check_config_main(path: Path | None, out: Callable[[str], None] | None = None) -> int:
    """``vigil config check FILE``: print "OK: N directories" (0) or the error (2)."""
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    (out or print)(f"OK: {len(cfg.directories)} directories")
    return 0
