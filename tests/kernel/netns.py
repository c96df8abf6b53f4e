"""A test host on this machine: a network namespace behind a veth pair, in the documentation
range 198.51.100.0/24 (RFC 5737), removed afterwards. Traffic to it never leaves the machine.

``namespace_host()`` makes one; ``TestHost.run`` starts a program inside the namespace (a
listener); ``drop_replies`` makes the host drop everything it would send back (a blackhole
route to this side), so a TCP connect to it times out.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

SUBNET = "198.51.100"
LOCAL = f"{SUBNET}.1"     # this side of the veth pair
REMOTE = f"{SUBNET}.2"    # the test host


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class TestHost:
    ns: str
    address: str = REMOTE
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    __test__ = False  # not a pytest test class

    def run(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def drop_replies(self) -> None:
        _ip("-n", self.ns, "route", "add", "blackhole", f"{LOCAL}/32")


@contextmanager
def namespace_host() -> Iterator[TestHost]:
    tag = f"{os.getpid() % 100000}"
    ns, here, there = f"vigil-t{tag}", f"vgl{tag}a", f"vgl{tag}b"
    _ip("netns", "add", ns)
    host = TestHost(ns)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", ns)
        _ip("addr", "add", f"{LOCAL}/24", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", ns, "addr", "add", f"{REMOTE}/24", "dev", there)
        _ip("-n", ns, "link", "set", there, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield host
    finally:
        for p in host.procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
