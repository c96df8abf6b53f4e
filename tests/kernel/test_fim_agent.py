"""File integrity monitoring inside the real ``vigil run``: what a FIM user checks (issue 3).

Every test drives the real agent on this kernel with a real SQLite baseline: realtime events with
the writer's who-data, content diffs, write-to-temp-then-rename (the real ``sed -i`` and an
editor-style save), changes made while the agent was stopped, drops followed by a rescan, and
names that are not valid UTF-8. Each test uses its own agent(s), scratch tree under /var/tmp and
``--db``, so the session agent of the other kernel tests is never disturbed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import shutil
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from agent_proc import (
    VIGIL,
    AgentProc,
    Child,
    Event,
    Pred,
    UserIds,
    get,
    py_child,
    run_child,
    write_config,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs the real eBPF agent"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="children use x86_64 syscalls"),
    pytest.mark.skipif(not VIGIL.exists(), reason=f"{VIGIL} missing: run ./do setup"),
]

SED = "/usr/bin/sed"
WAIT = 10.0  # seconds for one FIM event (a new file settles after a 0.5 s quiet period)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(path: bytes) -> str:
    return base64.b64encode(path).decode("ascii")


def is_fim(ev: Event) -> bool:
    return get(ev, "event.dataset") == "vigil.fim"


def fim_at(path: str | Path, action: str | None = None) -> Pred:
    p = str(path)

    def pred(ev: Event) -> bool:
        return (is_fim(ev) and get(ev, "file.path") == p
                and (action is None or get(ev, "event.action") == action))

    return pred


def fim_under(directory: Path) -> Pred:
    d = str(directory)

    def pred(ev: Event) -> bool:
        path = get(ev, "file.path")
        return is_fim(ev) and isinstance(path, str) and (path == d or path.startswith(d + "/"))

    return pred


def check_who(ev: Event, child: Child, user_name: str) -> None:
    """The FIM event carries the writer's who-data."""
    assert get(ev, "vigil.fim.who_data") == "known"
    assert get(ev, "process.pid") == child.pid
    assert get(ev, "process.parent.pid") == child.ppid
    assert get(ev, "process.name") == child.comm
    assert get(ev, "process.executable") == child.exe
    assert get(ev, "user.id") == str(child.uid)
    assert get(ev, "process.user.id") == str(child.uid)
    assert get(ev, "user.name") == user_name


def check_no_who(ev: Event) -> None:
    assert get(ev, "vigil.fim.who_data") == "unknown"
    assert "process" not in ev and "user" not in ev
    assert "process" not in get(ev, "vigil", {})


# ---------------------------------------------------------------------------------------------
# Agents with -v (the "initial-scan: ..." / "startup-scan: ..." / "rescan: ..." log lines)


@dataclass
class VerboseAgent(AgentProc):
    """AgentProc run as ``vigil -v run ...`` so that scan completions are logged on stderr."""

    verbose: bool = True

    def stop_ok(self) -> None:
        rc, summary = self.stop(timeout=60)
        assert rc == 0, "\n".join(self.stderr_lines[-20:])
        assert summary is not None, "\n".join(self.stderr_lines[-20:])


def keep_useful(ev: Event) -> bool:
    """FIM events, drop reports and raw file events (exec/exit are not needed here)."""
    return get(ev, "event.dataset") in ("vigil.fim", "vigil.file", "vigil.agent")


def scratch_dir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")).resolve()
    d.chmod(0o755)
    return d


# ---------------------------------------------------------------------------------------------
# One agent for the realtime tests (1, 2, 3, 6): a plain tree and a report_changes tree


@dataclass
class Fim:
    agent: VerboseAgent
    root: Path
    plain: Path  # watched, no content diffs
    diffs: Path  # watched with report_changes: true, nodiff "*.secret"
    db: Path

    def new_dir(self, name: str, owner: UserIds | None = None, in_diffs: bool = False) -> Path:
        d = (self.diffs if in_diffs else self.plain) / name
        d.mkdir()
        if owner is not None:
            os.chown(d, owner.uid, owner.gid)
        # the directory's own "added" event, so it never mixes with what the test does next
        self.agent.wait_for(fim_at(d, "added"), timeout=WAIT)
        return d


