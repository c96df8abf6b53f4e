"""File events of the real agent, syscall by syscall, with exact who-data.

Each case runs one child (a Python interpreter calling the syscall by number, or a coreutils
tool) in the test's own watched subdirectory and asserts the child's complete event list: actions
in order, absolute canonical paths, and pid, parent pid, uid, euid, comm and executable.
"""

from __future__ import annotations

import ast
import errno
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agent_proc import (
    AgentProc,
    Area,
    Child,
    Event,
    Pred,
    UserIds,
    get,
    of_pid,
    py_child,
    run_child,
    under,
)

from vigil.kernel import hooks

pytestmark = pytest.mark.root

Expected = tuple[str, str, dict[str, Any]]  # (action, path template, {field: value template})


def check_who(ev: Event, child: Child) -> None:
    assert get(ev, "process.pid") == child.pid
    assert get(ev, "process.parent.pid") == child.ppid
    assert get(ev, "user.id") == str(child.uid)
    assert get(ev, "process.real_user.id") == str(child.uid)
    assert get(ev, "process.user.id") == str(child.uid)
    assert get(ev, "process.name") == child.comm
    assert get(ev, "process.executable") == child.exe


def check_events(evs: list[Event], child: Child, expected: list[Expected],
                 **fmt: str) -> None:
    """The child's events are exactly ``expected``, in order, each with the child's who-data."""
    want = [(a, p.format(**fmt)) for a, p, _ in expected]
    got = [(get(e, "event.action"), get(e, "file.path")) for e in evs]
    assert got == want, f"events of pid {child.pid}"
    for ev, (_, _, extra) in zip(evs, expected, strict=True):
        assert get(ev, "event.outcome") == "success"
        check_who(ev, child)
        for key, value in extra.items():
            value = value.format(**fmt) if isinstance(value, str) else value
            assert get(ev, key) == value, key


def child_code(code: str, w: Path, o: Path) -> str:
    return f"W = {str(w)!r}\nO = {str(o)!r}\nos.umask(0o022)\n{code}"


@dataclass(frozen=True)
class Case:
    id: str
    code: str  # Python after agent_proc.PRELUDE; W and O are the watched and outside dirs
    expect: list[Expected]
    files: tuple[str, ...] = ()  # regular files created (owned by the child's user) first
    subdirs: tuple[str, ...] = ()
    outside_files: tuple[str, ...] = ()
    as_root: bool = False  # chown needs root
    marks: tuple[Any, ...] = field(default=())


O_WRONLY, O_CREAT, O_EXCL, O_TRUNC, O_DIRECTORY = 0o1, 0o100, 0o200, 0o1000, 0o200000
CW = O_CREAT | O_WRONLY

# cold(path): a pointer to ``path`` in a private mapping of an unnamed file, not touched by
# this process (so not in its page tables until the kernel reads it)
COLD = """import tempfile
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
def cold(path):
    with tempfile.TemporaryFile() as f:
        f.write(path.encode() + b'\\0')
        f.flush()
        return ctypes.c_void_p(_libc.mmap(None, 4096, 1, 2, f.fileno(), 0))  # PROT_READ, PRIVATE
"""

