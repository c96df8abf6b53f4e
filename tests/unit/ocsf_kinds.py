"""Typed events of every kind and variant Vigil emits, for the OCSF tests
(tests/unit/test_ocsf.py): file operations, FIM changes and scan facts, exec and exit,
network operations, privilege changes, tampering, shell commands, losses and alerts."""

from __future__ import annotations

import socket
from typing import Any

from vigil.enrich.containers import ContainerInfo
from vigil.events.model import (
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileOp,
    LostEvents,
    NetEvent,
    NetOp,
    Process,
    ShellEvent,
)
from vigil.events.security import CredEvent, CredOp, Creds, SecEvent, SecOp, Target
from vigil.fim.model import FileRecord, FimEvent
from vigil.outputs.base import Output
from vigil.outputs.batch import ecs_document
from vigil.outputs.ecs import host_fields
from vigil.rules.alert import Alert, RuleInfo

T = 1_700_000_000_123_456_789
HOST = host_fields()
SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def proc(pid: int = 4242, comm: bytes = b"vim", uid: int = 1000, euid: int = 1000,
         **kw: Any) -> Process:
    fields: dict[str, Any] = dict(
        tid=pid, ppid=4000, start_time=777, parent_start_time=700, gid=uid, egid=euid,
        auid=uid, session_id=12, cgroup_id=3, mnt_ns=4026531841,
        executable=b"/usr/bin/" + comm, args=[comm, b"-n", b"a file"],
        parent_executable=b"/usr/bin/bash", parent_args=[b"bash"], user_name="alice",
        group_name="alice", euser_name="alice" if euid == 1000 else "root", enriched=True)
    fields.update(kw)
    return Process(pid=pid, uid=uid, euid=euid, comm=comm, **fields)


def creds(uid: int, caps: int = 0) -> Creds:
    return Creds(uid, uid, uid, uid, uid, uid, uid, uid, caps, caps, 0, 4026531837)


def net(op: NetOp, errno: int = 0, *, v6: bool = False, path: bytes | None = None
        ) -> NetEvent:
    if path is not None:
        return NetEvent(T, op, proc(), socket.AF_UNIX, 0, bytes(16), 0, bytes(16), 0,
                        errno=errno, path=path)
    if v6:
        lo = socket.inet_pton(socket.AF_INET6, "::1")
        return NetEvent(T, op, proc(), socket.AF_INET6, 6, lo, 40000, lo, 8080, errno=errno)
    here = socket.inet_aton("127.0.0.1") + bytes(12)
    peer = socket.inet_aton("127.0.0.2") + bytes(12)
    protocol = 17 if op in (NetOp.UDP_SEND, NetOp.UDP_RECV) else 6
    return NetEvent(T, op, proc(), socket.AF_INET, protocol, here, 40000, peer, 8080,
                    errno=errno)


def record(path: bytes, size: int, sha: str, mode: int = 0o100644, uid: int = 0) -> FileRecord:
    return FileRecord(path, "file", size, mode, uid, 0, T - 10**9, 99, 2049,
                      {"sha256": sha, "md5": "d41d8cd98f00b204e9800998ecf8427e"},
                      ctime_ns=T - 10**9, xattrs={"security.selinux": "73797374656d00"})


def alert(level: str = "high", **kw: Any) -> Alert:
    doc = ecs_document(ExecEvent(T, proc(comm=b"curl", pid=5000), sha256=SHA), HOST)
    rule = RuleInfo("0c5a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b", "Curl in a pipe to a shell", level,
                    description="curl | sh", references=("https://example.org/r",),
                    author="a, b", tags=("attack.execution", "attack.t1059.004"),
                    where="rules/x.yml:3")
    return Alert(T, rule, "process_creation", doc, first_ns=T - 5 * 10**9, **kw)