@pytest.fixture(scope="module")
def fim(test_user: UserIds) -> Iterator[Fim]:
    root = scratch_dir("vigil-fim-rt-")
    plain, diffs = root / "plain", root / "diffs"
    for d in (plain, diffs):
        d.mkdir(mode=0o755)
    cfg = write_config(root / "vigil.yaml", root, [
        {"path": str(plain)},
        {"path": str(diffs), "report_changes": True, "nodiff": ["*.secret"]},
    ])
    db = root / "state" / "baseline.db"
    agent = VerboseAgent(["--config", str(cfg)], db=db, keep=keep_useful).start()
    try:
        agent.wait_log("initial-scan:")
        agent.probe(plain, timeout=60)
        agent.probe(diffs, timeout=60)
        yield Fim(agent, root, plain, diffs, db)
        agent.stop_ok()
    finally:
        agent.stop()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# 1. Realtime events with who-data


def test_realtime_every_action_with_who_data(fim: Fim, test_user: UserIds) -> None:
    d = fim.new_dir("t1", owner=test_user)
    f, g, sub = d / "f.conf", d / "g.conf", d / "sub"
    a, b = b"alpha\n", b"beta beta beta\n" * 3
    user = test_user.ids

    # added: by the unprivileged user, hashed
    c = py_child(f"with open({str(f)!r}, 'wb') as fh: fh.write({a!r})", user=user)
    (ev,) = fim.agent.wait_for(fim_at(f, "added"), timeout=WAIT)
    assert get(ev, "vigil.fim.source") == "realtime"
    assert get(ev, "file.hash.sha256") == sha(a)
    assert get(ev, "vigil.fim.after.sha256") == sha(a)
    assert get(ev, "vigil.fim.before") is None
    assert get(ev, "file.size") == len(a)
    assert get(ev, "file.type") == "file"
    check_who(ev, c, test_user.name)

    # modified: several writes, one event, before/after hashes, the writer's who-data
    c = py_child(f"fd = os.open({str(f)!r}, os.O_WRONLY | os.O_TRUNC)\n"
                 f"for part in {[b[:10], b[10:20], b[20:]]!r}:\n"
                 "    os.write(fd, part)\n"
                 "os.close(fd)", user=user)
    (ev,) = fim.agent.wait_for(fim_at(f, "modified"), timeout=WAIT)
    changed = get(ev, "vigil.fim.changed_attributes")
    assert {"sha256", "size"} <= set(changed), changed
    assert get(ev, "vigil.fim.before.sha256") == sha(a)
    assert get(ev, "vigil.fim.after.sha256") == sha(b)
    assert get(ev, "file.hash.sha256") == sha(b)
    assert get(ev, "vigil.fim.before.size") == len(a)
    assert get(ev, "vigil.fim.after.size") == len(b)
    assert get(ev, "vigil.fim.diff") is None  # no report_changes here
    check_who(ev, c, test_user.name)

    # chmod: attributes-changed, mode only
    c = py_child(f"os.chmod({str(f)!r}, 0o600)", user=user)
    (ev,) = fim.agent.wait_for(fim_at(f, "attributes-changed"), timeout=WAIT)
    assert get(ev, "vigil.fim.changed_attributes") == ["mode"]
    assert get(ev, "vigil.fim.before.mode") == "0644"
    assert get(ev, "vigil.fim.after.mode") == "0600"
    assert get(ev, "file.mode") == "0600"
    check_who(ev, c, test_user.name)

    # chown (root): attributes-changed, uid and gid, owner names
    c = py_child(f"os.chown({str(f)!r}, 0, 0)")
    evs = fim.agent.wait_for(fim_at(f, "attributes-changed"), timeout=WAIT, count=2)
    ev = evs[1]
    assert set(get(ev, "vigil.fim.changed_attributes")) == {"uid", "gid"}
    assert get(ev, "vigil.fim.before.uid") == test_user.uid
    assert get(ev, "vigil.fim.before.owner") == test_user.name
    assert get(ev, "vigil.fim.after.uid") == 0
    assert get(ev, "vigil.fim.after.owner") == "root"
    assert get(ev, "file.uid") == "0"
    assert get(ev, "file.owner") == "root"
    check_who(ev, c, "root")

    # rename: one "renamed" event on the new path with the old one
    c = py_child(f"os.rename({str(f)!r}, {str(g)!r})")
    (ev,) = fim.agent.wait_for(fim_at(g, "renamed"), timeout=WAIT)
    assert get(ev, "vigil.fim.old_path") == str(f)
    assert get(ev, "file.hash.sha256") == sha(b)
    check_who(ev, c, "root")

    # delete
    c = py_child(f"os.unlink({str(g)!r})")
    (ev,) = fim.agent.wait_for(fim_at(g, "deleted"), timeout=WAIT)
    assert get(ev, "vigil.fim.before.sha256") == sha(b)
    assert get(ev, "vigil.fim.after") is None
    check_who(ev, c, "root")

    # mkdir / rmdir
    c = py_child(f"os.mkdir({str(sub)!r}, 0o750)", user=user)
    (ev,) = fim.agent.wait_for(fim_at(sub, "added"), timeout=WAIT)
    assert get(ev, "file.type") == "dir"
    assert get(ev, "file.mode") == "0750"
    check_who(ev, c, test_user.name)
    c = py_child(f"os.rmdir({str(sub)!r})", user=user)
    (ev,) = fim.agent.wait_for(fim_at(sub, "deleted"), timeout=WAIT)
    assert get(ev, "vigil.fim.before.type") == "dir"
    check_who(ev, c, test_user.name)

    # nothing else: no duplicate or stray FIM event for the test's files
    fim.agent.settle(d)
    got = [(get(e, "event.action"), get(e, "file.path"))
           for e in fim.agent.matching(fim_under(d)) if get(e, "file.path") != str(d)]
    assert got == [("added", str(f)), ("modified", str(f)), ("attributes-changed", str(f)),
                   ("attributes-changed", str(f)), ("renamed", str(g)), ("deleted", str(g)),
                   ("added", str(sub)), ("deleted", str(sub))]


