"""YAML written by users, read without trusting it: bounded size and nesting, FILE:LINE errors.

Owns turning a user's YAML file (the configuration now, rule packs later) into PyYAML's node
tree, and every way that can fail into one error naming the file and the line: unreadable, too
big, not UTF-8, a character YAML forbids, a syntax error, nesting deeper than any real file
(PyYAML's composer recurses, so a line of 5,000 '[' would otherwise end in RecursionError).
Does not know any schema: vigil.config validates the tree it returns.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from vigil.kernel.errors import InputError

# A configuration or rule pack is a few KiB; nothing real nests more than a handful of levels.
MAX_BYTES = 4 << 20
MAX_NESTING = 64


def read_text(path: Path, error: type[InputError]) -> str:
    """The file's text, or ``error`` ("FILE: ..." or "FILE:LINE: ...")."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise error(f"{path}: more than {MAX_BYTES >> 20} MiB: refused")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x} at offset "
                    f"{e.start})") from None


def _check_nesting(text: str, source: str, error: type[InputError]) -> None:
    """Refuse nesting deeper than MAX_NESTING, with its line, using PyYAML's event parser
    (a state machine, unlike its composer)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise error(f"{source}:{line}: nested more than {MAX_NESTING} levels deep: "
                            f"refused")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def compose(text: str, source: str, error: type[InputError]) -> yaml.Node | None:
    """The node tree of ``text`` (None for an empty document), or ``error`` with the line."""
    try:
        _check_nesting(text, source, error)
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise error(f"{source}:{line}: YAML syntax error: {e.problem or e}") from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        line = text.count("\n", 0, max(e.position, 0)) + 1
        char = chr(e.character) if isinstance(e.character, int) else e.character
        raise error(f"{source}:{line}: YAML error: the character {char!r} is not allowed "
                    f"in YAML") from None
    except yaml.YAMLError as e:
        raise error(f"{source}:1: YAML error: {e}") from None