def every_kind() -> dict[str, Output]:
    """One typed event of every kind and variant Vigil emits, by name."""
    p = proc()
    before = record(b"/etc/app.conf", 10, "0" * 64)
    after = record(b"/etc/app.conf", 12, SHA)
    ev: dict[str, Output] = {}
    for op in FileOp:
        kw: dict[str, Any] = {}
        if op in (FileOp.RENAME, FileOp.LINK):
            kw["target_path"] = b"/srv/w/new"
        elif op == FileOp.SYMLINK:
            kw["target_path"] = b"../target"
        elif op in (FileOp.SETXATTR, FileOp.REMOVEXATTR):
            kw["target_path"] = b"user.comment"
        if op in (FileOp.CHMOD, FileOp.CREATE, FileOp.MKDIR, FileOp.MKNOD):
            kw["mode"] = 0o640
        if op == FileOp.CHOWN:
            kw["owner_uid"], kw["owner_gid"] = 0, 0
        ev[f"file-{op.name.lower()}"] = FileEvent(
            T, op, b"/srv/w/f", p, errno=13 if op == FileOp.OPEN else 0, inode=1234,
            device=2049, **kw)
    ev["file-setxattr-security"] = FileEvent(T, FileOp.SETXATTR, b"/srv/w/f", p,
                                             target_path=b"security.capability")
    ev["file-failed-unlink"] = FileEvent(T, FileOp.DELETE, b"/srv/w/f", p, errno=1)
    ev["file-not-utf8"] = FileEvent(T, FileOp.CREATE, b"/srv/w/\xff\xfe", p)
    ev["file-truncated-path"] = FileEvent(T, FileOp.MODIFY, b"deep/name", p, flags=1)
    ev["file-container"] = FileEvent(T, FileOp.CREATE, b"/srv/w/c",
                                     proc(container=ContainerInfo("a" * 64, "docker")))
    ev["file-protected"] = FileEvent(T, FileOp.MODIFY, b"/etc/vigil/config.yaml", p,
                                     protected="self")
    ev["exec"] = ExecEvent(T, proc(comm=b"curl", pid=5000), cwd=b"/home/alice", sha256=SHA)
    ev["exec-unhashed"] = ExecEvent(T, proc(pid=5001), hash_skipped="budget")
    ev["exit"] = ExitEvent(T, p, 3 << 8)
    ev["exit-signal"] = ExitEvent(T, p, 9)
    # /proc gave no arguments (a process already exiting): ECS's command_line is null
    ev["exit-no-arguments"] = ExitEvent(T, proc(args=[], parent_args=[]), 0)
    for nop in NetOp:
        ev[f"net-{nop.name.lower()}"] = (net(nop, path=b"/run/app.sock")
                                         if nop == NetOp.UNIX_CONNECT else net(nop))
    ev["net-refused"] = net(NetOp.CONNECT, errno=111)
    ev["net-timeout"] = net(NetOp.CONNECT, errno=110)
    ev["net-ipv6"] = net(NetOp.CONNECT, v6=True)
    for cop in CredOp:
        new = creds(0, 1 << 21) if cop not in (CredOp.SETGID, CredOp.CAPSET) else creds(1000)
        ev[f"cred-{cop.name.lower()}"] = CredEvent(
            T, cop, proc(comm=b"sudo"), creds(1000), new,
            path=b"/usr/bin/sudo" if cop == CredOp.EXEC else None,
            inferred=cop == CredOp.ESCALATION)
    target = Target(900, 100, b"sshd", b"/usr/sbin/sshd", 0)
    sec_args: dict[SecOp, dict[str, Any]] = {
        SecOp.MODULE_LOAD: {"name": b"rootkit", "arg1": 0x3000},
        SecOp.BPF_PROG_LOAD: {"name": b"evil_prog", "arg1": 5, "arg2": 26},
        SecOp.BPF_ATTACH: {"name": b"sys_enter", "arg1": 17},
        SecOp.PTRACE: {"target": target, "arg1": 16},
        SecOp.VM_WRITE: {"target": target, "arg2": 4096},
        SecOp.MOUNT: {"path": b"/mnt/x", "path2": b"/dev/sdb1", "name": b"ext4"},
        SecOp.UMOUNT: {"path": b"/mnt/x"},
        SecOp.PIVOT_ROOT: {"path": b"/newroot", "path2": b"/newroot/old"},
        SecOp.SIGNAL: {"target": target, "arg1": 9},
        SecOp.BPF_OWN: {"arg1": 14, "arg2": 31},
    }
    for sop in SecOp:
        ev[f"sec-{sop.name.lower()}"] = SecEvent(T, sop, proc(uid=0, euid=0),
                                                 **sec_args[sop])
    ev["sec-signal-hup"] = SecEvent(T, SecOp.SIGNAL, p, target=target, arg1=1)
    ev["sec-failed"] = SecEvent(T, SecOp.MODULE_LOAD, p, errno=1, name=b"x")
    ev["shell"] = ShellEvent(T, proc(comm=b"bash", pid=4000), b"sudo -i", 136, 3, "pts3",
                             4000)
    ev["shell-truncated"] = ShellEvent(T, proc(comm=b"bash"), b"x" * 40, truncated=True)
    ev["lost"] = LostEvents(T, "file", 17, {"ring_full": 17})
    ev["fim-added"] = FimEvent("added", b"/etc/app.conf", "realtime", T, after=after.to_dict(),
                               process=p, tags=("config",))
    ev["fim-modified"] = FimEvent("modified", b"/etc/app.conf", "realtime", T,
                                  changed_attributes=["size", "sha256", "md5"],
                                  before=before.to_dict(), after=after.to_dict(),
                                  diff="--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n", process=p)
    ev["fim-modified-scan"] = FimEvent("modified", b"/etc/app.conf", "scheduled-scan", T,
                                       changed_attributes=["sha256"], before=before.to_dict(),
                                       after=after.to_dict(), diff="binary")
    ev["fim-deleted"] = FimEvent("deleted", b"/etc/app.conf", "realtime", T,
                                 before=before.to_dict(), process=p)
    ev["fim-renamed"] = FimEvent("renamed", b"/etc/new.conf", "realtime", T,
                                 old_path=b"/etc/app.conf", after=after.to_dict(), process=p)
    ev["fim-chmod"] = FimEvent("attributes-changed", b"/etc/app.conf", "realtime", T,
                               changed_attributes=["mode"], before=before.to_dict(),
                               after=after.to_dict(), process=p)
    ev["fim-mtime"] = FimEvent("attributes-changed", b"/etc/app.conf", "rescan", T,
                               changed_attributes=["mtime"], before=before.to_dict(),
                               after=after.to_dict())
    ev["fim-baseline"] = FimEvent("baseline-established", b"/etc", "initial-scan", T,
                                  scan={"files": 12, "duration_s": 0.25})
    ev["fim-incomplete"] = FimEvent("scan-incomplete", b"", "scheduled-scan", T,
                                    scan={"reason": "3 files could not be read", "files": 9,
                                          "unreadable_files": 3, "unreadable_dirs": 0})
    ev["fim-failed"] = FimEvent("scan-failed", b"", "manual-scan", T,
                                scan={"reason": "OSError: boom", "roots": ["/etc"]})
    ev["alert"] = alert()
    ev["alert-repeat"] = alert("medium", repeat=True, count=4)
    ev["alert-correlation"] = Alert(T, alert("critical").rule, "correlation", {}, count=3,
                                    group={"user.name": "alice"},
                                    related=[{"process.pid": "5000"}])
    ev["alert-health"] = Alert(T, alert("low").rule, "health", {
        "@timestamp": "2023-11-14T22:13:20.123456Z",
        "event": {"kind": "event", "dataset": "vigil.health",
                  "action": "health-check-failed", "outcome": "failure"},
        "message": "2 of 4 events did not come back",
        "vigil": {"health": {"missing": ["chmod", "delete"]}}})
    return ev