# ---------------------------------------------------------------------------------------------
# 2. report_changes: text diffs, binary changes, nodiff


def stored_content(db: Path, path: Path) -> bytes | None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute("SELECT data FROM content WHERE path = ?",
                          (os.fsencode(path),)).fetchone()
    finally:
        con.close()
    return None if row is None else zlib.decompress(row[0])  # stored compressed


def test_report_changes_diffs(fim: Fim) -> None:
    d = fim.new_dir("t2", in_diffs=True)
    text, binary, secret = d / "app.conf", d / "blob.bin", d / "db.secret"
    old_text = b"# settings\nport = 80\nuser = www\n"
    new_text = b"# settings\nport = 8080\nuser = www\n"
    old_bin, new_bin = bytes(range(256)) * 4, bytes(reversed(range(256))) * 4
    old_secret, new_secret = b"password = hunter2\n", b"password = correct horse\n"

    for p, data in ((text, old_text), (binary, old_bin), (secret, old_secret)):
        p.write_bytes(data)
    for p in (text, binary, secret):
        fim.agent.wait_for(fim_at(p, "added"), timeout=WAIT)
    for p, data in ((text, new_text), (binary, new_bin), (secret, new_secret)):
        p.write_bytes(data)

    (ev,) = fim.agent.wait_for(fim_at(text, "modified"), timeout=WAIT)
    diff = get(ev, "vigil.fim.diff")
    assert isinstance(diff, str), ev
    lines = diff.splitlines()
    assert "-port = 80" in lines and "+port = 8080" in lines, diff
    assert " # settings" in lines and " user = www" in lines, diff
    assert not any(ln.startswith(("-user", "+user", "-#", "+#")) for ln in lines), diff

    (ev,) = fim.agent.wait_for(fim_at(binary, "modified"), timeout=WAIT)
    assert get(ev, "vigil.fim.diff") == "binary"
    assert get(ev, "vigil.fim.after.sha256") == sha(new_bin)

    (ev,) = fim.agent.wait_for(fim_at(secret, "modified"), timeout=WAIT)
    assert get(ev, "vigil.fim.diff") is None
    assert get(ev, "vigil.fim.after.sha256") == sha(new_secret)  # still hashed
    # the event never shows the content, and the baseline never stores it
    flat = repr(ev)
    assert "hunter2" not in flat and "correct horse" not in flat
    assert stored_content(fim.db, secret) is None
    assert stored_content(fim.db, text) == new_text  # the query does find stored contents


