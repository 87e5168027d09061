"""httpcore's connection-pool bookkeeping in linear time.

httpcore (1.0.x) runs `_assign_requests_to_connections` every time a request enters or leaves the pool,
twice per canary. For every idle connection it builds a list over all connections (`len([c.is_idle()
for c in connections])`, which is just the number of connections), so with the 64 pooled connections a
resource keeps, each canary paid about 8,000 `is_idle()` calls: the largest single CPU cost of a canary
in a py-spy profile of 1,000 deployments at 10 s. This is the same method with that count taken once
(`len(connections)`, which is what the list's length is) and with the first usable connection found
without building lists. Behaviour is unchanged: tests/test_pool.py runs it against httpcore's own on
the same pool states. httpx stays the client; the class of the pool httpx built is swapped for a
subclass, like the network backend in `fleet.build_transport` (a test fails if httpx moves the pool).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpcore

_LINEAR: dict[type[Any], type[Any]] = {}


class _LinearAssign:
    """Mixed into the pool's own class (a plain pool or one of httpcore's proxies)."""

    _connections: list[Any]
    _requests: list[Any]
    _max_connections: int
    _max_keepalive_connections: int
    create_connection: Callable[[httpcore.Origin], Any]  # annotations only: the pool's own are used

    def _assign_requests_to_connections(self) -> list[Any]:
        closing = []
        # drop closed and expired connections, and idle ones beyond the keep-alive limit
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired():
                self._connections.remove(connection)
                closing.append(connection)
            elif connection.is_idle() and len(self._connections) > self._max_keepalive_connections:
                self._connections.remove(connection)
                closing.append(connection)
        # give queued requests a connection: an available one, a new one, or one in place of an idle one
        for pool_request in [r for r in self._requests if r.is_queued()]:
            origin = pool_request.request.url.origin
            available = next((c for c in self._connections
                              if c.can_handle_request(origin) and c.is_available()), None)
            if available is not None:
                pool_request.assign_to_connection(available)
            elif len(self._connections) < self._max_connections:
                connection = self.create_connection(origin)
                self._connections.append(connection)
                pool_request.assign_to_connection(connection)
            else:
                idle = next((c for c in self._connections if c.is_idle()), None)
                if idle is not None:
                    self._connections.remove(idle)
                    closing.append(idle)
                    connection = self.create_connection(origin)
                    self._connections.append(connection)
                    pool_request.assign_to_connection(connection)
        return closing


def linear(pool: httpcore.AsyncConnectionPool) -> httpcore.AsyncConnectionPool:
    """Make `pool` (httpx's, before it has connections) do its bookkeeping in linear time."""
    cls = type(pool)
    if cls not in _LINEAR:
        _LINEAR[cls] = type(f"Linear{cls.__name__}", (_LinearAssign, cls), {})
    pool.__class__ = _LINEAR[cls]
    return pool
