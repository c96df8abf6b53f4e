"""The auditd-record view of Vigil's events: SigmaHQ's ``service: auditd`` rules, no auditd.

Owns what one Vigil ECS event document (as ``vigil run -o json`` prints it) looks like as the
records auditd writes for the same activity, each a flat ``{auditd field: text}`` dict that a
rule is matched against on its own (``auditd_records``), and THE table of the auditd fields
Vigil provides per record type and where each value comes from (``AUDITD_FIELDS``), from
which vigil.rules.fieldmap makes the load-time warnings and the README's table.

- An exec: ``SYSCALL`` (``SYSCALL=execve``, who did it), ``EXECVE`` (``argc``, ``a0..aN``),
  ``CWD`` (when the event has the working directory) and ``PATH`` (the executable, NORMAL).
- A file event (failed attempts too: ``success=no``, ``exit=-errno``): ``SYSCALL`` naming
  the operation's classic system call and ``PATH`` records with auditd's name types: a new
  name is ``PARENT`` (its directory, with the trailing slash auditd prints) then ``CREATE``;
  a removed one ``PARENT`` then ``DELETE``; a rename ``PARENT`` old, ``PARENT`` new,
  ``DELETE`` old, ``CREATE`` new; a hard link ``NORMAL`` old, ``PARENT``, ``CREATE`` new;
  a change in place (write, chmod, chown, truncate, xattrs) one ``NORMAL``. The kernel
  records ``CREATE``/``DELETE`` before its permission check (may_create, may_delete), so a
  refused attempt has the same records, except a refused create by open (may_o_create
  records nothing): only the ``PARENT`` of the path walk. A refused open (Vigil does not say
  whether the file existed) is one ``NORMAL`` record of the name.

``SYSCALL`` is the interpretation auditd's enriched format prints (the upper-case field the
rules test), and it is the family's classic name (``open``, ``unlink``, ``rename``,
``chmod``, ``mknod``, ``execve``, ...): the VFS backends see the operation, not which variant
of the call (``openat``, ``unlinkat``, ``renameat2``, ``mknodat``, ``execveat``) or io_uring
request asked for it, so Vigil never claims one. The numeric ``syscall`` (it would name the
variant, per architecture) is not given. A modification (a file opened for writing, then
closed) is the ``open`` that auditd's write watches log. Audit rule keys (``key``) exist
only in an audit rule file: none are given. Vigil's paths are canonical (symlinks in the
directories resolved), where auditd prints the name a program passed.
"""

from __future__ import annotations

import errno as errno_mod
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from vigil.events.model import FileOp
from vigil.rules.patterns import FIELD_SEP, NAME_SEP

AUDITD: Final = "auditd"   # the key of these records and of the rules matched against them
UNSET: Final = "4294967295"   # an unset login uid / session id, as auditd prints it

Record = dict[str, str]

# The operation -> the system call auditd names (its classic name), and the PATH shape.
_OPS: Final[dict[FileOp, tuple[str, str]]] = {
    FileOp.CREATE: ("open", "open-create"),
    FileOp.MODIFY: ("open", "normal"),
    FileOp.OPEN: ("open", "normal"),
    FileOp.DELETE: ("unlink", "delete"),
    FileOp.RMDIR: ("rmdir", "delete"),
    FileOp.RENAME: ("rename", "rename"),
    FileOp.CHMOD: ("chmod", "normal"),
    FileOp.CHOWN: ("chown", "normal"),
    FileOp.TRUNCATE: ("truncate", "normal"),
    FileOp.LINK: ("link", "link"),
    FileOp.SYMLINK: ("symlink", "create"),
    FileOp.MKDIR: ("mkdir", "create"),
    FileOp.SETXATTR: ("setxattr", "normal"),
    FileOp.REMOVEXATTR: ("removexattr", "normal"),
    FileOp.MKNOD: ("mknod", "create"),
}
_BY_OPERATION: Final = {op.name.lower(): v for op, v in _OPS.items()}
# event.action when vigil.file.operation is missing ("created" is also mknod's: open wins)
_BY_ACTION: Final = {op.action: v for op, v in reversed(list(_OPS.items()))}