# ---------------------------------------------------------------------------------------------
# 3. Write-to-temp-then-rename: sed -i and an editor-style save


def only_target_events(fim: Fim, d: Path, since: int) -> list[Event]:
    """Every FIM event under ``d`` after index ``since``, once a quiet period has passed (a
    temp file would have been settled and reported by then)."""
    time.sleep(1.0)
    fim.agent.settle(d)
    return [e for e in fim.agent.matching(fim_under(d))[since:] if get(e, "file.path") != str(d)]


def test_sed_in_place_is_one_modification(fim: Fim) -> None:
    d = fim.new_dir("t3sed")
    target = d / "hosts.conf"
    old, new = b"alpha 1\nbeta 2\ngamma 3\n", b"alpha 1\nBETA 2\ngamma 3\n"
    target.write_bytes(old)
    target.chmod(0o640)
    fim.agent.wait_for(fim_at(target, "added"), timeout=WAIT)
    since = len(fim.agent.matching(fim_under(d)))

    c = run_child([SED, "-i", "s/beta/BETA/", str(target)], cwd=d)
    assert target.read_bytes() == new

    (ev,) = fim.agent.wait_for(fim_at(target, "modified"), timeout=WAIT)
    evs = only_target_events(fim, d, since)
    assert [(get(e, "event.action"), get(e, "file.path")) for e in evs] == \
        [("modified", str(target))], "sed's temp file must not show up as added/deleted"
    assert get(ev, "vigil.fim.before.sha256") == sha(old)
    assert get(ev, "vigil.fim.after.sha256") == sha(new)
    assert "sha256" in get(ev, "vigil.fim.changed_attributes")
    assert get(ev, "file.mode") == "0640"  # sed keeps the mode
    assert get(ev, "process.name") == "sed"
    check_who(ev, c, "root")


EDITOR_SAVE = """
import os
target = {target!r}
tmp = os.path.join(os.path.dirname(target), '.' + os.path.basename(target) + '.tmp-save')
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, {data!r})
os.fchmod(fd, 0o644)
os.fsync(fd)
os.close(fd)
os.rename(tmp, target)
dfd = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
os.fsync(dfd)
os.close(dfd)
"""


def test_editor_style_save_is_one_modification(fim: Fim, test_user: UserIds) -> None:
    d = fim.new_dir("t3editor", owner=test_user)
    target = d / "notes.txt"
    old, new = b"first draft\n", b"second draft, longer\n"
    py_child(f"open({str(target)!r}, 'wb').write({old!r})", user=test_user.ids)
    fim.agent.wait_for(fim_at(target, "added"), timeout=WAIT)
    since = len(fim.agent.matching(fim_under(d)))

    c = py_child(EDITOR_SAVE.format(target=str(target), data=new), user=test_user.ids)
    assert target.read_bytes() == new

    (ev,) = fim.agent.wait_for(fim_at(target, "modified"), timeout=WAIT)
    evs = only_target_events(fim, d, since)
    assert [(get(e, "event.action"), get(e, "file.path")) for e in evs] == \
        [("modified", str(target))], "the temp file must not show up as added/deleted"
    assert get(ev, "vigil.fim.before.sha256") == sha(old)
    assert get(ev, "vigil.fim.after.sha256") == sha(new)
    assert {"sha256", "size", "inode"} <= set(get(ev, "vigil.fim.changed_attributes"))
    check_who(ev, c, test_user.name)


# ---------------------------------------------------------------------------------------------
# 6. Names with a newline and invalid UTF-8


