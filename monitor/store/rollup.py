"""Hourly rollups of canary results, and the latency histogram both report sources share.

A rollup row sums one deployment's canaries over one UTC hour. Latency and TTFT go into log-spaced
buckets (each 5 % wider than the last, so a percentile read from them is within 2.5 % of the true
value); percentiles are computed from bucket counts by nearest rank. The Log Analytics queries
bucket the same way (`kql/*.kql`), so the two sources give the same figures for the same data.

Counting rules: availability counts scheduled canaries (attempt 0) that were not cancelled;
failures by kind likewise; latency and TTFT come from ok scheduled canaries; tokens and cost count
every canary the monitor sent, re-checks included (they were spent).
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BASE = 1.05
_LOG_BASE = math.log(BASE)
HOUR_S = 3600


def bucket(seconds: float) -> int:
    """The histogram bucket of a duration (milliseconds below 1 ms count as 1 ms)."""
    return math.floor(math.log(max(seconds * 1000.0, 1.0)) / _LOG_BASE)


def bucket_ms(b: int) -> float:
    """The value a bucket stands for: its geometric middle, in milliseconds."""
    return float(BASE ** (b + 0.5))


def percentile(hist: Mapping[int, int], p: float) -> float | None:
    """Nearest-rank percentile (0 < p <= 100) of a bucket histogram, in ms; None when empty."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(p / 100.0 * total))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return round(bucket_ms(b), 1)
    return round(bucket_ms(max(hist)), 1)  # pragma: no cover - rank <= total always stops above


def percentiles(hist: Mapping[int, int], ps: Sequence[float]) -> list[float | None]:
    """Several nearest-rank percentiles in one pass over the sorted buckets (ps ascending)."""
    total = sum(hist.values())
    if total <= 0:
        return [None] * len(ps)
    ranks = [max(1, math.ceil(p / 100.0 * total)) for p in ps]
    out: list[float | None] = []
    seen = 0
    items = sorted(hist.items())
    i = 0
    for rank in ranks:
        while i < len(items) and seen + items[i][1] < rank:
            seen += items[i][1]
            i += 1
        out.append(round(bucket_ms(items[min(i, len(items) - 1)][0]), 1))
    return out


def merge(into: dict[int, int], more: Mapping[int, int]) -> dict[int, int]:
    for b, n in more.items():
        into[b] = into.get(b, 0) + n
    return into


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps would build one for every call


def encode_hist(hist: Mapping[int, int]) -> str:
    """Storage form: a JSON list of [bucket, count] pairs in bucket order (decoded at C speed)."""
    return _COMPACT.encode(sorted(hist.items()))


def decode_hist(text: str) -> dict[int, int]:
    return dict(json.loads(text))


@dataclass
class Hour:
    """One deployment's canaries in one UTC hour."""

    canaries: int = 0  # scheduled, not cancelled
    ok: int = 0
    rechecks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    tps_sum: float = 0.0  # output tokens per second, summed over ok canaries that streamed > 1 token
    tps_n: int = 0
    model: str = ""
    kinds: dict[str, list[Any]] = field(default_factory=dict)  # kind -> [count, request_id, apim, at]
    latency: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)


Key = tuple[int, str, str]  # (epoch hour, resource, deployment)


@dataclass(frozen=True, slots=True)
class Canary:
    """The fields of a stored result a rollup needs."""

    started_at: float
    resource: str
    deployment: str
    model: str
    attempt: int
    kind: str
    total_s: float | None
    ttft_s: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    request_id: str | None
    apim_request_id: str | None


def aggregate(canaries: Iterable[Canary]) -> dict[Key, Hour]:
    hours: dict[Key, Hour] = {}
    for c in canaries:
        key = (int(c.started_at // HOUR_S), c.resource, c.deployment)
        h = hours.get(key)
        if h is None:
            h = hours[key] = Hour()
        h.model = c.model
        h.input_tokens += c.input_tokens or 0
        h.output_tokens += c.output_tokens or 0
        h.cost_usd += c.cost_usd or 0.0
        if c.attempt > 0:
            h.rechecks += 1
            continue
        if c.kind == "cancelled":
            continue
        h.canaries += 1
        if c.kind == "ok":
            h.ok += 1
            if c.total_s is not None:
                b = bucket(c.total_s)
                h.latency[b] = h.latency.get(b, 0) + 1
            if c.ttft_s is not None:
                b = bucket(c.ttft_s)
                h.ttft[b] = h.ttft.get(b, 0) + 1
            tps = tokens_per_s(c)
            if tps is not None:
                h.tps_sum += tps
                h.tps_n += 1
        else:
            entry = h.kinds.setdefault(c.kind, [0, None, None, 0.0])
            entry[0] += 1
            if c.started_at >= entry[3] and (c.request_id or c.apim_request_id):
                entry[1], entry[2], entry[3] = c.request_id, c.apim_request_id, c.started_at
    return hours


def tokens_per_s(c: Canary) -> float | None:
    """Output tokens per second after the first token (None when it cannot be told)."""
    if c.total_s is None or c.ttft_s is None or not c.output_tokens or c.output_tokens <= 1:
        return None
    span = c.total_s - c.ttft_s
    return (c.output_tokens - 1) / span if span > 0 else None


def reader(index: Mapping[str, int]) -> Callable[[Sequence[Any]], Canary]:
    """Rows laid out by ``index`` (column name -> position) -> Canary; the positions looked up once."""
    pick = operator.itemgetter(*(index[name] for name in CANARY_FIELDS))
    return lambda row: Canary(*pick(row))


CANARY_FIELDS = ("started_at", "resource", "deployment", "model", "attempt", "kind", "total_s", "ttft_s",
                 "input_tokens", "output_tokens", "cost_usd", "request_id", "apim_request_id")