CASES = [
    # ---- create / modify / truncate
    Case("create-openat", f"fd = sc('openat', AT_FDCWD, W + '/f', {CW}, 0o640); os.close(fd)",
         [("created", "{w}/f", {}), ("modified", "{w}/f", {})]),
    Case("create-open-legacy",
         f"fd = sc('open', W + '/f', {CW | O_EXCL}, 0o640); os.write(fd, b'x'); os.close(fd)",
         [("created", "{w}/f", {}), ("modified", "{w}/f", {})]),
    Case("create-creat", "fd = sc('creat', W + '/f', 0o640); os.write(fd, b'x'); os.close(fd)",
         [("created", "{w}/f", {}), ("modified", "{w}/f", {})]),
    Case("create-openat2",
         "how = (ctypes.c_uint64 * 3)(" + str(CW) + ", 0o640, 0)\n"
         "fd = sc('openat2', AT_FDCWD, W + '/f', ctypes.byref(how), 24); os.close(fd)",
         [("created", "{w}/f", {}), ("modified", "{w}/f", {})]),
    Case("create-dirfd",
         f"d = os.open(W, {O_DIRECTORY}); fd = sc('openat', d, 'f', {CW}, 0o640); os.close(fd)",
         [("created", "{w}/f", {}), ("modified", "{w}/f", {})]),
    Case("modify-existing", f"fd = sc('openat', AT_FDCWD, W + '/f', {O_WRONLY}, 0)\n"
         "os.write(fd, b'more'); os.close(fd)",
         [("modified", "{w}/f", {})], files=("f",)),
    Case("truncate", "sc('truncate', W + '/f', 1)",
         [("truncated", "{w}/f", {})], files=("f",)),
    # a shell's `> file` on a file that exists: emptied by the open (O_TRUNC), then closed
    Case("truncate-by-open", f"fd = sc('openat', AT_FDCWD, W + '/f', {CW | O_TRUNC}, 0o640)\n"
         "os.close(fd)",
         [("truncated", "{w}/f", {}), ("modified", "{w}/f", {})], files=("f",)),
    # O_TRUNC creating the file truncates nothing
    Case("create-with-trunc", f"fd = sc('openat', AT_FDCWD, W + '/f', {CW | O_TRUNC}, 0o640)\n"
         "os.close(fd)",
         [("created", "{w}/f", {}), ("modified", "{w}/f", {})]),
    Case("ftruncate", f"fd = sc('openat', AT_FDCWD, W + '/f', {O_WRONLY}, 0)\n"
         "sc('ftruncate', fd, 1); os.close(fd)",
         [("truncated", "{w}/f", {}), ("modified", "{w}/f", {})], files=("f",)),
    # ---- delete
    Case("unlink-legacy", "sc('unlink', W + '/f')", [("deleted", "{w}/f", {})], files=("f",)),
    Case("unlinkat-dirfd", f"d = os.open(W, {O_DIRECTORY}); sc('unlinkat', d, 'f', 0)",
         [("deleted", "{w}/f", {})], files=("f",)),
    Case("rmdir-legacy", "sc('rmdir', W + '/d')", [("directory-deleted", "{w}/d", {})],
         subdirs=("d",)),
    Case("unlinkat-removedir", "sc('unlinkat', AT_FDCWD, W + '/d', AT_REMOVEDIR)",
         [("directory-deleted", "{w}/d", {})], subdirs=("d",)),
    # replacing a file deletes the old one: the event names the replaced path
    Case("rename-over-existing", "sc('rename', W + '/a', W + '/b')",
         [("renamed", "{w}/b", {"vigil.file.original_path": "{w}/a"})], files=("a", "b")),
    Case("renameat-over-existing-dirfd",
         f"d = os.open(W, {O_DIRECTORY}); sc('renameat', d, 'a', d, 'b')",
         [("renamed", "{w}/b", {"vigil.file.original_path": "{w}/a"})], files=("a", "b")),
    # ---- rename / move
    Case("rename-legacy", "sc('rename', W + '/a', W + '/b')",
         [("renamed", "{w}/b", {"vigil.file.original_path": "{w}/a"})], files=("a",)),
    Case("renameat-dirfd",
         f"d = os.open(W, {O_DIRECTORY}); s = os.open(W + '/s', {O_DIRECTORY})\n"
         "sc('renameat', d, 'a', s, 'b')",
         [("renamed", "{w}/s/b", {"vigil.file.original_path": "{w}/a"})], files=("a",),
         subdirs=("s",)),
    Case("renameat2-noreplace", "sc('renameat2', AT_FDCWD, W + '/a', AT_FDCWD, W + '/b', 1)",
         [("renamed", "{w}/b", {"vigil.file.original_path": "{w}/a"})], files=("a",)),
    Case("move-into-tree", "sc('rename', O + '/x', W + '/x')",
         [("renamed", "{w}/x", {"vigil.file.original_path": "{o}/x"})], outside_files=("x",)),
    Case("move-out-of-tree", "sc('rename', W + '/x', O + '/x')",
         [("renamed", "{o}/x", {"vigil.file.original_path": "{w}/x"})], files=("x",)),
    # The path strings in pages the child has not touched yet: at the syscall's entry a BPF
    # program cannot read them (it may not fault a page in); the kernel faults them in, and
    # the call is judged at its exit. Whatever the kernel side decides at entry must not
    # take an unreadable string for an unwatched path.
    Case("unlink-path-not-in-memory-yet", COLD + "sc('unlink', cold(W + '/f'))",
         [("deleted", "{w}/f", {})], files=("f",)),
    Case("move-into-tree-paths-not-in-memory-yet",
         COLD + "sc('rename', cold(O + '/x'), cold(W + '/x'))",
         [("renamed", "{w}/x", {"vigil.file.original_path": "{o}/x"})], outside_files=("x",)),
    # ---- attributes
    Case("chmod-legacy", "sc('chmod', W + '/f', 0o600)",
         [("mode-changed", "{w}/f", {"file.mode": "0600"})], files=("f",)),
    Case("fchmod", "fd = os.open(W + '/f', 0); sc('fchmod', fd, 0o604); os.close(fd)",
         [("mode-changed", "{w}/f", {"file.mode": "0604"})], files=("f",)),
    Case("fchmodat", f"d = os.open(W, {O_DIRECTORY}); sc('fchmodat', d, 'f', 0o640)",
         [("mode-changed", "{w}/f", {"file.mode": "0640"})], files=("f",)),
    Case("fchmodat2", "sc('fchmodat2', AT_FDCWD, W + '/f', 0o611, AT_SYMLINK_NOFOLLOW)",
         [("mode-changed", "{w}/f", {"file.mode": "0611"})], files=("f",)),
    Case("chown-legacy", "sc('chown', W + '/f', 4242, 4343)",
         [("owner-changed", "{w}/f", {"file.uid": "4242", "file.gid": "4343"})],
         files=("f",), as_root=True),
    Case("lchown", "os.symlink('f', W + '/l'); sc('lchown', W + '/l', 4242, 4343)",
         [("symlink-created", "{w}/l", {"file.target_path": "f"}),
          ("owner-changed", "{w}/l", {"file.uid": "4242", "file.gid": "4343"})],
         files=("f",), as_root=True),
    Case("fchown", "fd = os.open(W + '/f', 0); sc('fchown', fd, 4242, 4343); os.close(fd)",
         [("owner-changed", "{w}/f", {"file.uid": "4242", "file.gid": "4343"})],
         files=("f",), as_root=True),
    Case("fchownat", f"d = os.open(W, {O_DIRECTORY}); sc('fchownat', d, 'f', 4242, 4343, 0)",
         [("owner-changed", "{w}/f", {"file.uid": "4242", "file.gid": "4343"})],
         files=("f",), as_root=True),
    Case("setxattr", "sc('setxattr', W + '/f', 'user.vigil', b'v1', 2, 0)",
         [("xattr-changed", "{w}/f", {"vigil.file.xattr": "user.vigil"})], files=("f",)),
    Case("fsetxattr",  # the attribute's name: test_fd_xattr_calls_name_the_attribute
         "fd = os.open(W + '/f', 0); sc('fsetxattr', fd, 'user.vigil', b'v1', 2, 0)",
         [("xattr-changed", "{w}/f", {})], files=("f",)),
    Case("fremovexattr", "os.setxattr(W + '/f', 'user.v', b'1')\n"
         "fd = os.open(W + '/f', 0); sc('fremovexattr', fd, 'user.v')",
         [("xattr-changed", "{w}/f", {"vigil.file.xattr": "user.v"}),
          ("xattr-removed", "{w}/f", {})], files=("f",)),
    Case("lsetxattr-removexattr", "sc('lsetxattr', W + '/f', 'user.v', b'1', 1, 0)\n"
         "sc('removexattr', W + '/f', 'user.v')",
         [("xattr-changed", "{w}/f", {"vigil.file.xattr": "user.v"}),
          ("xattr-removed", "{w}/f", {"vigil.file.xattr": "user.v"})], files=("f",)),
    # ---- links, directories
    Case("link-legacy", "sc('link', W + '/a', W + '/b')",
         [("hardlink-created", "{w}/b", {"vigil.file.original_path": "{w}/a"})], files=("a",)),
    Case("linkat-dirfd", f"d = os.open(W, {O_DIRECTORY}); sc('linkat', d, 'a', d, 'b', 0)",
         [("hardlink-created", "{w}/b", {"vigil.file.original_path": "{w}/a"})], files=("a",)),
    Case("symlink-legacy", "sc('symlink', '../some/where', W + '/l')",
         [("symlink-created", "{w}/l", {"file.target_path": "../some/where"})]),
    Case("symlinkat-dirfd",
         f"d = os.open(W, {O_DIRECTORY}); sc('symlinkat', '/nonexistent/t', d, 'l')",
         [("symlink-created", "{w}/l", {"file.target_path": "/nonexistent/t"})]),
    Case("mkdir-legacy", "sc('mkdir', W + '/d', 0o750)", [("directory-created", "{w}/d", {})]),
    Case("mkdirat-dirfd", f"d = os.open(W, {O_DIRECTORY}); sc('mkdirat', d, 'd', 0o750)",
         [("directory-created", "{w}/d", {})]),
    # ---- how the path is named
    Case("relative-to-cwd", "os.chdir(W); sc('unlink', 's/f')",
         [("deleted", "{w}/s/f", {})], subdirs=("s",), files=("s/f",)),
    Case("dotdot-from-outside-cwd",
         "os.chdir(O); name = os.path.basename(W)\n"
         "fd = sc('open', '../../w/' + name + '/f', " + str(CW) + ", 0o644); os.close(fd)",
         [("created", "{w}/f", {}), ("modified", "{w}/f", {})]),
    Case("dotdot-inside-path", "sc('unlink', W + '/s/../f')",
         [("deleted", "{w}/f", {})], subdirs=("s",), files=("f",)),
    Case("open-through-symlinked-dir",
         "os.symlink(W, O + '/link')\n"
         "fd = sc('openat', AT_FDCWD, O + '/link/f', " + str(CW) + ", 0o644); os.close(fd)",
         [("created", "{w}/f", {}), ("modified", "{w}/f", {})]),
    Case("dirfd-through-symlinked-dir",
         "os.symlink(W, O + '/link'); d = os.open(O + '/link', " + str(O_DIRECTORY) + ")\n"
         "sc('unlinkat', d, 'f', 0)",
         [("deleted", "{w}/f", {})], files=("f",)),
]


