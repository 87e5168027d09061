"""The linear pool bookkeeping (monitor/canary/pool.py) does exactly what httpcore's own does, on many pool
states, with far fewer `is_idle()` calls; and the transports the fleet builds use it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import httpcore
import pytest

from monitor.canary.fleet import build_transport
from monitor.canary.pool import linear

ORIGINS = [httpcore.Origin(b"https", b"a.services.ai.azure.com", 443),
           httpcore.Origin(b"https", b"b.services.ai.azure.com", 443)]
STATES = ("closed", "expired", "idle", "busy", "available")


@dataclass
class Conn:
    """A pooled connection in a given state (a fake at httpcore's connection interface)."""

    name: str
    state: str
    origin: httpcore.Origin
    idle_calls: list[int] = field(default_factory=lambda: [0])

    def is_closed(self) -> bool:
        return self.state == "closed"

    def has_expired(self) -> bool:
        return self.state == "expired"

    def is_idle(self) -> bool:
        self.idle_calls[0] += 1
        return self.state == "idle"

    def is_available(self) -> bool:
        return self.state in ("idle", "available")

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == self.origin


@dataclass
class Req:
    name: str
    origin: httpcore.Origin
    queued: bool
    assigned: str | None = None

    @property
    def request(self) -> Any:
        return httpcore.Request("POST", httpcore.URL(scheme=self.origin.scheme, host=self.origin.host,
                                                     port=self.origin.port, target=b"/"))

    def is_queued(self) -> bool:
        return self.queued

    def assign_to_connection(self, connection: Any) -> None:
        self.assigned = name(connection)


def pool_state(seed: int) -> tuple[httpcore.AsyncConnectionPool, list[Req], list[int]]:
    rng = random.Random(seed)
    limit = rng.randint(1, 8)
    keepalive = rng.randint(0, limit)
    pool = httpcore.AsyncConnectionPool(max_connections=limit, max_keepalive_connections=keepalive)
    calls = [0]
    pool._connections = [Conn(f"c{i}", rng.choice(STATES), rng.choice(ORIGINS), calls)
                         for i in range(rng.randint(0, limit + 2))]
    requests = [Req(f"r{i}", rng.choice(ORIGINS), rng.random() < 0.7) for i in range(rng.randint(0, 4))]
    pool._requests = requests
    return pool, requests, calls


def name(connection: Any) -> str:
    """A fake's name, or the origin of a connection the pool created."""
    return connection.name if isinstance(connection, Conn) else f"new:{connection._origin.host.decode()}"


def outcome(pool: httpcore.AsyncConnectionPool, closing: list[Any], requests: list[Req]) -> Any:
    return ([name(c) for c in closing], [name(c) for c in pool._connections], [r.assigned for r in requests])


@pytest.mark.parametrize("seed", range(400))
def test_linear_bookkeeping_matches_httpcores_on_the_same_pool_state(seed: int) -> None:
    original, original_requests, _ = pool_state(seed)
    expected = outcome(original, httpcore.AsyncConnectionPool._assign_requests_to_connections(original),
                       original_requests)
    pool, requests, _ = pool_state(seed)
    linear(pool)
    assert outcome(pool, pool._assign_requests_to_connections(), requests) == expected


def test_a_full_pool_of_idle_connections_costs_a_linear_number_of_idle_checks() -> None:
    def full(n: int) -> tuple[httpcore.AsyncConnectionPool, list[int]]:
        pool = httpcore.AsyncConnectionPool(max_connections=n, max_keepalive_connections=n)
        calls = [0]
        pool._connections = [Conn(f"c{i}", "idle", ORIGINS[0], calls) for i in range(n)]
        pool._requests = [Req("r", ORIGINS[0], True)]
        return pool, calls

    original, before = full(64)
    httpcore.AsyncConnectionPool._assign_requests_to_connections(original)
    pool, after = full(64)
    linear(pool)._assign_requests_to_connections()
    assert before[0] >= 64 * 64 and after[0] <= 64


def test_the_fleets_transports_keep_httpx_pool_class_and_add_the_linear_bookkeeping() -> None:
    transport = build_transport("https://a.services.ai.azure.com/anthropic/v1/messages")
    pool = transport._pool
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    assert type(pool)._assign_requests_to_connections is not \
        httpcore.AsyncConnectionPool._assign_requests_to_connections
