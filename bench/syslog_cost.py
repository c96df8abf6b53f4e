"""Benchmark: what the syslog output costs the agent's thread, against JSON lines to a file.

What it measures. The same batches of realistic ECS file-event documents (rendered once, as the
agent's Batch shares them) go to (1) the JSON-lines sink writing a file and (2) the syslog sink
(RFC 5424 formatting + one spool write per batch) with a real rsyslogd on loopback TCP. It
prints µs per event of ``emit()`` for both, min and median over rounds, and their ratio; then
the sender thread's end-to-end rate: messages per second from the first emit until rsyslog has
written the last one to its file (its own speed bounds this).

    .venv/bin/python bench/syslog_cost.py [-n 50000] [-b 200] [-r 5]

Needs rsyslogd (Debian's rsyslog). Prints numbers; never asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "outputs"))

from rsyslog_proc import Rsyslog, cleanup

from vigil.config.model import SyslogOutput
from vigil.events.model import LostEvents
from vigil.outputs.batch import Batch
from vigil.outputs.jsonl import JsonLinesSink
from vigil.outputs.syslog import SyslogSink

HOST = {"name": "bench-host", "hostname": "bench-host", "os": {"kernel": os.uname().release},
        "architecture": os.uname().machine}


def file_doc(i: int) -> dict[str, Any]:
    """A file event's ECS document of the agent's usual size (~1.3 KB)."""
    return {
        "@timestamp": "2026-12-07T12:00:00.123456Z", "ecs": {"version": "8.11.0"},
        "host": HOST,
        "event": {"kind": "event", "category": ["file"], "type": ["creation"],
                  "action": "created", "outcome": "success", "module": "vigil",
                  "dataset": "vigil.file"},
        "file": {"path": f"/srv/app/data/upload-{i}.tmp", "name": f"upload-{i}.tmp",
                 "directory": "/srv/app/data", "inode": str(1000 + i), "mode": "0644",
                 "uid": "33", "gid": "33"},
        "process": {"pid": 4242, "entity_id": "4242-123456", "name": "python3",
                    "thread": {"id": 4242}, "executable": "/usr/bin/python3.11",
                    "args": ["python3", "worker.py", "--queue", "uploads"], "args_count": 4,
                    "command_line": "python3 worker.py --queue uploads",
                    "parent": {"pid": 1, "entity_id": "1-1", "executable": "/sbin/init"},
                    "user": {"id": "33", "name": "www-data"},
                    "real_user": {"id": "33", "name": "www-data"},
                    "group": {"id": "33"}, "real_group": {"id": "33"}},
        "user": {"id": "33", "name": "www-data"}, "group": {"id": "33", "name": "www-data"},
        "vigil": {"process": {"login_uid": None, "session_id": None, "cgroup_id": 4321,
                              "mnt_ns": 4026531841, "start_ticks": 123456},
                  "schema_version": 3, "file": {"operation": "create", "source": "kernel"}},
    }


def batches(n: int, size: int) -> list[Batch]:
    out = []
    for start in range(0, n, size):
        k = min(size, n - start)
        b = Batch([LostEvents(0, "file", 0)] * k, HOST)
        docs = [file_doc(start + j) for j in range(k)]   # rendered, as the agent shares
        for doc in docs:     # one process's events share its who-data dicts, as in the agent
            doc["process"], doc["user"], doc["group"] = (docs[0]["process"], docs[0]["user"],
                                                         docs[0]["group"])
        b._docs = docs
        out.append(b)
    return out


def timed(sink: Any, bs: list[Batch]) -> float:
    t0 = time.perf_counter()
    for b in bs:
        sink.emit(b)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50_000, help="events per round")
    ap.add_argument("-b", type=int, default=200, help="events per batch")
    ap.add_argument("-r", type=int, default=5, help="rounds")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-syslog-") as tmp:
        d = Path(tmp)
        r = Rsyslog(d / "rsyslog")
        r.start()
        try:
            jsonl, syslog, e2e = [], [], []
            for rnd in range(a.r):
                bs = batches(a.n, a.b)
                j = JsonLinesSink.to_file(d / f"events-{rnd}.jsonl")
                jsonl.append(timed(j, bs) / a.n * 1e6)
                j.close()
                out = SyslogOutput(address=r.address("tcp"), scheme="tcp", host="127.0.0.1",
                                   port=r.tcp_port)
                before = len(r.received())
                s = SyslogSink(out, d / f"spool-{rnd}", host=HOST)
                t0 = time.perf_counter()
                syslog.append(timed(s, bs) / a.n * 1e6)
                while len(r.received()) < before + a.n and time.perf_counter() - t0 < 300:
                    time.sleep(0.02)
                e2e.append(a.n / (time.perf_counter() - t0))
                s.close()
                (d / f"events-{rnd}.jsonl").unlink()
        finally:
            cleanup(r)
    print(f"{a.n} events in batches of {a.b}, {a.r} rounds; emit() on the agent's thread:")
    print(f"  json lines to a file : min {min(jsonl):6.2f} µs/event, "
          f"median {statistics.median(jsonl):6.2f}")
    print(f"  syslog (spool, tcp)  : min {min(syslog):6.2f} µs/event, "
          f"median {statistics.median(syslog):6.2f}")
    print(f"  ratio syslog/json    : {statistics.median(syslog) / statistics.median(jsonl):.2f}")
    print(f"end to end to rsyslog: median {statistics.median(e2e):,.0f} messages/s")


if __name__ == "__main__":
    main()