# A path argument through a symlink (in the unwatched area) to the watched directory: the kernel
# resolves it into the tree, so the event must come, with the real path.
# The symlink is made before the child runs (see test_file_operation): the agent learns from its
# creation that the link leads into the watched tree. (A link made and used within the same
# few microseconds can beat that; ARCHITECTURE.md lists it among the tracepoint backend's limits.)
VIA_LINK = "L = O + '/link/'\n"
SYMLINKED_DIR_CASES = [
    Case("chmod", VIA_LINK + "sc('chmod', L + 'f', 0o600)",
         [("mode-changed", "{w}/f", {"file.mode": "0600"})], files=("f",)),
    Case("unlink", VIA_LINK + "sc('unlink', L + 'f')", [("deleted", "{w}/f", {})],
         files=("f",)),
    Case("rename", VIA_LINK + "sc('rename', L + 'a', L + 'b')",
         [("renamed", "{w}/b", {"vigil.file.original_path": "{w}/a"})], files=("a",)),
    Case("mkdir", VIA_LINK + "sc('mkdir', L + 'd', 0o755)", [("directory-created", "{w}/d", {})]),
    Case("rmdir", VIA_LINK + "sc('rmdir', L + 'd')", [("directory-deleted", "{w}/d", {})],
         subdirs=("d",)),
    Case("truncate", VIA_LINK + "sc('truncate', L + 'f', 0)", [("truncated", "{w}/f", {})],
         files=("f",)),
    Case("setxattr", VIA_LINK + "sc('setxattr', L + 'f', 'user.a', b'1', 1, 0)",
         [("xattr-changed", "{w}/f", {"vigil.file.xattr": "user.a"})], files=("f",)),
    Case("link", VIA_LINK + "sc('link', L + 'a', L + 'b')",
         [("hardlink-created", "{w}/b", {"vigil.file.original_path": "{w}/a"})], files=("a",)),
    Case("symlink", VIA_LINK + "sc('symlink', 'a', L + 's')",
         [("symlink-created", "{w}/s", {"file.target_path": "a"})]),
    Case("chown", VIA_LINK + "sc('chown', L + 'f', 4242, 4343)",
         [("owner-changed", "{w}/f", {"file.uid": "4242", "file.gid": "4343"})],
         files=("f",), as_root=True),
]
CASES += [Case("via-symlinked-dir-" + c.id, c.code, c.expect, c.files, c.subdirs,
               c.outside_files, c.as_root) for c in SYMLINKED_DIR_CASES]


