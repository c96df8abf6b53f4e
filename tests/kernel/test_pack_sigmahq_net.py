"""SigmaHQ's ``network_connection`` rules of the built-in pack, under the real agent, fired by
real connections and shown silent for real look-alikes.

Both rules that Vigil's events can serve exclude loopback and private networks, so the
connections go to a test host in a network namespace the test makes (198.51.100.2, a
documentation address behind a veth pair; tests/kernel/netns.py), which listens on the ports
used. Nothing leaves the machine.

- "Linux Reverse Shell Indicator" (bash opening a connection, not to 127.0.0.1): bash's own
  /dev/tcp redirection to the test host fires it; the same bash to 127.0.0.1 does not, nor
  Python to the test host.
- "Potentially Suspicious Malware Callback Communication - Linux" (a connection to one of a
  list of ports, outside private networks): a connection to the test host's port 4444 fires
  it; to its port 4445, or to 127.0.0.1:4444, it does not.

The three other rules match ``DestinationHostname``, which Vigil does not provide: they load
with a warning (tests/unit/test_rules.py) and a test here shows they are the only ones left.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_proc import CHILD_PY, AgentProc, Event, UserIds, get, run_child, write_config
from netns import REMOTE, namespace_host

from vigil.rules.loader import builtin_rules_dir, load_paths

pytestmark = [pytest.mark.root]

REVERSE_SHELL = "83dcd9f6-9ca8-4af7-a16e-a1c7a6b51871"
CALLBACK_PORT = "dbfc7c98-04ab-4ab7-aa94-c74d22aa7376"
TESTED = {REVERSE_SHELL, CALLBACK_PORT}
BASH = "/bin/bash"
LISTENER = """
import socket, sys, threading
socks = []
for port in (4444, 4445):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(16); socks.append(s)
def serve(s):
    while True:
        c, _ = s.accept(); c.close()
for s in socks:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait(120)
"""


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vigil-netpack-", dir="/var/tmp")).resolve()
    d.chmod(0o755)
    (d / "w").mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _listen(address: str) -> subprocess.Popen[bytes]:
    """The listener on this side (127.0.0.1:4444 and 4445), once it listens."""
    p = subprocess.Popen([CHILD_PY, "-c", LISTENER, address], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    return p


@pytest.fixture(scope="module")
def run(scratch: Path, test_user: UserIds) -> Iterator[tuple[AgentProc, dict[str, int]]]:
    """Every trigger and look-alike under one agent; the pids of each."""
    cfg = write_config(scratch / "vigil.yaml", scratch, [{"path": str(scratch / "w")}],
                       rules={"suppress_window": 0, "min_level": "informational"})
    agent = AgentProc(["--config", str(cfg)], db=scratch / "state" / "baseline.db").start()
    local = None
    pids: dict[str, int] = {}
    try:
        with namespace_host() as host:
            remote = host.run([CHILD_PY, "-c", LISTENER, REMOTE])
            assert remote.stdout is not None and remote.stdout.readline().strip() == b"ready"
            local = _listen("127.0.0.1")
            agent.probe(scratch / "w", timeout=60)
            cases = {
                "bash_remote": [BASH, "-c", f"exec 3<>/dev/tcp/{REMOTE}/4444"],
                "bash_local": [BASH, "-c", "exec 3<>/dev/tcp/127.0.0.1/4444"],
                "python_remote_4445": [CHILD_PY, "-c", "import socket; socket.create_connection("
                                       f"({REMOTE!r}, 4445))"],
                "python_local_4444": [CHILD_PY, "-c", "import socket; socket.create_connection("
                                      "('127.0.0.1', 4444))"],
            }
            for name, argv in cases.items():
                pids[name] = run_child(argv, user=test_user.ids).pid
            for pid in pids.values():   # every connect reached the agent
                agent.wait_for(connect_of(pid), timeout=15)
            agent.probe(scratch / "w")
        yield agent, pids
    finally:
        if local is not None:
            local.kill()
            local.wait()
        rc, _ = agent.stop()
        assert rc == 0


def connect_of(pid: int) -> Callable[[Event], bool]:
    return lambda e: get(e, "process.pid") == pid and get(e, "event.action") == "connect"


def alerts_of(agent: AgentProc, rule: str, pid: int) -> list[Event]:
    return [a for a in agent.alerts if get(a, "rule.id") == rule and get(a, "process.pid") == pid]


def test_bash_connecting_out_is_a_reverse_shell_indicator(run: tuple[AgentProc, dict[str, int]]
                                                          ) -> None:
    agent, pids = run
    (a,) = alerts_of(agent, REVERSE_SHELL, pids["bash_remote"])
    assert get(a, "destination.ip") == REMOTE and get(a, "destination.port") == 4444
    assert get(a, "process.executable").endswith("/bin/bash")
    assert get(a, "network.direction") == "egress"
    assert not alerts_of(agent, REVERSE_SHELL, pids["bash_local"])
    assert not alerts_of(agent, REVERSE_SHELL, pids["python_remote_4445"])


def test_connection_to_a_callback_port(run: tuple[AgentProc, dict[str, int]]) -> None:
    agent, pids = run
    (a,) = alerts_of(agent, CALLBACK_PORT, pids["bash_remote"])
    assert get(a, "destination.port") == 4444
    assert not alerts_of(agent, CALLBACK_PORT, pids["python_remote_4445"])
    assert not alerts_of(agent, CALLBACK_PORT, pids["python_local_4444"])
    assert not alerts_of(agent, CALLBACK_PORT, pids["bash_local"])


def test_every_network_rule_of_the_pack_is_tested_or_needs_a_hostname() -> None:
    res = load_paths([builtin_rules_dir() / "sigmahq" / "linux" / "network_connection"])
    need_name = {r.id for r in res.with_warnings}
    assert {r.id for r in res.rules} == TESTED | need_name
    for r in res.rules:
        if r.id in need_name:
            assert ["DestinationHostname" in what for _, what in r.warnings] == [True], r.source