SYSCALLS: Final = frozenset(("execve", *(s for s, _ in _OPS.values())))
# variants of the calls Vigil reports, named by what Vigil reports instead
VARIANTS: Final = {
    "execveat": "execve", "openat": "open", "openat2": "open", "creat": "open",
    "unlinkat": "unlink or rmdir", "renameat": "rename", "renameat2": "rename",
    "mkdirat": "mkdir", "mknodat": "mknod", "fchmod": "chmod", "fchmodat": "chmod",
    "fchmodat2": "chmod", "fchown": "chown", "lchown": "chown", "fchownat": "chown",
    "ftruncate": "truncate", "linkat": "link", "symlinkat": "symlink",
    "lsetxattr": "setxattr", "fsetxattr": "setxattr", "lremovexattr": "removexattr",
    "fremovexattr": "removexattr",
}
TYPES: Final = ("SYSCALL", "EXECVE", "CWD", "PATH")   # the record types made
_CWD: Final = "`process.working_directory` (exec events)"


@dataclass(frozen=True)
class AuditField:
    """One auditd field: where Vigil takes it from in each record type that has it, and why
    it is missing from the record types where auditd has it and Vigil does not."""

    name: str
    sources: Mapping[str, str] = field(default_factory=dict)   # record type -> source
    missing: Mapping[str, str] = field(default_factory=dict)   # record type -> why not
    pattern: str | None = None   # the names it stands for, when several (a0, a1, ...)

    @property
    def label(self) -> str:
        return ", ".join(f"`{n}`" for n in self.name.split(", "))

    def matches(self, name: str) -> bool:
        return name == self.name if self.pattern is None else \
            re.fullmatch(self.pattern, name) is not None


_NOT_IN_EVENTS: Final = "not in Vigil's events"
AUDITD_FIELDS: Final[tuple[AuditField, ...]] = (
    AuditField("type", {**{t: f"`{t}`" for t in TYPES}, "CWD": "`CWD` (exec events)"}),
    AuditField("SYSCALL", {"SYSCALL": "`execve`, or the operation's classic call from "
                                      "`vigil.file.operation` (open, unlink, rename, mkdir, "
                                      "mknod, chmod, ...)"}),
    AuditField("success", {"SYSCALL": "`event.outcome`: `yes` / `no`"}),
    AuditField("exit", {"SYSCALL": "`error.code` as `-errno` (failed attempts only)"}),
    AuditField("items", {"SYSCALL": "the number of PATH records"}),
    AuditField("pid", {"SYSCALL": "`process.pid`"}),
    AuditField("ppid", {"SYSCALL": "`process.parent.pid`"}),
    AuditField("uid", {"SYSCALL": "`user.id`"}),
    AuditField("gid", {"SYSCALL": "`group.id`"}),
    AuditField("euid", {"SYSCALL": "`process.user.id`"}),
    AuditField("egid", {"SYSCALL": "`process.group.id`"}),
    AuditField("auid", {"SYSCALL": f"`vigil.process.login_uid` (unset: {UNSET})"}),
    AuditField("ses", {"SYSCALL": f"`vigil.process.session_id` (unset: {UNSET})"}),
    AuditField("comm", {"SYSCALL": "`process.name`"}),
    AuditField("exe", {"SYSCALL": "`process.executable`"}),
    AuditField("argc", {"EXECVE": "`process.args_count`"}),
    AuditField("a0…aN", {"EXECVE": "`process.args` (decoded text)"},
               {"SYSCALL": "the call's raw arguments are not in Vigil's events"},
               pattern=r"a[0-9]+"),
    AuditField("cwd", {"CWD": _CWD}),
    AuditField("item", {"PATH": "the record's position"}),
    AuditField("name", {"PATH": "`file.path`, `vigil.file.original_path`, their directories; "
                                "an exec's `process.executable`"}),
    AuditField("nametype", {"PATH": "`PARENT`, `CREATE`, `DELETE` or `NORMAL`, from the "
                                    "operation"}),
    AuditField("inode", {"PATH": "`file.inode` (of the file, not of a PARENT)"}),
    AuditField("key", missing={"SYSCALL": "audit rule keys come from the audit rules "
                                          "(`auditctl -k`), and Vigil applies none"}),
    AuditField("syscall", missing={"SYSCALL": "the number names the call's variant, which "
                                              "Vigil does not know: `SYSCALL` has the name"}),
    AuditField("arch, tty, subj, suid, fsuid, sgid, fsgid", missing={"SYSCALL": _NOT_IN_EVENTS},
               pattern="arch|tty|subj|suid|fsuid|sgid|fsgid"),
    AuditField("mode, ouid, ogid, dev, rdev", missing={
        "PATH": "the inode's attributes before the call are " + _NOT_IN_EVENTS},
        pattern="mode|ouid|ogid|dev|rdev"),
    AuditField("proctitle", missing={"PROCTITLE": "not made: EXECVE has the arguments"}),
    AuditField("unit", missing={"SERVICE_STOP": "systemd's records, not a system call Vigil "
                                                "sees"}),
)