# The kernel matrix's subset (`pytest -m matrix`, run on every kernel x backend by
# ./do test-kernels): one case per kind of change, through the plain and the legacy syscalls,
# small enough for a few minutes under software emulation. Cases about how a path argument is
# spelled ("..", dirfds, symlinked directories) test the tracepoint backend's text matching.
MATRIX = {
    "create-openat", "create-open-legacy", "modify-existing", "truncate", "ftruncate",
    "truncate-by-open", "create-with-trunc",
    "unlink-legacy", "unlinkat-dirfd", "unlinkat-removedir", "rename-over-existing",
    "renameat-over-existing-dirfd", "rmdir-legacy", "rename-legacy", "renameat2-noreplace",
    "move-into-tree", "move-out-of-tree", "chmod-legacy", "fchmod", "chown-legacy", "fchown",
    "setxattr", "lsetxattr-removexattr", "link-legacy", "symlink-legacy", "mkdir-legacy",
    "mkdirat-dirfd", "unlink-path-not-in-memory-yet", "move-into-tree-paths-not-in-memory-yet",
}


def _prepare(case: Case, w: Path, o: Path, user: UserIds) -> None:
    for d in case.subdirs:
        (w / d).mkdir()
        os.chown(w / d, user.uid, user.gid)
    for base, names in ((w, case.files), (o, case.outside_files)):
        for n in names:
            (base / n).write_bytes(b"content\n")
            os.chown(base / n, user.uid, user.gid)


