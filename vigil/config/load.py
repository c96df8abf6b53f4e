"""Reading a configuration: YAML nodes -> the typed tree of vigil.config.model, FILE:LINE errors.

Owns loading the embedded default (vigil/data/default.yaml) or a user's file, every key's type
and range check (unknown keys with a did-you-mean), the embedded default's leniency (watched
directories that do not exist on this host are skipped; merged-/usr duplicates dropped) and
``vigil config check``. Line numbers come from the nodes PyYAML's ``compose()`` returns, so
every value can be blamed on the line that wrote it.
"""

from __future__ import annotations

import errno as errno_mod
import importlib.resources
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    ExecHashConfig,
    RulesConfig,
    ScanConfig,
    ShellConfig,
)
from vigil.config.network import parse_network
from vigil.config.nodes import (
    Ctx,
    abs_path,
    choice,
    duration,
    non_negative,
    subset,
)
from vigil.config.outputs import parse_health, parse_metrics, parse_outputs

_TOP = ("directories", "exec_events", "failed_errnos", "ring_buffer_mb", "output", "json_file",
        "database", "state_dir", "scan", "diff", "ignore", "rules", "network",
        "exec_hash", "shell", "outputs", "metrics", "health")
_DIR = ("path", "recursive", "depth", "realtime", "check", "hashes", "report_changes", "ignore",
        "restrict", "nodiff", "follow_symlinks", "tags", "mounts")
def _directory(ctx: Ctx, node: yaml.Node) -> DirectoryConfig | None:
    m = ctx.mapping(node, "a directories entry", _DIR)
    if "path" not in m:
        raise ctx.error(node, "a directories entry needs 'path'")
    path = abs_path(ctx, m["path"], "path")
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
        kw["check"] = frozenset(subset(ctx, m["check"], "check", CHECKS))
    if "hashes" in m:
        hashes = subset(ctx, m["hashes"], "hashes", HASHES)
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
        kw["mounts"] = choice(ctx, m["mounts"], "mounts", MOUNTS)
    return DirectoryConfig(**kw)


def _rules(ctx: Ctx, node: yaml.Node) -> RulesConfig:
    m = ctx.mapping(node, "rules", ("enabled", "builtin", "paths", "disabled", "min_level",
                                    "suppress_window"))
    kw: dict[str, Any] = {}
    for key in ("enabled", "builtin"):
        if key in m:
            kw[key] = ctx.typed(m[key], key, bool)
    if "paths" in m:
        paths = []
        for _, item in ctx.str_list(m["paths"], "paths"):
            p = abs_path(ctx, item, "paths")
            if not p.exists():
                raise ctx.error(item, f"rule path {p} does not exist")
            paths.append(p)
        kw["paths"] = tuple(paths)
    if "disabled" in m:
        kw["disabled"] = tuple(v for v, _ in ctx.str_list(m["disabled"], "disabled"))
    if "min_level" in m:
        kw["min_level"] = choice(ctx, m["min_level"], "min_level", LEVELS)
    if "suppress_window" in m:
        kw["suppress_window"] = duration(ctx, m["suppress_window"], "suppress_window")
    return RulesConfig(**kw)


def _exec_hash(ctx: Ctx, node: yaml.Node) -> ExecHashConfig:
    m = ctx.mapping(node, "exec_hash", ("enabled", "max_bytes_per_second", "max_file_size"))
    kw: dict[str, Any] = {}
    if "enabled" in m:
        kw["enabled"] = ctx.typed(m["enabled"], "enabled", bool)
    for key in ("max_bytes_per_second", "max_file_size"):
        if key in m:
            kw[key] = non_negative(ctx, m[key], key, 1)
    return ExecHashConfig(**kw)


def _dedupe_embedded(dirs: list[DirectoryConfig]) -> list[DirectoryConfig]:
    """Drop default entries that are symlinks to another entry (merged /usr: /bin -> usr/bin)."""
    real = {os.path.realpath(d.path): d.path for d in dirs if not os.path.islink(d.path)}
    return [d for d in dirs if not (os.path.islink(d.path) and os.path.realpath(d.path) in real)]


def _parse(ctx: Ctx, root: yaml.Node | None) -> Config:
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
        mb = non_negative(ctx, m["ring_buffer_mb"], "ring_buffer_mb", 1)
        if mb & (mb - 1):
            raise ctx.error(m["ring_buffer_mb"],
                            f"'ring_buffer_mb' must be a power of two, got {mb}")
        kw["ring_buffer_mb"] = mb
    if "output" in m:
        kw["output"] = choice(ctx, m["output"], "output", OUTPUTS)
    if "json_file" in m and ctx.value(m["json_file"]) is not None:
        kw["json_file"] = abs_path(ctx, m["json_file"], "json_file")
    for key in ("database", "state_dir"):
        if key in m:
            kw[key] = abs_path(ctx, m[key], key)
    if "scan" in m:
        sm = ctx.mapping(m["scan"], "scan",
                         ("interval", "max_files", "hash_workers", "max_file_size"))
        skw: dict[str, Any] = {}
        if "interval" in sm:
            skw["interval"] = duration(ctx, sm["interval"])
        if "max_files" in sm:
            skw["max_files"] = non_negative(ctx, sm["max_files"], "max_files", 1)
        if "hash_workers" in sm and ctx.value(sm["hash_workers"]) is not None:
            skw["hash_workers"] = non_negative(ctx, sm["hash_workers"], "hash_workers", 1)
        if "max_file_size" in sm:
            skw["max_file_size"] = non_negative(ctx, sm["max_file_size"], "max_file_size")
        kw["scan"] = ScanConfig(**skw)
    if "diff" in m:
        dm = ctx.mapping(m["diff"], "diff", ("quota_mb", "max_file_size"))
        kw["diff"] = DiffConfig(**{k: non_negative(ctx, v, k) for k, v in dm.items()})
    if "ignore" in m:
        kw["ignore"] = ctx.patterns(m["ignore"], "ignore")
    if "rules" in m:
        kw["rules"] = _rules(ctx, m["rules"])
    if "network" in m:
        kw["network"] = parse_network(ctx, m["network"])
    if "shell" in m:
        sm = ctx.mapping(m["shell"], "shell", ("enabled",))
        kw["shell"] = ShellConfig(**{k: ctx.typed(v, k, bool) for k, v in sm.items()})
    if "exec_hash" in m:
        kw["exec_hash"] = _exec_hash(ctx, m["exec_hash"])
    if "outputs" in m:
        kw["outputs"] = parse_outputs(ctx, m["outputs"])
    if "metrics" in m:
        kw["metrics"] = parse_metrics(ctx, m["metrics"])
    if "health" in m:
        kw["health"] = parse_health(ctx, m["health"])
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
    ctx = Ctx(source, embedded)
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