def audit_field(name: str) -> AuditField | None:
    return next((f for f in AUDITD_FIELDS if f.matches(name)), None)


# --- records ------------------------------------------------------------------------------

def _get(doc: Mapping[str, Any], *path: str) -> Any:
    cur: Any = doc
    for p in path:
        if type(cur) is not dict:   # ECS documents are plain dicts (no abc check: hot)
            return None
        cur = cur.get(p)
    return cur


def _put(rec: Record, name: str, v: Any) -> None:
    if v is None or isinstance(v, dict | list):
        return
    rec[name] = ("true" if v else "false") if isinstance(v, bool) else str(v)


def _ids(doc: Mapping[str, Any], name: str) -> str | None:
    vp = _get(doc, "vigil", "process")
    if type(vp) is not dict or name not in vp:
        return None
    v = vp[name]
    return UNSET if v is None else str(v)


def _syscall(doc: Mapping[str, Any], name: str, failed: bool, paths: int) -> Record:
    """A SYSCALL record without its who-data fields (``auditd_who``)."""
    rec: Record = {"type": "SYSCALL", "SYSCALL": name, "success": "no" if failed else "yes"}
    if failed:
        code = _get(doc, "error", "code")
        num = getattr(errno_mod, code, None) if isinstance(code, str) else None
        if isinstance(num, int):
            rec["exit"] = str(-num)
        elif isinstance(code, str) and code.isdigit():
            rec["exit"] = f"-{code}"
    rec["items"] = str(paths)
    return rec


def auditd_who(doc: Mapping[str, Any]) -> Record:
    """The SYSCALL record's fields from the acting process (the same for all its events:
    see vigil.rules.who)."""
    rec: Record = {}
    _put(rec, "ppid", _get(doc, "process", "parent", "pid"))
    _put(rec, "pid", _get(doc, "process", "pid"))
    _put(rec, "auid", _ids(doc, "login_uid"))
    _put(rec, "uid", _get(doc, "user", "id"))
    _put(rec, "gid", _get(doc, "group", "id"))
    _put(rec, "euid", _get(doc, "process", "user", "id"))
    _put(rec, "egid", _get(doc, "process", "group", "id"))
    _put(rec, "ses", _ids(doc, "session_id"))
    _put(rec, "comm", _get(doc, "process", "name"))
    _put(rec, "exe", _get(doc, "process", "executable"))
    return rec


def _path(item: int, name: str, nametype: str, inode: Any = None) -> Record:
    rec: Record = {"type": "PATH", "item": str(item), "name": name, "nametype": nametype}
    _put(rec, "inode", inode)
    return rec


def parent(path: str) -> str:
    """The directory part of a name with the trailing slash, as auditd prints a PARENT."""
    head, sep, _ = path.rpartition("/")
    return head + "/" if sep else "./"


# Where a PATH record's name comes from: the event's path, its old name, or their parents.
PATH, OLD, PATH_DIR, OLD_DIR = range(4)
# A file event's PATH records: (name source, nametype, whether it has the inode), in order.
Layout = tuple[tuple[int, str, bool], ...]


def _layout(shape: str, has_old: bool, failed: bool) -> Layout:
    if shape == "open-create":
        if failed:   # refused by may_o_create, which records no CREATE: the walk's PARENT
            return ((PATH_DIR, "PARENT", False),)
        shape = "create"
    if shape == "rename" and has_old:
        return ((OLD_DIR, "PARENT", False), (PATH_DIR, "PARENT", False),
                (OLD, "DELETE", True), (PATH, "CREATE", True))
    if shape == "link" and has_old:
        return ((OLD, "NORMAL", True), (PATH_DIR, "PARENT", False), (PATH, "CREATE", True))
    if shape in ("create", "delete", "rename", "link"):
        return ((PATH_DIR, "PARENT", False),
                (PATH, "DELETE" if shape == "delete" else "CREATE", True))
    return ((PATH, "NORMAL", True),)


def _name(source: int, path: str, old: str | None) -> str:
    name = path if source in (PATH, PATH_DIR) else old
    assert name is not None   # a layout names the old name only when there is one
    return parent(name) if source in (PATH_DIR, OLD_DIR) else name