def _under_either(w: Path, o: Path) -> Pred:
    pw, po = under(w), under(o)
    return lambda ev: pw(ev) or po(ev)


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=(*c.marks, *([pytest.mark.matrix] if c.id in MATRIX else [])))
    for c in CASES])
def test_file_operation(case: Case, agent: AgentProc, area: Area, test_user: UserIds,
                        dirs: tuple[Path, Path]) -> None:
    w, o = dirs
    _prepare(case, w, o, test_user)
    if case.id.startswith("via-symlinked-dir-"):
        os.symlink(w, o / "link")  # outside the watched tree, pointing into it
        agent.probe(w)  # a barrier: the agent has seen the link before the child uses it
    child = py_child(child_code(case.code, w, o),
                     user=None if case.as_root else test_user.ids)
    evs = of_pid(agent.settle(w, _under_either(w, o)), child.pid)
    check_events(evs, child, case.expect, w=str(w), o=str(o))


@pytest.mark.parametrize(("code", "want"), [
    (f"fd = sc('openat', AT_FDCWD, W + '/f', {CW}, 0o666); os.close(fd)",
     [("created", "0644"), ("modified", None)]),
    ("fd = sc('creat', W + '/f', 0o777); os.close(fd)", [("created", "0755"), ("modified", None)]),
    ("sc('mkdir', W + '/f', 0o777)", [("directory-created", "0755")]),
], ids=["openat", "creat", "mkdir"])
def test_created_mode_is_the_files_mode(code: str, want: list[tuple[str, str | None]],
                                        agent: AgentProc, test_user: UserIds,
                                        dirs: tuple[Path, Path]) -> None:
    """file.mode on creation is what the file got: the requested mode minus the umask (022)."""
    w, o = dirs
    child = py_child(child_code(code, w, o), user=test_user.ids)
    assert f"{(w / 'f').stat().st_mode & 0o7777:04o}" == want[0][1]
    evs = of_pid(agent.settle(w), child.pid)
    assert [(get(e, "event.action"), get(e, "file.mode")) for e in evs] == want


@pytest.mark.parametrize("call", ["fsetxattr", "fremovexattr"])
def test_fd_xattr_calls_name_the_attribute(call: str, agent: AgentProc, test_user: UserIds,
                                           dirs: tuple[Path, Path]) -> None:
    w, o = dirs
    (w / "f").write_bytes(b"x")
    os.chown(w / "f", test_user.uid, test_user.gid)
    os.setxattr(w / "f", "user.pre", b"1")
    code = ("fd = os.open(W + '/f', 0)\n"
            + ("sc('fsetxattr', fd, 'user.name', b'1', 1, 0)" if call == "fsetxattr"
               else "sc('fremovexattr', fd, 'user.pre')"))
    child = py_child(child_code(code, w, o), user=test_user.ids)
    [ev] = of_pid(agent.settle(w), child.pid)
    assert get(ev, "vigil.file.xattr") == ("user.name" if call == "fsetxattr" else "user.pre")


