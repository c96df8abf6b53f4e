"""Watched trees reached through symlinks (issue 11, item 1): the kernel's watch list holds the
symlinks that lead into watched trees (vigil.watchlist), so that a path argument written
through one (``/bin/cat`` on merged /usr) is not filtered out by the tracepoint backend's text
match; events still name the canonical path, with the acting process.

Each test runs its own agent: with the embedded default configuration (merged-/usr links), or
with a configuration over a scratch tree where the symlinks exist before the agent starts (the
old "follow new symlinks" mechanism cannot know of those).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from agent_proc import VIGIL, AgentProc, Child, Event, get, is_file_event, py_child

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs the real eBPF agent"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="children use x86_64 syscalls"),
    pytest.mark.skipif(not VIGIL.exists(), reason=f"{VIGIL} missing: run ./do setup"),
]

START = float(os.environ.get("VIGIL_TEST_START_TIMEOUT", "60"))

# dpkg's replacement of an installed file, as strace shows it for `apt-get install --reinstall
# coreutils` (/bin/cat): the new version is unpacked beside it, the old one kept as a hard link
# until the rename is done. Legacy syscalls, as glibc calls them on x86_64.
DPKG_REPLAY = """
name = sys.argv[1]
fd = sc('open', name + '.dpkg-new', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o755)
os.write(fd, b'new version')
os.close(fd)
sc('link', name, name + '.dpkg-tmp')
sc('rename', name + '.dpkg-new', name)
sc('unlink', name + '.dpkg-tmp')
"""


def replay(path_through_link: str) -> Child:
    return py_child(DPKG_REPLAY.replace("sys.argv[1]", repr(path_through_link)))


def expected(real: str) -> list[tuple[str, str, str | None]]:
    """(action, file.path, vigil.file.original_path) of the replay, in order."""
    return [("created", real + ".dpkg-new", None),
            ("modified", real + ".dpkg-new", None),
            ("hardlink-created", real + ".dpkg-tmp", real),
            ("renamed", real, real + ".dpkg-new"),
            ("deleted", real + ".dpkg-tmp", None)]


def seen(events: list[Event], real: str, pid: int) -> list[tuple[str, str, str | None]]:
    names = (real, real + ".dpkg-new", real + ".dpkg-tmp")
    return [(get(e, "event.action"), get(e, "file.path"), get(e, "vigil.file.original_path"))
            for e in events if is_file_event(e) and get(e, "process.pid") == pid
            and get(e, "file.path") in names]


def start(args: list[str], db: Path, barrier: Path) -> AgentProc:
    proc = AgentProc(args, db=db).start()
    try:
        proc.probe(barrier, timeout=START)
    except AssertionError:
        proc.stop()
        raise
    return proc


def check_replay(proc: AgentProc, through: str, real: str, barrier: Path) -> None:
    child = replay(through)
    events = proc.settle(barrier, pred=lambda e: get(e, "process.pid") == child.pid)
    assert seen(events, real, child.pid) == expected(real), \
        f"events of the replay through {through}: {seen(events, real, child.pid)}"
    for e in events:
        assert get(e, "process.executable") == child.exe
        assert get(e, "user.id") == "0"


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="vigil-alias-", dir="/var/tmp")).resolve()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_embedded_config_sees_bin_through_merged_usr(scratch: Path) -> None:
    """`/bin -> usr/bin` (Debian 12): link, rename and unlink through /bin/NAME are reported
    as /usr/bin/NAME, by the process that made them."""
    if not os.path.islink("/bin") or os.path.realpath("/bin") != "/usr/bin":
        pytest.skip("this system has no merged /usr (/bin is not a symlink to /usr/bin)")
    name = f"vigil-alias-test-{os.getpid()}"
    real = f"/usr/bin/{name}"
    Path(real).write_bytes(b"old version")
    try:
        proc = start(["--no-fim"], scratch / "db", Path("/usr/bin"))
        try:
            check_replay(proc, f"/bin/{name}", real, Path("/usr/bin"))
        finally:
            rc, _ = proc.stop()
        assert rc == 0
    finally:
        for suffix in ("", ".dpkg-new", ".dpkg-tmp"):
            Path(real + suffix).unlink(missing_ok=True)


def write_config(path: Path, directories: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"exec_events": False, "directories": directories}))
    return path


def test_dpkg_replay_through_a_symlinked_directory(scratch: Path) -> None:
    """A temporary merged-/usr tree: <t>/bin -> usr/bin exists before the agent starts, beside
    the watched <t>/usr/bin (an ancestor's entry); the replay through it is seen."""
    usr_bin, usr_lib = scratch / "usr" / "bin", scratch / "usr" / "lib"
    usr_bin.mkdir(parents=True)
    usr_lib.mkdir()
    (scratch / "bin").symlink_to("usr/bin")
    (scratch / "u").symlink_to("usr")  # above the watched tree
    (usr_bin / "tool").write_bytes(b"old version")
    (usr_lib / "lib.so").write_bytes(b"old version")
    cfg = write_config(scratch / "vigil.yaml", [{"path": str(usr_bin)}])
    proc = start(["--config", str(cfg), "--no-fim"], scratch / "db", usr_bin)
    try:
        check_replay(proc, str(scratch / "bin" / "tool"), str(usr_bin / "tool"), usr_bin)
        check_replay(proc, str(scratch / "u" / "bin" / "tool"), str(usr_bin / "tool"), usr_bin)
        # The alias <t>/u lets <t>/u/lib/... through the kernel's filter; nothing is reported.
        child = replay(str(scratch / "u" / "lib" / "lib.so"))
        events = proc.settle(usr_bin, pred=lambda e: get(e, "process.pid") == child.pid)
        assert events == [], f"an alias widened what is reported: {events}"
    finally:
        rc, _ = proc.stop()
    assert rc == 0


def test_symlink_found_by_the_baseline_walk(scratch: Path) -> None:
    """A symlink in a tree watched by scheduled scans only (no kernel entry of its own) that
    points into a realtime tree: the baseline walk records it, and it becomes an alias."""
    live, slow = scratch / "live", scratch / "slow"
    live.mkdir()
    slow.mkdir()
    (slow / "into-live").symlink_to(live)
    (live / "tool").write_bytes(b"old version")
    cfg = write_config(scratch / "vigil.yaml", [{"path": str(live)},
                                                {"path": str(slow), "realtime": False}])
    proc = AgentProc(["--config", str(cfg)], db=scratch / "db", verbose=True).start()
    try:
        proc.probe(live, timeout=START)
        followed: list[str] = []
        for _ in range(100):  # the first baseline is walked in the background
            followed = [ln for ln in proc.stderr_lines if "into-live" in ln]
            if followed:
                break
            proc.probe(live)
        assert any("(baseline)" in ln for ln in followed), \
            "the agent never followed the symlink:\n" + "\n".join(proc.stderr_lines[-20:])
        check_replay(proc, str(slow / "into-live" / "tool"), str(live / "tool"), live)
    finally:
        rc, _ = proc.stop()
    assert rc == 0


def test_doctor_lists_the_aliases(scratch: Path) -> None:
    """`vigil doctor` shows the watch list a configuration gives, aliases included."""
    usr_bin = scratch / "usr" / "bin"
    usr_bin.mkdir(parents=True)
    (scratch / "bin").symlink_to("usr/bin")
    cfg = write_config(scratch / "vigil.yaml", [{"path": str(usr_bin)}])
    out = subprocess.run([str(VIGIL), "doctor", "--json", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    assert report["watch_roots"] == [str(usr_bin)]
    assert {"link": str(scratch / "bin"), "target": str(usr_bin), "found_by": "ancestor"} \
        in report["aliases"]
    text = subprocess.run([str(VIGIL), "doctor", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=120).stdout
    assert f"alias {scratch}/bin -> {usr_bin} (ancestor)" in text
