"""Seeded canary history for report tests and benchmarks: the same seed gives the same canaries,
state changes and real usage, whichever source they are read back from."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.canary.classify import HINTS
from monitor.canary.pricing import cost_usd
from monitor.canary.results import CanaryResult, FailureKind, Timings, Usage, Verdict

FAILURES = [FailureKind.RATE_LIMITED, FailureKind.OVERLOADED, FailureKind.SERVER_ERROR, FailureKind.TIMEOUT,
            FailureKind.INVALID_API_KEY]


@dataclass(frozen=True)
class SeedTransition:
    resource: str
    deployment: str
    at: datetime
    from_state: str
    to_state: str
    kind: str | None
    hint: str | None
    request_id: str | None
    apim_request_id: str | None


@dataclass
class Seed:
    results: list[CanaryResult]
    transitions: list[SeedTransition]
    usage: dict[str, tuple[float, float, float]]  # azure resource -> (requests, input, output tokens)


DEPLOYMENTS = [("res-a", "opus", "claude-opus-4-5"), ("res-a", "sonnet", "claude-sonnet-4-5"),
               ("res-b", "haiku", "claude-haiku-4-5")]


def seed(end: datetime, days: int = 60, interval_s: float = 600.0, seed_value: int = 7,
         deployments: list[tuple[str, str, str]] | None = None,
         gap: tuple[float, float] | None = None) -> Seed:
    """Canaries every interval_s for `days` days before `end`; failures in bursts; a monitor gap
    (fractions of the time range, e.g. (0.70, 0.72)) with no canaries at all."""
    rng = random.Random(seed_value)
    deps = deployments or DEPLOYMENTS
    start = end - timedelta(days=days)
    results: list[CanaryResult] = []
    transitions: list[SeedTransition] = []
    n = int((end - start).total_seconds() // interval_s)
    for resource, deployment, model in deps:
        state = "unknown"
        burst: FailureKind | None = None
        for i in range(n):
            frac = i / n
            if gap and gap[0] <= frac < gap[1]:
                continue
            at = start + timedelta(seconds=i * interval_s + rng.uniform(0, 5))
            if burst is None and rng.random() < 0.004:
                burst = rng.choice(FAILURES)
            elif burst is not None and rng.random() < 0.25:
                burst = None
            kind = burst or (FailureKind.OVERLOADED if rng.random() < 0.003 else FailureKind.OK)
            rid = f"req_{deployment}_{i}"
            apim = f"apim-{deployment}-{i}"
            r = _result(resource, deployment, model, at, kind, rid, apim, rng)
            results.append(r)
            if kind is not FailureKind.OK and rng.random() < 0.5:  # a confirmation re-check
                results.append(_result(resource, deployment, model, at + timedelta(seconds=5), kind,
                                       rid + "_r", apim + "-r", rng, attempt=1))
            new = ("healthy" if kind is FailureKind.OK else "throttled" if kind is FailureKind.RATE_LIMITED
                   else "down")
            if new != state:
                transitions.append(SeedTransition(resource, deployment, at, state, new,
                                                  None if kind is FailureKind.OK else kind.value,
                                                  None if kind is FailureKind.OK else HINTS[kind], rid, apim))
                state = new
    usage = {"res-a": (125_000.0, 61_000_000.0, 9_500_000.0), "res-b": (40_000.0, 20_000_000.0, 2_000_000.0)}
    return Seed(results=sorted(results, key=lambda r: r.started_at), transitions=transitions, usage=usage)


def _result(resource: str, deployment: str, model: str, at: datetime, kind: FailureKind, rid: str, apim: str,
            rng: random.Random, attempt: int = 0) -> CanaryResult:
    ok = kind is FailureKind.OK
    total = rng.lognormvariate(-0.4, 0.5) if ok else (30.0 if kind is FailureKind.TIMEOUT else 0.05)
    ttft = total * rng.uniform(0.3, 0.7) if ok else None
    usage = Usage(21, rng.randint(1, 8)) if ok else None
    return CanaryResult(
        resource=resource, deployment=deployment, model=model, location="seed", started_at=at,
        verdict=Verdict(kind, "" if ok else HINTS[kind]), status_code=200 if ok else 500,
        timings=Timings(total_s=total, headers_s=total, ttft_s=ttft), usage=usage,
        request_id=rid, apim_request_id=apim, response_model=model if ok else None,
        stop_reason="max_tokens" if ok else None, detail=None if ok else "seeded failure", attempt=attempt)


def costs(results: list[CanaryResult]) -> Iterator[tuple[CanaryResult, float | None]]:
    for r in results:
        yield r, (cost_usd(r.model, r.usage) if r.usage else None)


NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
