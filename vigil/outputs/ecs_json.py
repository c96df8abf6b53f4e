"""The ECS JSON of the common file events, written straight from the event.

Owns one thing: the bytes ``dumps(file_to_ecs(ev, host))`` would give for the file events a
burst is made of (an enriched process, no error, names that are UTF-8, no symlink target nor
xattr name, neither one of Vigil's own files nor a security knob), made without building the
document: the document and its serialisation cost about three times as much
(bench/pipeline.py), and with the rules off nothing else reads it.

The document (vigil.outputs.ecs.file_to_ecs) stays the definition. Every event this module
declines (``file_json`` returns None) is rendered from it, and tests/outputs/test_ecs_json.py
checks on random events that the two give the same bytes, so a field added to the document
and not here fails that test instead of going missing from the output.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from vigil.events.model import SCHEMA_VERSION, FileEvent, FileOp, Process
from vigil.outputs.ecs import _ECS, _NEW_NAME_OPS, _OP_NAMES, _TRUNCATED, _file_event, _who, iso

_dumps: Final = orjson.dumps
_ECS_PART: Final = b'Z","ecs":' + _dumps(_ECS) + b',"host":'
# per operation: the shared ``event`` object's JSON, and vigil.file.operation's
_EVENT: dict[FileOp, bytes] = {}
_OPERATION: Final = {op: _dumps(name) for op, name in _OP_NAMES.items()}
_SOURCE: dict[str, bytes] = {}
_SECOND: list[Any] = [None, b""]   # the last second met, and its document head


def _head(ns: int) -> bytes:
    """The document's start up to @timestamp's microseconds (as vigil.outputs.ecs.iso)."""
    sec, frac = divmod(ns, 1_000_000_000)
    if _SECOND[0] != sec:
        _SECOND[0] = sec
        _SECOND[1] = b'{"@timestamp":"' + iso(sec * 1_000_000_000)[:-8].encode() + b"."
    return _SECOND[1] + b"%06d" % (frac // 1000)


def host_json(host: dict[str, Any]) -> bytes:
    return _dumps(host)


def _who_json(p: Process) -> tuple[bytes, bytes]:
    """An enriched process's who-data as JSON, made once and kept on it: its top-level fields
    without braces, and the head of the ``vigil`` object up to vigil.file.operation's value."""
    top, vp = _who(p)
    got = p.rendered_json = (
        _dumps(top)[1:-1],
        b',"vigil":{"process":' + _dumps(vp) + b',"schema_version":' + _dumps(SCHEMA_VERSION)
        + b',"file":{"operation":')
    return got


def file_json(ev: FileEvent, host: bytes) -> bytes | None:
    """``ev``'s ECS JSON (``host``: the host object's, ``host_json``), or None when ``ev`` is
    not of the common kind and must be rendered from its document."""
    if ev.errno or ev.protected is not None or ev.sysctl is not None:
        return None
    p = ev.process
    if not p.enriched:
        return None
    op, target = ev.op, ev.target_path
    try:
        if target is None:
            shown, original = ev.path.decode("utf-8"), None
        elif op in _NEW_NAME_OPS:   # file.path is the new name, the old one is vigil's
            shown, original = target.decode("utf-8"), ev.path.decode("utf-8")
        else:
            return None
    except UnicodeDecodeError:
        return None
    event = _EVENT.get(op)
    if event is None:
        event = _EVENT[op] = _dumps(_file_event(op, False))
    head, sep, name = shown.rpartition("/")
    tail = ""
    if ev.inode:
        tail = f',"inode":"{ev.inode}"'
    if ev.mode is not None:
        tail += f',"mode":"{ev.mode & 0o7777:04o}"'
    if ev.owner_uid is not None:
        tail += f',"uid":"{ev.owner_uid}"'
    if ev.owner_gid is not None:
        tail += f',"gid":"{ev.owner_gid}"'
    who, vigil = p.rendered_json or _who_json(p)
    source = _SOURCE.get(ev.source)
    if source is None:
        source = _SOURCE[ev.source] = b',"source":' + _dumps(ev.source)
    flags = ev.flags
    last = b"}}}"
    if flags:
        last = (b',"flags":%d' % flags
                + (b',"path_truncated":true}}}' if flags & _TRUNCATED else b"}}}"))
    return b"".join((
        _head(ev.timestamp_ns), _ECS_PART, host, b',"event":', event,
        b',"file":{"path":', _dumps(shown), b',"name":', _dumps(name), b',"directory":',
        _dumps((head or "/") if sep else shown), tail.encode(), b"},", who, vigil,
        _OPERATION[op],
        b"" if original is None else b',"original_path":' + _dumps(original),
        source, last))
