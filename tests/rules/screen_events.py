"""What the screens' tests (test_screen, test_batch_screen) build their events from: the
host, a time, processes, and the paths the rules compare."""

from __future__ import annotations

from vigil.events.model import Process
from vigil.rules.model import StringValue
from vigil.rules.ruleset import RuleSet

HOST = {"name": "h"}
TS = 1_700_000_000 * 10**9


def process(pid: int, uid: int, exe: bytes, args: list[bytes]) -> Process:
    return Process(pid=pid, tid=pid, ppid=1, start_time=pid, parent_start_time=1, uid=uid,
                   gid=uid, euid=uid, egid=uid, auid=uid, session_id=2, comm=exe.split(b"/")[-1],
                   cgroup_id=0, mnt_ns=0, executable=exe, args=args,
                   user_name="root" if uid == 0 else "u", enriched=True)


def rule_paths(rs: RuleSet) -> list[str]:
    """Every plain absolute path (or path part) a file, auditd or Vigil rule compares."""
    out: set[str] = set()
    for r in rs.rules:
        for s in r.searches.values():
            for alt in s.alternatives:
                for it in alt:
                    for v in it.values:
                        p = v.plain if isinstance(v, StringValue) else None
                        if p and "/" in p:
                            out.add(p if p.startswith("/") else "/tmp/x" + p)
    return sorted(out)