@pytest.mark.matrix
def test_coreutils_relative_paths(agent: AgentProc, test_user: UserIds,
                                  dirs: tuple[Path, Path]) -> None:
    """Tools as users run them: cwd inside the tree, relative names; comm/exe are the tool's."""
    w, _ = dirs
    (w / "s").mkdir()
    os.chown(w / "s", test_user.uid, test_user.gid)
    steps: list[tuple[list[str], list[tuple[str, str]]]] = [
        (["/usr/bin/touch", "s/t"], [("created", f"{w}/s/t"), ("modified", f"{w}/s/t")]),
        (["/usr/bin/chmod", "600", "s/t"], [("mode-changed", f"{w}/s/t")]),
        (["/usr/bin/mv", "s/t", "s/u"], [("renamed", f"{w}/s/u")]),
        (["/usr/bin/ln", "s/u", "s/h"], [("hardlink-created", f"{w}/s/h")]),
        (["/usr/bin/ln", "-s", "u", "s/sym"], [("symlink-created", f"{w}/s/sym")]),
        (["/usr/bin/mkdir", "s/dd"], [("directory-created", f"{w}/s/dd")]),
        (["/usr/bin/truncate", "-s", "0", "s/u"], [("truncated", f"{w}/s/u"),
                                                   ("modified", f"{w}/s/u")]),
        (["/usr/bin/rm", "-r", "s/sym", "s/h", "s/dd"],
         [("deleted", f"{w}/s/sym"), ("deleted", f"{w}/s/h"),
          ("directory-deleted", f"{w}/s/dd")]),
        (["/usr/bin/rm", "s/u"], [("deleted", f"{w}/s/u")]),
    ]
    children = [(run_child(argv, user=test_user.ids, cwd=w), want) for argv, want in steps]
    evs = agent.settle(w)
    for child, want in children:
        mine = of_pid(evs, child.pid)
        assert [(get(e, "event.action"), get(e, "file.path")) for e in mine] == want, child.comm
        for ev in mine:
            check_who(ev, child)


@pytest.mark.matrix
def test_overlayfs_close_is_one_modification(agent: AgentProc, test_user: UserIds,
                                             dirs: tuple[Path, Path]) -> None:
    """A watched tree on overlayfs (containers; the health check's /tmp under virtme-ng): a
    write-open there also opens the file of the layer below, and until 6.7 that second struct
    file carries the overlay's path. Each close must still be one "modified", by the child."""
    w, o = dirs
    lower, upper, work, merged = o / "lower", o / "upper", o / "work", w / "merged"
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "old").write_bytes(b"from the lower layer\n")
    for d in (lower, lower / "old", upper):
        os.chown(d, test_user.uid, test_user.gid)
    subprocess.run(["modprobe", "overlay"], capture_output=True, check=False)  # may be built in
    mount = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
                           capture_output=True, text=True, check=False)
    assert mount.returncode == 0, f"mounting an overlayfs failed: {mount.stderr}"
    try:
        code = ("M = W + '/merged'\n"
                "with open(M + '/new', 'w') as f: f.write('one')\n"
                "with open(M + '/new', 'a') as f: f.write('two')\n"
                "with open(M + '/old', 'a') as f: f.write('copied up')\n")
        child = py_child(child_code(code, w, o), user=test_user.ids)
        evs = of_pid(agent.settle(w), child.pid)
    finally:
        subprocess.run(["umount", str(merged)], check=False)
    assert [(get(e, "event.action"), get(e, "file.path")) for e in evs] == [
        ("created", f"{merged}/new"), ("modified", f"{merged}/new"),
        ("modified", f"{merged}/new"), ("modified", f"{merged}/old")]
    for ev in evs:
        check_who(ev, child)


