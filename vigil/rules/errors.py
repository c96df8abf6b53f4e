"""The rule engine's error type: a rule that cannot be loaded, with FILE:LINE and the reason."""

from __future__ import annotations

from vigil.kernel.errors import InputError


class RuleError(InputError):
    """A rule file is unreadable, not YAML, breaks the Sigma schema, or says something the
    engine refuses (an unknown modifier, a regular expression RE2 cannot compile, a condition
    naming a search that does not exist). ``str()`` reads "FILE:LINE: what"."""
