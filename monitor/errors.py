"""The exceptions foundry-monitor raises on purpose.

All of them derive from one base, so the CLI can turn any of them into a single stderr line::

    MonitorError                 anything the user can act on; never carries a secret
    ├── ConfigError              checks.yaml is wrong: carries file, line and key path
    ├── StoreError               the embedded store cannot be opened, written or migrated
    │   └── StoreDamaged         its file is not a database or is malformed (the daemon moves it aside)
    ├── LeaseHeld                another live daemon already probes these deployments with this store
    └── NotifyError              a notification could not be sent (``permanent`` says whether to retry)

Everything else escaping to the CLI is a bug and is reported as such.
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base of every error meant for a human: its text is the whole message."""


class ConfigError(MonitorError):
    """One or more problems in a config file; ``str()`` lists them one per line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigProblem:
    """One problem: ``file:line: key.path: message`` (line and path when known)."""

    __slots__ = ("file", "line", "path", "message")

    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file = file
        self.line = line
        self.path = path
        self.message = message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"ConfigProblem({str(self)!r})"


class StoreError(MonitorError):
    """The store could not be opened, migrated or written."""


class StoreDamaged(StoreError):
    """The store's file is damaged (not a database, or malformed): no retry will open it."""


class LeaseHeld(MonitorError):
    """Another live daemon holds the store's lease for an overlapping fleet (same location, same shard)."""


class NotifyError(MonitorError):
    """A notification failed; ``permanent`` errors are reported once and not retried."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        self.permanent = permanent
        super().__init__(message)