def _file_paths(layout: Layout, path: str, old: str | None, inode: Any) -> list[Record]:
    return [_path(i, _name(src, path, old), nametype, inode if with_inode else None)
            for i, (src, nametype, with_inode) in enumerate(layout)]


def _exec(doc: Mapping[str, Any]) -> list[Record]:
    out: list[Record] = []
    args = _get(doc, "process", "args")
    if isinstance(args, list):
        ex: Record = {"type": "EXECVE", "argc": str(len(args))}
        for i, a in enumerate(args):
            ex[f"a{i}"] = str(a)
        out.append(ex)
    cwd = _get(doc, "process", "working_directory")
    if isinstance(cwd, str):
        out.append({"type": "CWD", "cwd": cwd})
    exe = _get(doc, "process", "executable")
    paths = [_path(0, exe, "NORMAL")] if isinstance(exe, str) else []
    return [_syscall(doc, "execve", False, len(paths)), *out, *paths]


def file_shape(doc: Mapping[str, Any], event: Mapping[str, Any]
               ) -> tuple[str, Layout, bool, str, str | None] | None:
    """A kernel file event's system call, PATH layout, failure, path and old name."""
    vfile = _get(doc, "vigil", "file")
    vfile = vfile if type(vfile) is dict else {}
    if vfile.get("source", "kernel") != "kernel":
        return None   # found by a scan: no system call was seen
    how = _BY_OPERATION.get(str(vfile.get("operation"))) or \
        _BY_ACTION.get(str(event.get("action")))
    path = _get(doc, "file", "path")
    if how is None or not isinstance(path, str):
        return None
    old = vfile.get("original_path")
    old = old if isinstance(old, str) else None
    failed = event.get("outcome") == "failure"
    return how[0], _layout(how[1], old is not None, failed), failed, path, old


def _file(doc: Mapping[str, Any], event: Mapping[str, Any]) -> list[Record]:
    shape = file_shape(doc, event)
    if shape is None:
        return []
    call, layout, failed, path, old = shape
    paths = _file_paths(layout, path, old, _get(doc, "file", "inode"))
    return [_syscall(doc, call, failed, len(paths)), *paths]


def value_text(v: Any) -> str | None:
    """A value as ``_put`` writes it, None when it writes none."""
    if v is None or isinstance(v, dict | list):
        return None
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# A kernel file event's auditd text without its who-data, as a template: the constant parts
# (joined) and, per value, the part's beginning and where the value comes from (a name
# source, or INODE). Made per shape by vigil.rules.batchscreen, which fills it per event.
Template = tuple[str, tuple[tuple[str, int], ...]]
INODE: Final = 4   # the slot of the inode's text


def file_template(doc: Mapping[str, Any], call: str, layout: Layout, failed: bool,
                  inode: bool, pre: str) -> Template | None:
    """The template of the events shaped like ``doc`` (``file_shape``), the parts begun by
    ``pre`` (FS + the key's scope) as a keyword matcher joins every field; None when a
    constant value holds FIELD_SEP (it cannot be searched joined)."""
    syscall = _syscall(doc, call, failed, len(layout))
    if any(FIELD_SEP in v for v in syscall.values()):
        return None
    const = [f"{pre}{k}{NAME_SEP}{v}" for k, v in syscall.items()]
    slots: list[tuple[str, int]] = []
    for i, (src, nametype, with_inode) in enumerate(layout):
        const.append(f"{pre}type{NAME_SEP}PATH{pre}item{NAME_SEP}{i}{pre}nametype{NAME_SEP}"
                     f"{nametype}")
        slots.append((f"{pre}name{NAME_SEP}", src))
        if with_inode and inode:
            slots.append((f"{pre}inode{NAME_SEP}", INODE))
    return "".join(const), tuple(slots)


def auditd_parts(doc: Mapping[str, Any]) -> list[Record]:
    """The auditd records of one Vigil ECS event, in auditd's order (none for an event no
    system call made: exits, losses, FIM scan results), the first (SYSCALL) without the
    fields of ``auditd_who``."""
    event = doc.get("event")
    if type(event) is not dict:
        return []
    dataset = event.get("dataset")
    if dataset == "vigil.file":
        return _file(doc, event)
    if dataset == "vigil.process" and event.get("action") == "exec" \
            and event.get("outcome") != "failure":
        return _exec(doc)
    return []


def auditd_records(doc: Mapping[str, Any]) -> list[Record]:
    """The auditd records of one Vigil ECS event, whole."""
    recs = auditd_parts(doc)
    return [{**recs[0], **auditd_who(doc)}, *recs[1:]] if recs else []
