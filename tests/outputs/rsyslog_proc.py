"""A private rsyslogd for the syslog output's tests (Debian's ``rsyslog``, with
``rsyslog-gnutls`` for TLS and ``rsyslog-relp`` for RELP): its own config, work folder, loopback
ports and unix socket (never /dev/log), every message it receives written as one JSON line (its
parsed RFC 5424 fields) to a file the test reads. Started with ``-n`` (no daemon), stopped and
restarted by the test."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
_SEQ = re.compile(r'seq="(\d+)"')

_TEMPLATE = """
template(name="vigil_json" type="list" option.jsonf="on") {
  property(outname="pri" name="pri" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
  property(outname="input" name="inputname" format="jsonf")
}
if $structured-data contains "vigil@32473" then {
  action(type="omfile" file="{out}" template="vigil_json")
}
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ca(d: Path, cn: str = "127.0.0.1") -> dict[str, Path]:
    """A throwaway CA and a server certificate for ``cn`` (an IP address), with openssl."""
    d.mkdir(parents=True, exist_ok=True)
    p = {k: d / f"{k}.pem" for k in ("ca", "ca_key", "cert", "key")}

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=vigil test CA", "-keyout", str(p["ca_key"]), "-out", str(p["ca"]))
    csr = d / "server.csr"
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
        "-keyout", str(p["key"]), "-out", str(csr))
    ext = d / "ext.cnf"
    ext.write_text(f"subjectAltName=IP:{cn}\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(p["ca"]), "-CAkey", str(p["ca_key"]),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(p["cert"]))
    return p


class Rsyslog:
    """tcp/udp on 127.0.0.1 and a unix socket in ``dir``; ``tls`` (a make_ca() dict): the TCP
    input speaks TLS (gtls driver) instead."""

    def __init__(self, d: Path, tls: dict[str, Path] | None = None) -> None:
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        (d / "work").mkdir(exist_ok=True)
        self.out = d / "received.jsonl"
        self.sock = d / "log.sock"
        self.tcp_port = free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.relp_port = free_port()
        self.tls = tls
        self.conf = d / "rsyslog.conf"
        self.conf.write_text(self._config())
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        glob = [f'workDirectory="{self.dir / "work"}"', 'maxMessageSize="256k"']
        tcp = 'module(load="imtcp" maxSessions="100")'
        if self.tls is not None:
            glob += [f'defaultNetstreamDriverCAFile="{self.tls["ca"]}"',
                     f'defaultNetstreamDriverCertFile="{self.tls["cert"]}"',
                     f'defaultNetstreamDriverKeyFile="{self.tls["key"]}"']
            tcp = ('module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" '
                   'streamDriver.authMode="anon")')
        return "\n".join([
            f"global({' '.join(glob)})",
            # one worker: messages are written in the order they came. At a stop rsyslog
            # discards what is still queued after queue.timeoutShutdown (1.5 s for the main
            # queue): messages it had read, which no sender can know were lost. On a loaded
            # machine its queue (10,000 messages) was still full then; 15 s drains it.
            'main_queue(queue.workerThreads="1" queue.timeoutShutdown="15000")',
            tcp,
            f'input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}")',
            'module(load="imudp")',
            f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}" '
            'rcvbufSize="16m")',
            'module(load="imrelp")',
            f'input(type="imrelp" address="127.0.0.1" port="{self.relp_port}")',
            'module(load="imuxsock" SysSock.Use="off")',
            f'input(type="imuxsock" Socket="{self.sock}" UseSpecialParser="off" '
            'ParseHostname="on" RateLimit.Interval="0")',
            _TEMPLATE.replace("{out}", str(self.out)),
        ])

    def start(self) -> None:
        if self.sock.exists():
            self.sock.unlink()
        log = open(self.dir / "rsyslogd.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited {self.proc.returncode}: "
                                   f"{(self.dir / 'rsyslogd.log').read_text()[-2000:]}")
            if self.sock.exists() and self._tcp_up(self.tcp_port) \
                    and self._tcp_up(self.relp_port):
                return
            time.sleep(0.05)
        raise RuntimeError("rsyslogd did not open its inputs in 20 s")

    def _tcp_up(self, port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def address(self, scheme: str) -> str:
        if scheme == "unix":
            return f"unix://{self.sock}"
        port = {"udp": self.udp_port, "relp": self.relp_port}.get(scheme, self.tcp_port)
        return f"{scheme}://127.0.0.1:{port}"

    def received(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        lines = self.out.read_bytes().split(b"\n")[:-1]    # the last may be half written
        return [json.loads(line) for line in lines if line.strip()]

    def seqs(self) -> list[int]:
        out = []
        for r in self.received():
            m = _SEQ.search(r["sd"])
            assert m is not None, r
            out.append(int(m[1]))
        return out

    def wait_for(self, n: int, timeout: float = 60.0) -> list[int]:
        """The sequence numbers received, once ``n`` different ones are there (or the time
        is up)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.seqs()
            if len(set(got)) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def log(self) -> str:
        p = self.dir / "rsyslogd.log"
        return p.read_text(errors="replace") if p.exists() else ""


def cleanup(r: Rsyslog) -> None:
    r.stop()
    if r.sock.exists():
        os.unlink(r.sock)
