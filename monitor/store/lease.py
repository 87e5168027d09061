"""Who probes with this store: one lease row per running daemon, so that a second daemon started on the
same data_dir by mistake (or a second replica sharing a volume) refuses to double every canary.

Each daemon holds a row (its run id, pid, host, shard, location, the deployments it probes) whose
heartbeat it renews every HEARTBEAT_S; the row expires TTL_S after the last renewal. At start, a live
row of another daemon with the same location and an overlapping fleet is a refusal (LeaseHeld). Replicas
that split the work do not overlap: distinct shards of one count (`--shard 0/3`, `--shard 1/3`, ...)
probe disjoint deployments, and distinct `--location`s probe the same ones on purpose. A row whose
heartbeat expired (the holder crashed) is taken over, and so is one left by a process on this host that
no longer exists (same host and PID namespace: its pid is gone, or it is our own pid). Expiry compares
wall clocks: hosts sharing a store need clocks within a few seconds of each other (NTP).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from monitor.errors import LeaseHeld

from .sqlite import Store

TTL_S = 20.0  # a lease not renewed for this long belongs to a daemon that is gone
HEARTBEAT_S = 5.0  # how often a running daemon renews it

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, pidns TEXT NOT NULL,
    shard TEXT NOT NULL, location TEXT NOT NULL, fingerprint TEXT NOT NULL, deployments TEXT NOT NULL,
    started_at REAL NOT NULL, heartbeat_at REAL NOT NULL, expires_at REAL NOT NULL
)
"""

Key = tuple[str, str]


def fingerprint(keys: Iterable[Key]) -> str:
    """A short name for a set of deployments (the same set gives the same fingerprint everywhere)."""
    text = "\n".join(sorted(f"{r}/{d}" for r, d in keys))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@dataclass(frozen=True, slots=True)
class Holder:
    """One lease row as another daemon sees it."""

    id: str
    pid: int
    host: str
    pidns: str
    shard: str
    location: str
    deployments: frozenset[Key]
    heartbeat_at: float
    expires_at: float

    @classmethod
    def from_row(cls, row: Any) -> Holder:
        lid, pid, host, pidns, shard, location, _, deployments, _, heartbeat_at, expires_at = row
        keys = frozenset((str(r), str(d)) for r, d in json.loads(deployments))
        return cls(lid, int(pid), host, pidns, shard, location, keys, float(heartbeat_at), float(expires_at))

    def who(self) -> str:
        where = f"pid {self.pid} on host {self.host}"
        return where + (f", shard {self.shard}" if self.shard else "") + (
            f", location {self.location}" if self.location else "")


class Lease:
    """This daemon's lease on a store: acquire() at start, renew() every HEARTBEAT_S, release() at stop."""

    def __init__(self, store: Store, deployments: Iterable[Key], *, shard: tuple[int, int] | None = None,
                 location: str = "", ttl_s: float = TTL_S, now: Callable[[], float] = time.time,
                 pid: int | None = None, host: str | None = None) -> None:
        self.store = store
        self.id = uuid.uuid4().hex
        self.pid = os.getpid() if pid is None else pid
        self.host = socket.gethostname() if host is None else host
        self.pidns = _pid_namespace()
        self.shard = f"{shard[0]}/{shard[1]}" if shard else ""
        self.location = location
        self.deployments = frozenset(deployments)
        self.ttl_s = ttl_s
        self.now = now
        self.held = False
        self.taken_over: list[tuple[Holder, str]] = []  # stale leases the last acquire() took over, and why
        self.error: str | None = None  # why it could not be taken at start (the store was not writable)

    def _gone(self, h: Holder, at: float) -> str | None:
        """Why `h` is no longer a live daemon (None: it is live)."""
        if h.expires_at <= at:
            return f"its heartbeat stopped {at - h.heartbeat_at:.0f}s ago"
        if h.host == self.host and h.pidns == self.pidns and self.pidns:
            if h.pid == self.pid:
                return "its pid is now ours (it is gone)"
            if not _pid_alive(h.pid):
                return "its process is gone"
        return None

    def overlaps(self, h: Holder) -> bool:
        """Same location and at least one deployment in common (distinct shards of one N never share)."""
        return h.location == self.location and bool(h.deployments & self.deployments)

    def acquire(self) -> list[tuple[Holder, str]]:
        """Take the lease, or raise LeaseHeld naming the live daemon that has it. Returns the stale leases
        taken over (holder, why it is stale), for the caller to log."""
        at = self.now()
        taken: list[tuple[Holder, str]] = []
        with self.store.transaction() as conn:
            conn.execute(SCHEMA)
            for row in conn.execute("SELECT * FROM leases WHERE id != ?", (self.id,)).fetchall():
                h = Holder.from_row(row)
                why = self._gone(h, at)
                if why is not None:
                    conn.execute("DELETE FROM leases WHERE id = ?", (h.id,))
                    taken.append((h, why))
                elif self.overlaps(h):
                    raise LeaseHeld(self._refusal(h, at))
            conn.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (self.id, self.pid, self.host, self.pidns, self.shard, self.location,
                          fingerprint(self.deployments), json.dumps(sorted(self.deployments)), at, at,
                          at + self.ttl_s))
        self.held = True
        self.taken_over, self.error = taken, None
        return taken

    def _refusal(self, h: Holder, at: float) -> str:
        return (f"another foundry-monitor ({h.who()}, heartbeat {max(0.0, at - h.heartbeat_at):.0f}s ago) "
                f"already probes {len(h.deployments & self.deployments)} of these deployments with the store "
                f"{self.store.path}; stop it first, or run replicas that split the work: distinct "
                "--shard I/N (same N) or distinct --location")

    def renew(self, deployments: Iterable[Key] | None = None) -> bool:
        """Push the expiry out (and record the fleet after a reload); false when the lease was lost
        (taken over while this daemon did not renew it): the caller acquires it again."""
        if deployments is not None:
            self.deployments = frozenset(deployments)
        if not self.held:  # never taken (the store could not be written at start) or lost
            return False
        at = self.now()
        with self.store.transaction() as conn:
            cur = conn.execute("UPDATE leases SET heartbeat_at = ?, expires_at = ?, fingerprint = ?, "
                               "deployments = ? WHERE id = ?",
                               (at, at + self.ttl_s, fingerprint(self.deployments),
                                json.dumps(sorted(self.deployments)), self.id))
            self.held = cur.rowcount == 1
        return self.held

    def release(self) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM leases WHERE id = ?", (self.id,))
        self.held = False

    def holders(self) -> list[Holder]:
        """Every lease row (live or stale), for /status and tests."""
        with self.store.transaction() as conn:
            conn.execute(SCHEMA)
            return [Holder.from_row(r) for r in conn.execute("SELECT * FROM leases").fetchall()]