def test_names_not_utf8_round_trip(fim: Fim) -> None:
    d = fim.new_dir("t6")
    dirb = os.fsencode(d)
    bad = dirb + b"/bad\xff\nname"
    worse = dirb + b"/new\xfe\tname\n"
    data = b"content\n"
    c = py_child(f"fd = os.open({bad!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
                 f"os.write(fd, {data!r})\nos.close(fd)")

    def fim_b(path: bytes, action: str) -> Pred:
        return lambda e: (is_fim(e) and get(e, "event.action") == action
                          and get(e, "file.path_bytes_b64") == b64(path))

    (ev,) = fim.agent.wait_for(fim_b(bad, "added"), timeout=WAIT)
    assert base64.b64decode(get(ev, "file.path_bytes_b64")) == bad
    assert get(ev, "file.path") == bad.decode("utf-8", "replace")
    assert "\n" in get(ev, "file.path") and "\ufffd" in get(ev, "file.path")
    assert get(ev, "file.hash.sha256") == sha(data)
    check_who(ev, c, "root")
    raw = fim.agent.matching(lambda e: get(e, "event.dataset") == "vigil.file"
                             and get(e, "event.action") == "created"
                             and get(e, "file.path_bytes_b64") == b64(bad))
    assert raw, "the raw created event must carry the exact name too"
    assert base64.b64decode(get(raw[0], "file.path_bytes_b64")) == bad

    os.rename(bad, worse)
    (ev,) = fim.agent.wait_for(fim_b(worse, "renamed"), timeout=WAIT)
    assert base64.b64decode(get(ev, "vigil.fim.old_path_bytes_b64")) == bad
    os.unlink(worse)
    (ev,) = fim.agent.wait_for(fim_b(worse, "deleted"), timeout=WAIT)
    assert base64.b64decode(get(ev, "file.path_bytes_b64")) == worse


