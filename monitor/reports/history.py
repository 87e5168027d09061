"""Each deployment's last results from the store, for the status page's history bar, and a colour per
failure kind (the bar, its legend): related kinds share a hue, so a bar reads at a glance."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from monitor.canary.results import FailureKind
from monitor.store.sqlite import Store

BAR = 50  # results per history bar

K = FailureKind
KIND_COLOURS: Mapping[str, str] = MappingProxyType({
    K.OK: "#16a34a",  # green
    # the caller's side: keys, tokens, permissions (red-pink)
    K.INVALID_API_KEY: "#be123c", K.TOKEN_REJECTED: "#be123c", K.CREDENTIAL_UNAVAILABLE: "#be123c",
    K.PERMISSION_DENIED: "#9f1239",
    # the configuration: names, paths, models, request shape (blue)
    K.DEPLOYMENT_NOT_FOUND: "#1d4ed8", K.ENDPOINT_NOT_FOUND: "#1d4ed8", K.INVALID_MODEL: "#2563eb",
    K.BAD_REQUEST: "#3b82f6",
    # capacity: throttling (purple) and overload (fuchsia)
    K.RATE_LIMITED: "#9333ea", K.OVERLOADED: "#c026d3",
    # the service broke (red)
    K.SERVER_ERROR: "#dc2626", K.MALFORMED_RESPONSE: "#b91c1c", K.UNEXPECTED_STATUS: "#ef4444",
    # the path to it: time, network, TLS (orange)
    K.TIMEOUT: "#ea580c", K.CONNECTION_ERROR: "#c2410c", K.TLS_ERROR: "#9a3412",
    K.CANCELLED: "#9ca3af",  # grey: the monitor stopped it
})
UNKNOWN_COLOUR = "#6b7280"  # a kind this version does not know (a newer writer of the same store)
EMPTY_COLOUR = "#e5e7eb"  # no result yet at that position


@dataclass(frozen=True, slots=True)
class Cell:
    at: datetime
    kind: str
    latency_ms: float | None
    attempt: int

    @property
    def ok(self) -> bool:
        return self.kind == FailureKind.OK


def colour(kind: str) -> str:
    return KIND_COLOURS.get(kind, UNKNOWN_COLOUR)


def last_results(store: Store, keys: Iterable[tuple[str, str]],
                 n: int = BAR) -> dict[tuple[str, str], list[Cell]]:
    """The last `n` results of each (resource, deployment), oldest first: one indexed query per key."""
    out: dict[tuple[str, str], list[Cell]] = {}
    for key in keys:
        rows = store.query("SELECT started_at, kind, total_s, attempt FROM results "
                           "WHERE resource = ? AND deployment = ? ORDER BY started_at DESC LIMIT ?",
                           (key[0], key[1], n))
        out[key] = [Cell(datetime.fromtimestamp(r["started_at"], UTC), r["kind"],
                         None if r["total_s"] is None else r["total_s"] * 1000, r["attempt"])
                    for r in reversed(rows)]
    return out