def test_failed_attempts_are_reported_with_errno(agent: AgentProc, test_user: UserIds,
                                                 dirs: tuple[Path, Path]) -> None:
    """The test user against root's 0644 file in root's 0755 directory: failures, no changes."""
    w, o = dirs
    locked = w / "locked"
    locked.mkdir(mode=0o755)  # root-owned
    target = locked / "f"
    target.write_bytes(b"root's\n")
    target.chmod(0o644)
    code = ("res = dict(unlink=try_sc('unlink', W + '/locked/f'),\n"
            f"  open=try_sc('openat', AT_FDCWD, W + '/locked/f', {O_WRONLY}, 0),\n"
            "  chmod=try_sc('chmod', W + '/locked/f', 0o666),\n"
            f"  create=try_sc('open', W + '/locked/new', {CW}, 0o644))\n"
            "print(repr(res))")
    child = py_child(child_code(code, w, o), user=test_user.ids)
    results = ast.literal_eval(child.stdout.strip())
    assert results == {"unlink": errno.EACCES, "open": errno.EACCES, "chmod": errno.EPERM,
                       "create": errno.EACCES}
    assert target.read_bytes() == b"root's\n" and target.stat().st_mode & 0o777 == 0o644
    evs = of_pid(agent.settle(w), child.pid)
    got = [(get(e, "event.action"), get(e, "file.path"), get(e, "event.outcome"),
            get(e, "error.code")) for e in evs]
    want = [
        ("deleted", f"{target}", "failure", "EACCES"),
        ("opened", f"{target}", "failure", "EACCES"),
        ("mode-changed", f"{target}", "failure", "EPERM"),
        ("opened", f"{locked}/new", "failure", "EACCES"),
    ]
    backend = agent.running_backend()
    if backend != "tracepoint":
        # The VFS backends see an open at file_open, which a refused open never reaches; only
        # because the product says so (vigil doctor) may the test expect it.
        assert any(gap.startswith("failed opens") for gap in hooks.BLIND_SPOTS[backend])
        want = [w for w in want if w[0] != "opened"]
    assert got == want
    for ev in evs:
        check_who(ev, child)


def test_nothing_outside_the_watched_tree(agent: AgentProc, area: Area, test_user: UserIds,
                                          dirs: tuple[Path, Path]) -> None:
    w, o = dirs
    code = ("fd = sc('openat', AT_FDCWD, O + '/a', " + str(CW) + ", 0o644)\n"
            "os.write(fd, b'x'); os.close(fd)\n"
            "sc('rename', O + '/a', O + '/b'); sc('chmod', O + '/b', 0o600)\n"
            "sc('truncate', O + '/b', 0); sc('link', O + '/b', O + '/c')\n"
            "sc('symlink', W + '/nothing', O + '/l'); sc('mkdir', O + '/d', 0o755)\n"
            "sc('setxattr', O + '/b', 'user.x', b'1', 1, 0)\n"
            "sc('rmdir', O + '/d'); sc('unlink', O + '/b'); sc('unlink', O + '/c')\n"
            "sc('unlink', O + '/l')")
    child = py_child(child_code(code, w, o), user=test_user.ids)
    # A later event in the watched tree, then everything the agent said about this child.
    agent.settle(w)
    assert of_pid(agent.matching(lambda e: get(e, "event.dataset") == "vigil.file"),
                  child.pid) == []
    assert agent.matching(under(o)) == []
    # Nothing anywhere outside the tree either, except the moves out of it (old path inside)
    # and paths the kernel could not walk to their end (path_truncated: kept because they may
    # be inside, vigil/events/truncated.py; other modules' deep directories, made under the
    # shared outside area while this agent runs, are such paths).
    inside = under(area.watched)
    leaked = [e for e in agent.matching(under(area.outside))
              if not inside(e) and not get(e, "vigil.file.path_truncated")]
    assert leaked == [], [(get(e, "event.action"), get(e, "file.path"), get(e, "process.pid"),
                           get(e, "process.executable"), get(e, "vigil.file")) for e in leaked]


@pytest.mark.parametrize("via", ["/proc/self/cwd/", "/dev/fd/{fd}/"],
                         ids=["proc-self-cwd", "dev-fd"])
def test_magic_link_paths_are_not_an_escape(via: str, agent: AgentProc, test_user: UserIds,
                                            dirs: tuple[Path, Path]) -> None:
    """/proc/self/cwd and /dev/fd/N lead anywhere: the kernel must not judge them by their text,
    and user space must resolve them as the acting process saw them (not as the agent does)."""
    w, o = dirs
    (w / "f").write_bytes(b"x")
    os.chown(w / "f", test_user.uid, test_user.gid)
    code = ("os.chdir(W)\nfd = os.open(W, os.O_RDONLY)\n"
            f"sc('unlink', {via!r}.format(fd=fd) + 'f')\n"
            "time.sleep(1.5)  # alive while the agent resolves its /proc entries\n")
    child = py_child(child_code("import time\n" + code, w, o), user=test_user.ids)
    evs = of_pid(agent.settle(w), child.pid)
    assert [(get(e, "event.action"), get(e, "file.path")) for e in evs] == [
        ("deleted", f"{w}/f")]
