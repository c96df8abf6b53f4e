"""The typed reading of YAML nodes every configuration section shares: one value of a given
type or range, with "FILE:LINE: what is wrong" errors (Ctx.error) and did-you-mean hints for
unknown keys and values. vigil.config.load and the sections of their own (vigil.config.network)
build on it.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vigil.config.model import ConfigError, Pattern

T = TypeVar("T")


class Ctx:
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
            raise self.error(node, f"cannot read the value {excerpt(node)}: {e}") from None

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


def excerpt(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        text = str(node.value)
        return repr(text if len(text) <= 40 else text[:40] + "...")
    return f"({type(node).__name__})"


_NAMES = {"int": "an integer", "bool": "true or false", "str": "a string",
          "int/NoneType": "an integer or null"}

_DURATION = re.compile(r"^\s*(\d{1,12})\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def non_negative(ctx: Ctx, node: yaml.Node, key: str, minimum: int = 0) -> int:
    v: int = ctx.typed(node, key, int)
    if v < minimum:
        raise ctx.error(node, f"'{key}' must be >= {minimum}, got {v}")
    return v


def duration(ctx: Ctx, node: yaml.Node, key: str = "interval") -> int:
    v = ctx.value(node)
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    m = _DURATION.match(v) if isinstance(v, str) else None
    if not m:
        raise ctx.error(node, f"'{key}' must be seconds or like 30m/12h/1d, got {v!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def subset(ctx: Ctx, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> list[str]:
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


def choice(ctx: Ctx, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> str:
    v: str = ctx.typed(node, key, str)
    if v not in allowed:
        raise ctx.error(node, f"'{key}' must be one of {', '.join(allowed)}, got {v!r}")
    return v


def abs_path(ctx: Ctx, node: yaml.Node, key: str) -> Path:
    v = ctx.typed(node, key, str)
    if not os.path.isabs(v):
        raise ctx.error(node, f"'{key}' must be an absolute path, got {v[:200]!r}")
    if "\0" in v:
        raise ctx.error(node, f"'{key}' holds a NUL character, which no path can")
    return Path(os.path.normpath(v))