# ---------------------------------------------------------------------------------------------
# 4. Changes made while the agent was stopped


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = scratch_dir("vigil-fim-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_changes_while_stopped_reported_at_start(scratch: Path) -> None:
    w = scratch / "w"
    (w / "sub").mkdir(parents=True)
    files = {n: w / n for n in ("keep.txt", "mod.txt", "del.txt", "perm.txt")}
    for n, p in files.items():
        p.write_bytes(f"{n} original\n".encode())
        p.chmod(0o644)
    (w / "sub" / "deep.txt").write_bytes(b"deep original\n")
    db = scratch / "state" / "baseline.db"
    args = ["--no-exec", "--watch", str(w)]

    first = VerboseAgent(args, db=db, keep=keep_useful).start()
    try:
        first.wait_log("initial-scan:")
        first.probe(w, timeout=60)
    finally:
        first.stop_ok()
    # the first baseline is not a list of changes: one event says it was established
    est = [(get(e, "event.action"), get(e, "file.path")) for e in first.matching(is_fim)]
    assert est == [("baseline-established", str(w))], est

    # while stopped
    files["mod.txt"].write_bytes(b"mod.txt changed while vigil was stopped\n")
    files["del.txt"].unlink()
    files["perm.txt"].chmod(0o600)
    (w / "new.txt").write_bytes(b"new\n")
    (w / "sub" / "deep.txt").write_bytes(b"deep changed too\n")

    second = VerboseAgent(args, db=db, keep=keep_useful).start()
    try:
        second.wait_log("startup-scan:")
        second.probe(w, timeout=60)
        time.sleep(0.3)
        evs = second.matching(is_fim)
    finally:
        second.stop_ok()

    for ev in evs:
        assert get(ev, "vigil.fim.source") == "startup-scan", ev
        check_no_who(ev)
    got = {get(e, "file.path"): get(e, "event.action") for e in evs
           if get(e, "file.type") != "dir"}
    assert got == {
        str(files["mod.txt"]): "modified",
        str(files["del.txt"]): "deleted",
        str(files["perm.txt"]): "attributes-changed",
        str(w / "new.txt"): "added",
        str(w / "sub" / "deep.txt"): "modified",
    }
    assert len([e for e in evs if get(e, "file.type") != "dir"]) == len(got), "duplicates"
    # directories: at most the one whose entries changed (its mtime)
    dirs = [e for e in evs if get(e, "file.type") == "dir"]
    for e in dirs:
        assert get(e, "file.path") == str(w), e
        assert get(e, "event.action") == "attributes-changed"
        assert set(get(e, "vigil.fim.changed_attributes")) <= {"mtime", "size"}

    by_path = {get(e, "file.path"): e for e in evs}
    ev = by_path[str(files["mod.txt"])]
    assert get(ev, "vigil.fim.before.sha256") == sha(b"mod.txt original\n")
    assert get(ev, "vigil.fim.after.sha256") == sha(b"mod.txt changed while vigil was stopped\n")
    ev = by_path[str(files["perm.txt"])]
    assert get(ev, "vigil.fim.changed_attributes") == ["mode"]
    assert get(ev, "vigil.fim.after.mode") == "0600"
    ev = by_path[str(files["del.txt"])]
    assert get(ev, "vigil.fim.before.sha256") == sha(b"del.txt original\n")
    assert get(by_path[str(w / "new.txt")], "file.hash.sha256") == sha(b"new\n")


# ---------------------------------------------------------------------------------------------
# 5. Drops followed by a rescan

BURST = """
flags = os.O_CREAT | os.O_WRONLY
def burst(n, tag):
    for i in range(n):
        p = W + '/tmp-' + tag + str(i)
        os.close(os.open(p, flags, 0o644))
        os.unlink(p)
burst({half}, 'a')
with open(VICTIM, 'r+b') as fh:
    fh.write({data!r})
    fh.truncate()
burst({half}, 'b')
"""


def test_drops_followed_by_rescan(scratch: Path) -> None:
    w, outside = scratch / "w", scratch / "o"
    w.mkdir()
    outside.mkdir()
    victim, silent = w / "victim.conf", w / "silent.conf"
    victim.write_bytes(b"victim original\n")
    silent.write_bytes(b"silent original\n")
    link = outside / "silent-link"
    os.link(silent, link)  # writes through this name are invisible to the kernel watch
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(w)}], ring_buffer_mb=1)

    def keep(ev: Event) -> bool:
        if get(ev, "event.dataset") == "vigil.file":
            path = str(get(ev, "file.path", ""))
            return ".vigil-probe-" in path or path in (str(victim), str(silent))
        return keep_useful(ev)

    agent = VerboseAgent(["--no-exec", "--config", str(cfg)], db=scratch / "state" /
                         "baseline.db", keep=keep).start()
    new_victim = b"victim changed during the burst\n"
    new_silent = b"silent changed through an unwatched hard link\n"
    try:
        agent.wait_log("initial-scan:")
        agent.probe(w, timeout=60)
        # a change only a scan can see: nothing may report it before the drops
        link.write_bytes(new_silent)
        agent.settle(w)
        assert not agent.matching(fim_at(silent)), "the kernel watch saw a write via a " \
            "hard link outside the tree: this test's premise is wrong"

        child = py_child(f"W = {str(w)!r}\nVICTIM = {str(victim)!r}\n"
                         + BURST.format(half=25_000, data=new_victim), timeout=120)
        lost = agent.wait_for(lambda e: get(e, "event.action") == "events-lost", timeout=10)
        assert sum(get(e, "vigil.drops.count") for e in lost) > 0
        agent.wait_log("rescan:", timeout=60)
        silent_ev = agent.wait_for(fim_at(silent, "modified"), timeout=30)
        victim_evs = agent.wait_for(fim_at(victim, "modified"), timeout=30)
        agent.settle(w)
    finally:
        agent.stop_ok()

    # the change no kernel event announced: found by the rescan after the drops
    (ev,) = silent_ev
    assert get(ev, "vigil.fim.source") == "rescan"
    assert get(ev, "vigil.fim.before.sha256") == sha(b"silent original\n")
    assert get(ev, "vigil.fim.after.sha256") == sha(new_silent)
    check_no_who(ev)

    # the change made during the burst: realtime when its kernel event survived, else rescan
    raw = [e for e in agent.events if get(e, "event.dataset") == "vigil.file"
           and get(e, "file.path") == str(victim) and get(e, "process.pid") == child.pid]
    sources = {get(e, "vigil.fim.source") for e in victim_evs}
    print(f"\nvictim: raw events {[get(e, 'event.action') for e in raw]}, FIM sources {sources}")
    assert sources <= {"realtime", "rescan"}
    for ev in victim_evs:
        assert get(ev, "vigil.fim.before.sha256") == sha(b"victim original\n")
        assert get(ev, "vigil.fim.after.sha256") == sha(new_victim)
        if get(ev, "vigil.fim.source") == "realtime":
            assert get(ev, "process.pid") == child.pid
        else:
            check_no_who(ev)
    if not any(get(e, "event.action") in ("modified", "truncated") for e in raw):
        assert "rescan" in sources, "the write's kernel event was dropped: only a rescan can " \
            "report it"


