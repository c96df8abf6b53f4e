"""A real Prometheus server (Debian's /usr/bin/prometheus) for tests: a private config that
scrapes one target every second, private storage, a free loopback port; queries through its
HTTP API. Owns starting, waiting for scrapes, querying and stopping it; not what tests assert.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMETHEUS = Path("/usr/bin/prometheus")
JOB = "vigil"
TIME_SCALE = float(os.environ.get("VIGIL_TEST_TIME_SCALE", "1"))

Series = dict[str, Any]  # one result of an instant query: {"metric": {...}, "value": [t, "v"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusProc:
    """``with PrometheusProc(target_port) as prom:`` a Prometheus scraping
    127.0.0.1:target_port/metrics every second."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = f"{target_host}:{target_port}"
        self.dir = Path(tempfile.mkdtemp(prefix="vigil-prom-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = self.dir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusProc:
        if not PROMETHEUS.exists():
            raise AssertionError(f"{PROMETHEUS} missing: install the Debian package prometheus "
                                 "(./do installs it)")
        config = self.dir / "prometheus.yml"
        config.write_text(json.dumps({   # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": [self.target]}]}],
        }))
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [str(PROMETHEUS), f"--config.file={config}",
                 f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        self._wait(lambda: self._get("/-/ready") is not None, 60, "Prometheus to be ready")
        return self

    def log_tail(self) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as resp:
                return bytes(resp.read()) if resp.status == 200 else None
        except OSError:
            return None

    def _api(self, path: str, **params: str) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def _wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout * TIME_SCALE
        while not cond():
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self._proc.returncode}) while "
                                     f"waiting for {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"Prometheus's log:\n{self.log_tail()}")
            time.sleep(0.2)

    def query(self, expr: str) -> list[Series]:
        """An instant query through /api/v1/query: its vector of series."""
        data = self._api("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def target_health(self) -> dict[str, Any]:
        """The scrape target's state from /api/v1/targets (health, lastError, ...)."""
        [target] = [t for t in self._api("/api/v1/targets")["activeTargets"]
                    if t["labels"].get("job") == JOB]
        return dict(target)

    def wait_query(self, expr: str, cond: Callable[[list[Series]], bool] = bool,
                   timeout: float = 60) -> list[Series]:
        """The result of ``expr`` once ``cond`` holds for it (by default: not empty)."""
        result: list[Series] = []

        def ok() -> bool:
            nonlocal result
            result = self.query(expr)
            return cond(result)

        try:
            self._wait(ok, timeout, f"{expr!r} to hold")
        except AssertionError as err:
            raise AssertionError(f"{err}\nlast result: {result}\ntarget: "
                                 f"{self.target_health()}") from None
        return result

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrometheusProc:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def value(series: Series) -> float:
    return float(series["value"][1])


def by_label(result: list[Series], label: str) -> dict[str, float]:
    """{series' ``label`` value: sample value} of a query's result."""
    return {s["metric"].get(label, ""): value(s) for s in result}
