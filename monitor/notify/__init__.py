"""Sending the weekly report: the Email it is, the Notifier seam, and how a failure is classed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Email:
    sender: str
    to: tuple[str, ...]
    subject: str
    text: str  # the plain-text alternative, with the same numbers
    html: str  # inline CSS only; images referenced as cid:NAME
    images: dict[str, bytes] = field(default_factory=dict)  # content id -> PNG


class NotifyError(Exception):
    """A send failed. `transient` ones are retried with back-off; permanent ones are reported once.
    The message never carries a password, key or token."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Notifier(Protocol):
    name: str

    def send(self, email: Email) -> None:
        """Deliver or raise NotifyError (blocking: the daemon calls it in a worker thread)."""
