"""The user-space hook mechanism (vigil.kernel.uprobes) on real binaries and the real kernel:
the uretprobe program attached by binary path and symbol, for each way a binary can have its
readline: exported (libbpf finds it by name), imported from libreadline (the hook goes on the
library), or only in a stripped binary's ``.gnu_debugdata`` (attached at the offset found
here); and a binary where it cannot be found, said so."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil.events.layout import Clock, Decoder
from vigil.events.model import ShellEvent
from vigil.kernel import uprobes
from vigil.kernel.btf_source import resolve_btf
from vigil.kernel.loader import BpfObjectSpec, LoadedObject, bundled_object
from vigil.kernel.ringbuf import RingReader

pytestmark = [pytest.mark.root, pytest.mark.matrix]

RING = 1 << 20
LOOP = r"""
#include <stdio.h>
#include <stdlib.h>
%s
int main(void) {
    char *l;
    while ((l = readline("")) != NULL) { fprintf(stderr, "%%zu\n", strlen(l)); free(l); }
    return 0;
}
"""
WITH_LIBREADLINE = LOOP % "#include <string.h>\n#include <readline/readline.h>"
# A readline of its own, not exported: only a symbol table names it
OWN = LOOP % r"""#include <string.h>
__attribute__((noinline)) char *readline(const char *prompt) {
    char *line = NULL; size_t n = 0; ssize_t r = getline(&line, &n, stdin);
    (void)prompt;
    if (r < 0) { free(line); return NULL; }
    if (r > 0 && line[r - 1] == '\n') line[r - 1] = 0;
    return line;
}"""
NONE = LOOP % r"""#include <string.h>
__attribute__((noinline)) char *rl_other(const char *p) { (void)p; return NULL; }
#define readline rl_other"""


def _cc(tmp: Path, name: str, src: str, *flags: str) -> Path:
    if shutil.which("cc") is None:
        pytest.fail("needs a C compiler (./do installs gcc)")
    (tmp / f"{name}.c").write_text(src)
    subprocess.run(["cc", "-O1", "-o", str(tmp / name), str(tmp / f"{name}.c"), *flags],
                   check=True, capture_output=True)
    return tmp / name


def _minidebuginfo(binary: Path) -> None:
    """Fedora's MiniDebugInfo: the function symbols moved into an xz-compressed ELF in the
    section .gnu_debugdata, the binary stripped (gdb's documented recipe)."""
    d = binary.parent
    mini, keep = d / f"{binary.name}.mini", d / f"{binary.name}.keep"
    funcs = subprocess.run(["nm", "--format=posix", "--defined-only", str(binary)],
                           check=True, capture_output=True, text=True).stdout
    keep.write_text("".join(f"{ln.split()[0]}\n" for ln in funcs.splitlines()
                            if len(ln.split()) > 1 and ln.split()[1] in "Tt"))
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(mini)], check=True)
    subprocess.run(["objcopy", "-S", "--remove-section", ".comment",
                    f"--keep-symbols={keep}", str(mini)], check=True)
    subprocess.run(["strip", "--strip-all", "-R", ".comment", str(binary)], check=True)
    subprocess.run(["xz", "-f", str(mini)], check=True)
    subprocess.run(["objcopy", "--add-section", f".gnu_debugdata={mini}.xz", str(binary)],
                   check=True)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("uprobes")
    if not Path("/usr/include/readline/readline.h").exists():
        pytest.fail("needs libreadline-dev (./do installs it)")
    own = _cc(tmp, "rl_own", OWN)
    _minidebuginfo(own)
    return {"lib": _cc(tmp, "rl_lib", WITH_LIBREADLINE, "-lreadline"), "own": own,
            "none": _cc(tmp, "rl_none", NONE), "text": Path("/etc/hostname")}


@pytest.fixture(scope="module")
def obj() -> Iterator[LoadedObject]:
    # relocated against the BTF the agent would use (the kernel's, or a tailored one)
    with BpfObjectSpec.open(bundled_object("vigil"),
                            btf_custom_path=resolve_btf().custom_path) as spec:
        for p in spec.programs:
            # and the tail-call targets (bare "tracepoint"): libbpf fills their table at load
            spec.set_autoload(p.name, p.name in uprobes.programs() or p.section == "tracepoint")
        spec.set_max_entries("events", RING)
        loaded = spec.load()
    with loaded:
        yield loaded


def _hook(path: Path) -> uprobes.UserHook:
    h = uprobes.HOOKS[0]
    return uprobes.UserHook("test", h.program, h.symbol, (str(path),), (), h.libraries,
                            h.retprobe)


def _lines(obj: LoadedObject, binary: Path, lines: list[bytes]) -> tuple[int, list[ShellEvent]]:
    decoder = Decoder(Clock.now())
    with RingReader(obj.map_fd("events"), RING) as ring:
        list(ring.drain())
        # a session of its own: no controlling terminal (a VM's test runner has a console)
        p = subprocess.run([str(binary)], input=b"".join(ln + b"\n" for ln in lines),
                           check=True, capture_output=True, start_new_session=True)
        # (libreadline echoes the lines on stdout when it is no terminal)
        assert p.stderr.split() == [str(len(ln)).encode() for ln in lines]
        pid = 0
        out: list[ShellEvent] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for ev in decoder.decode_batch(ring.drain()):
                if isinstance(ev, ShellEvent) and ev.process.comm == binary.name.encode()[:15]:
                    out.append(ev)
                    pid = ev.process.pid
            if len(out) >= len([ln for ln in lines if ln]):
                break
            ring.wait(0.1)
    return pid, out


@pytest.mark.parametrize("kind, found_in", [("lib", "libreadline.so.8 (.dynsym)"),
                                            ("own", ".gnu_debugdata")])
def test_attached_and_lines_reported(obj: LoadedObject, programs: dict[str, Path], kind: str,
                                     found_in: str) -> None:
    binary = programs[kind]
    [t] = uprobes.attach_hooks(obj, [_hook(binary)], roots=[])
    assert (t.status, t.found_in) == ("attached", found_in), t.line()
    if kind == "lib":
        assert t.attach_path is not None and Path(t.attach_path).name.startswith("libreadline")
        assert t.by_name
    else:
        assert t.attach_path == str(binary) and not t.by_name and t.offset
    lines = [b"first line", b"", b"echo binary >> /dev/null", b"\xff not utf-8"]
    _pid, evs = _lines(obj, binary, lines)
    assert [e.command for e in evs] == [ln for ln in lines if ln]
    assert all(e.process.executable is None and e.tty_name == "" for e in evs)   # no pty


def test_not_found_is_said(programs: dict[str, Path]) -> None:
    t = uprobes.resolve(_hook(programs["none"]), str(programs["none"]))
    assert t.status == "symbol-not-found"
    assert "in none of .dynsym, .symtab, .gnu_debugdata" in t.detail
    t = uprobes.resolve(_hook(programs["text"]), str(programs["text"]))
    assert t.status == "not-elf"
