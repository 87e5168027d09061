"""Background traffic: the requests of real callers, besides the canaries, as log entries.

Requests fall on a fixed grid (every 60/per_minute seconds since the epoch) and the emulator logs each
grid point once, so the live catch-up and a back-dated, compressed period that overlap never count a
request twice. Each request's status is drawn from a hash of (deployment, grid index),
so the same window always gives the same traffic.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

from .scenario import Background

PATH = "/anthropic/v1/messages"


@dataclass(frozen=True, slots=True)
class Synthetic:
    k: int  # its place on the deployment's grid
    at: float
    status: int
    stream: bool
    ttft_s: float | None
    total_s: float
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None


def _unit(deployment: str, k: int, salt: str) -> float:
    digest = hashlib.blake2b(f"{deployment}\0{k}\0{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def requests(deployment: str, spec: Background, start: float, end: float) -> Iterator[Synthetic]:
    """The background requests of one deployment that arrive in [start, end)."""
    step = 60.0 / spec.per_minute
    first, last = math.ceil(start / step), math.ceil(end / step)
    mix = sorted(spec.errors.items())
    for k in range(first, last):
        u, status = _unit(deployment, k, "status"), 200
        for code, share in mix:
            if u < share:
                status = code
                break
            u -= share
        ok = status == 200
        yield Synthetic(
            k=k, at=k * step, status=status, stream=_unit(deployment, k, "stream") < spec.stream_share,
            ttft_s=spec.ttft if ok else None, total_s=spec.duration if ok else 0.05,
            input_tokens=spec.input_tokens if ok else None, output_tokens=spec.output_tokens if ok else None,
            cache_read_tokens=spec.cache_read_tokens if ok else None,
            cache_write_tokens=spec.cache_write_tokens if ok else None)
