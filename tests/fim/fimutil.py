"""Helpers for FIM integration tests: real trees in tmp_path, the real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from vigil.config import Config, load_config
from vigil.fim.model import FimEvent
from vigil.fim.scanner import Scanner
from vigil.fim.store import Store

ROOT = Path(__file__).resolve().parents[2]


def make_config(tmp: Path, watch: Path, **opts: Any) -> Config:
    top = {k: opts.pop(k) for k in ("diff", "scan", "ignore") if k in opts}
    doc = {"directories": [{"path": str(watch), **opts}], "database": str(tmp / "db" / "b.db"),
           **top}
    p = tmp / "vigil.yaml"
    p.write_text(yaml.safe_dump(doc))
    return load_config(p)


def scan(cfg: Config, update: bool = True, **kw: Any) -> list[FimEvent]:
    with Store(cfg.database) as s:
        return list(Scanner(cfg, s, update=update, **kw).scan("manual-scan"))


def by_path(events: list[FimEvent]) -> dict[bytes, FimEvent]:
    out = {ev.path: ev for ev in events}
    assert len(out) == len(events), "one event per path"
    return out


def oneshot(*args: str, user: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "vigil.fim.oneshot", *args]
    if user:
        import pwd

        gid = pwd.getpwnam(user).pw_gid
        cmd = ["setpriv", f"--reuid={user}", f"--regid={gid}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})




def stored(cfg: Config) -> dict[bytes, dict[str, Any]]:
    """The baseline's rows under the watched directories, as the before/after view of events (a
    first scan records them silently: this is where to look at what it recorded)."""
    with Store(cfg.database) as s:
        out: dict[bytes, dict[str, Any]] = {}
        for d in cfg.directories:
            for r in [s.get(d.path), *s.iter_subtree(d.path)]:
                if r is not None:
                    out[r.path] = r.to_dict()
        return out
