"""The batch screen's fills: generated code that makes an event's own text for the screen.

Owns ``generate``: for one shape of event (vigil.rules.batchscreen), the function that reads
each field the shape's keys index once and joins their ``FS name NS value`` parts, the
auditd view's parts from its template's slots (vigil.rules.auditd.file_template), and for
file events the checks that the event is of the shape's ``file_key``. Generated once per
shape: a fill is the whole per-event cost of deciding that most events fire nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from vigil.rules.auditd import INODE, OLD, OLD_DIR, PATH, PATH_DIR, value_text
from vigil.rules.ecsview import ecs_text
from vigil.rules.fieldmap import sysmon_text
from vigil.rules.patterns import FIELD_SEP

MISMATCH: Final = object()   # a fill's answer for an event of another file_key
_CONVERT: Final = frozenset(("Initiated", "Hashes"))   # Sysmon fields whose text is not the value's

Fill = Callable[[dict[str, Any]], str | None]


def generate(fields: list[tuple[str, tuple[str, ...], str | None]],
              slots: tuple[tuple[str, int], ...] | None, fk: tuple[Any, ...] | None) -> Fill:
    """The function that makes the parts of an event's text that are its own values: each
    field read once, the parts joined; None when a value holds FS (or the path of an
    auditd shape is not text), _MISMATCH when the event is not of the ``file_key`` ``fk``.
    The code holds indices only: every name, path, value and part's beginning is a
    constant of ``K``."""
    consts: list[Any] = []

    def k(v: Any) -> str:
        consts.append(v)
        return f"K[{len(consts) - 1}]"

    lines = ["def fill(doc):", " out = []", " add = out.append"]
    local: dict[tuple[str, ...], str] = {}

    def get(path: tuple[str, ...]) -> str:
        name = local.get(path)
        if name is None:
            name = local[path] = f"v{len(local)}"
            if len(path) == 1:
                lines.append(f" {name} = doc.get({k(path[0])})")
            else:
                up = get(path[:-1])
                lines.append(f" {name} = {up}.get({k(path[-1])}) if type({up}) is dict "
                             "else None")
        return name

    if fk is not None:   # file_key's checks, in its order
        file, given, code = fk
        vf = get(("vigil", "file"))
        if file is None:
            lines.append(f" if type({vf}) is dict: return M")
        else:
            lines += [f" if type({vf}) is not dict: return M",
                      f" if {vf}.get({k('operation')}) != {k(file[0])}: return M",
                      f" if {vf}.get({k('source')}, {k('kernel')}) != {k(file[1])}: return M",
                      f" if (type({vf}.get({k('original_path')})) is str) is not {file[2]!r}:"
                      " return M"]
        f = get(("file",))
        if given is None:
            lines.append(f" if type({f}) is dict: return M")
        else:
            i = get(("file", "inode"))
            fp = get(("file", "path"))
            lines += [f" if type({f}) is not dict: return M",
                      f" if (type({fp}) is str) is not {given[0]!r}: return M",
                      f" if ({i} is None or type({i}) is dict or type({i}) is list)"
                      f" is {given[1]!r}: return M"]
        e = get(("error",))
        lines.append(f" if ({e}.get({k('code')}) if type({e}) is dict else None) != {k(code)}:"
                     " return M")
    for pre, path, sysmon in fields:
        v = get(path)
        if sysmon in _CONVERT:
            lines += [f" t = S({k(sysmon)}, {v})", f" if t is not None: add({k(pre)} + t)"]
            continue
        conv = "S(None, {v})" if sysmon is not None else "E({v})"
        lines += [f" if type({v}) is str: add({k(pre)} + {v})",
                  f" elif {v} is not None:", f"  t = {conv.format(v=v)}",
                  f"  if t is not None: add({k(pre)} + t)"]
    if slots:
        p = get(("file", "path"))
        lines.append(f" if type({p}) is not str: return None")
        values = {PATH: p, OLD: get(("vigil", "file", "original_path"))}
        if any(src == PATH_DIR for _, src in slots):
            lines += [f" h, s, _ = {p}.rpartition('/')", " pd = h + '/' if s else './'"]
            values[PATH_DIR] = "pd"
        if any(src == OLD_DIR for _, src in slots):
            lines += [f" h, s, _ = {values[OLD]}.rpartition('/')",
                      " od = h + '/' if s else './'"]
            values[OLD_DIR] = "od"
        if any(src == INODE for _, src in slots):
            values[INODE] = f"V({get(('file', 'inode'))})"
        for pre, src in slots:
            lines.append(f" add({k(pre)} + {values[src]})")
    lines += [" text = ''.join(out)", f" return text if text.count({k(FIELD_SEP)}) == len(out) "
              "else None"]
    ns: dict[str, Any] = {"K": consts, "S": sysmon_text, "E": ecs_text, "V": value_text,
                          "M": MISMATCH}
    exec(compile("\n".join(lines), "<batch screen>", "exec"), ns)   # indices only: see above
    fill: Fill = ns["fill"]
    return fill
