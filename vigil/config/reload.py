"""A configuration read again while running (SIGHUP): what changed, and what of it only a
restart applies.

Owns the comparison of two ``Config`` trees. The watch list, the policy (ignore, restrict,
depth...), FIM's trees and settings and the rules are applied in place (vigil.agent,
vigil.watching); the kernel side's settings, the outputs and the endpoints are fixed at start.
"""

from __future__ import annotations

from vigil.config.model import Config

# Keys fixed at start: the kernel programs' settings (chosen before load), the sinks and the
# metrics endpoint (opened once), the event kinds the kernel sends.
_AT_START = ("ring_buffer_mb", "exec_events", "failed_errnos", "network", "shell", "exec_hash",
             "outputs", "metrics", "output", "json_file", "state_dir", "database", "health")
# What FIM's service reads: a change restarts it (a startup scan of the new trees).
_FIM = ("directories", "scan", "diff", "ignore", "database")


def restart_needed(old: Config, new: Config) -> list[str]:
    """The top-level keys that changed but take effect only at the next start."""
    return [k for k in _AT_START if getattr(old, k) != getattr(new, k)]


def fim_changed(old: Config, new: Config) -> bool:
    return any(getattr(old, k) != getattr(new, k) for k in _FIM)