SLOW_SAVE = """
import os, time
target = {target!r}
tmp = target + '.dpkg-new'
with open(tmp, 'wb') as fh:
    fh.write({data!r})
    fh.flush()
    os.fsync(fh.fileno())
time.sleep(1.5)  # dpkg unpacks every file of a package first and renames them at the end
os.rename(tmp, target)
"""


def test_slow_temp_then_rename_is_a_modification(fim: Fim) -> None:
    """A temp file that outlives the quiet period before it replaces the target (dpkg's
    ``.dpkg-new`` files, an editor that pauses) is still a modification of the target."""
    d = fim.new_dir("t3slow")
    target = d / "pkg.conf"
    old, new = b"version 1\n", b"version 2 with more\n"
    target.write_bytes(old)
    fim.agent.wait_for(fim_at(target, "added"), timeout=WAIT)
    since = len(fim.agent.matching(fim_under(d)))

    c = py_child(SLOW_SAVE.format(target=str(target), data=new))
    fim.agent.wait_for(fim_at(target), timeout=WAIT)
    # the temp file lived long enough to be a file of the tree ("added"); what matters is that
    # the target is reported modified, against its own previous state
    evs = [e for e in only_target_events(fim, d, since) if get(e, "file.path") == str(target)]
    got = [(get(e, "event.action"), get(e, "file.path")) for e in evs]
    assert got == [("modified", str(target))], got
    (ev,) = evs
    assert get(ev, "vigil.fim.before.sha256") == sha(old)
    assert get(ev, "vigil.fim.after.sha256") == sha(new)
    check_who(ev, c, "root")


def test_rename_then_delete_is_not_silent(fim: Fim) -> None:
    """``mv conf x && rm x`` in quick succession: the baselined file is gone, so some FIM event
    must say so (renamed + deleted, or deleted), never none at all."""
    d = fim.new_dir("t1mvrm")
    conf, tmp = d / "important.conf", d / "x"
    conf.write_bytes(b"keep me\n")
    fim.agent.wait_for(fim_at(conf, "added"), timeout=WAIT)
    since = len(fim.agent.matching(fim_under(d)))

    py_child(f"os.rename({str(conf)!r}, {str(tmp)!r})\nos.unlink({str(tmp)!r})")
    evs = only_target_events(fim, d, since)
    got = [(get(e, "event.action"), get(e, "file.path"), get(e, "vigil.fim.old_path"))
           for e in evs]
    # the raw events do show both operations
    raw = [get(e, "event.action") for e in fim.agent.matching(
        lambda e: get(e, "event.dataset") == "vigil.file"
        and get(e, "file.path") == str(tmp))]
    assert raw == ["renamed", "deleted"], raw
    assert got in ([("deleted", str(conf), None)],
                   [("renamed", str(tmp), str(conf)), ("deleted", str(tmp), None)]), got


def test_scheduled_scan_finds_what_no_event_showed(scratch: Path) -> None:
    """`scan.interval`: the agent walks the trees again on schedule and reports, with source
    "scheduled-scan" and no who-data, a change no kernel event could attribute (a write through
    a hard link outside the watched tree)."""
    w, outside = scratch / "w", scratch / "o"
    w.mkdir()
    outside.mkdir()
    silent = w / "silent.conf"
    silent.write_bytes(b"before\n")
    os.link(silent, outside / "alias")
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(w)}])
    data = yaml.safe_load(cfg.read_text())
    data["scan"] = {"interval": 3}
    cfg.write_text(yaml.safe_dump(data))
    agent = VerboseAgent(["--no-exec", "--config", str(cfg)],
                         db=scratch / "state" / "baseline.db", keep=keep_useful).start()
    try:
        agent.wait_log("initial-scan:")
        (outside / "alias").write_bytes(b"after, through the other name\n")
        (ev,) = agent.wait_for(fim_at(silent, "modified"), timeout=30)
    finally:
        rc, _ = agent.stop()
    assert rc == 0
    assert get(ev, "vigil.fim.source") == "scheduled-scan"
    assert get(ev, "vigil.fim.after.sha256") == sha(b"after, through the other name\n")
    check_no_who(ev)
