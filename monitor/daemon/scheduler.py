"""When canaries run: one APScheduler job per deployment, staggered, capped, confirmed, backed off.

- First runs are spread evenly across each interval (no thundering herd).
- A semaphore caps canaries in flight; a job never overlaps itself (max_instances=1, coalesce).
- A failure is re-checked ``confirm`` times before it counts, except kinds that are certain at once.
- A 429 stretches the deployment's interval: exponential with full jitter, never shorter than the
  normal interval or the server's retry-after, capped. The canary never adds to a quota problem.
- A monthly budget sets the shortest interval whose canaries fit in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.triggers.interval import IntervalTrigger

from monitor.canary.fleet import Fleet
from monitor.canary.pricing import cost_usd, estimated_canary_usage
from monitor.canary.results import CanaryResult, FailureKind, Timings, Verdict
from monitor.canary.run import Target, run_canary
from monitor.config import MAX_DURATION
from monitor.logs import event

from . import aps

log = logging.getLogger("monitor.scheduler")

CERTAIN_AT_ONCE = frozenset({FailureKind.INVALID_API_KEY, FailureKind.PERMISSION_DENIED,
                             FailureKind.DEPLOYMENT_NOT_FOUND, FailureKind.INVALID_MODEL,
                             FailureKind.ENDPOINT_NOT_FOUND,
                             FailureKind.RATE_LIMITED, FailureKind.CANCELLED})
BACKOFF_CAP_S = 900.0
SECONDS_PER_MONTH = 30.4375 * 86400
CANCELLED = Verdict(FailureKind.CANCELLED, "The daemon stopped before this canary finished; nothing is wrong "
                    "with the deployment.")

Key = tuple[str, str]


class ResultSink(Protocol):
    def record(self, result: CanaryResult) -> None:
        """Every canary, re-checks included: store, telemetry, log line."""

    def confirmed(self, result: CanaryResult) -> None:
        """The result that counts for health, after confirmation."""

    def expect_every(self, key: Key, interval_s: float) -> None:
        """The next result of this deployment comes after interval_s (a back-off, or its end)."""


def budget_interval(cost_per_canary: float, monthly_usd: float) -> float:
    return cost_per_canary * SECONDS_PER_MONTH / monthly_usd


class CanaryScheduler:
    def __init__(self, fleet: Fleet, sink: ResultSink, *, max_concurrency: int = 64, location: str = "",
                 rng: random.Random | None = None, now: Callable[[], datetime] | None = None) -> None:
        self._fleet = fleet
        self._sink = sink
        self._sem = asyncio.Semaphore(max_concurrency)
        self._location = location
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._now = now or (lambda: datetime.now(UTC))
        self._aps = aps.scheduler(self._submitted)
        self._targets: dict[Key, Target] = {}
        self._interval: dict[Key, float] = {}
        self._throttled: dict[Key, int] = {}
        self._due: dict[str, datetime] = {}
        self._inflight: set[asyncio.Task[object]] = set()
        self._stopping = asyncio.Event()
        self.lateness_s: deque[float] = deque(maxlen=10_000)  # the latest, for benchmarks and tests
        self.rounds_done = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._aps.start()
        self._add(self._fleet.targets)

    def replace(self, fleet: Fleet) -> tuple[list[Key], list[Key]]:
        """Swap in a new fleet: unchanged deployments keep their schedule; returns (added, removed)."""
        old, new = self._targets, fleet.by_key
        removed = [k for k in old if k not in new or old[k] != new[k]]
        added = [k for k in new if k not in old or old[k] != new[k]]
        for key in removed:
            with contextlib.suppress(Exception):
                self._aps.remove_job(_job_id(key))
            self._targets.pop(key, None)
        self._fleet = fleet
        self._add([new[k] for k in added])
        return added, removed

    async def stop(self, grace_s: float) -> None:
        """No new canaries; wait up to ``grace_s`` for those in flight, then cancel (recorded)."""
        self._stopping.set()
        self._aps.pause()
        pending = {t for t in self._inflight if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        self._aps.shutdown(wait=False)

    # --- scheduling ------------------------------------------------------------------------------

    def _add(self, targets: list[Target]) -> None:
        groups: dict[float, list[Target]] = {}
        for t in sorted(targets, key=lambda t: t.key):
            interval = self._effective_interval(t, None)
            self._targets[t.key], self._interval[t.key] = t, interval
            groups.setdefault(interval, []).append(t)
        start = self._now()
        for interval, group in groups.items():
            for i, t in enumerate(group):
                first = start + timedelta(seconds=interval * i / len(group))
                # next_run_time given: the trigger alone would skip a start date already past by the time
                # the job is added, and the first deployment would wait a whole interval
                trigger = IntervalTrigger(seconds=interval, start_date=first, timezone=UTC)
                self._aps.add_job(self._run, trigger, args=[t.key], id=_job_id(t.key), max_instances=1,
                                  coalesce=True, misfire_grace_time=max(1, int(interval)),
                                  replace_existing=True, next_run_time=first)

    def _effective_interval(self, t: Target, measured_cost: float | None) -> float:
        interval = t.settings.interval
        if t.budget_usd:
            cost = measured_cost if measured_cost is not None else cost_usd(
                t.model, estimated_canary_usage(t.settings.prompt, t.settings.max_tokens))
            if cost:
                # capped like any configured duration: a budget of a fraction of a cent must not overflow
                need = min(budget_interval(cost, t.budget_usd), MAX_DURATION)
                if need > interval:
                    if t.key not in self._interval or need > self._interval[t.key]:
                        event(log, logging.INFO, "budget sets the canary interval", event="budget",
                              resource=t.resource, deployment=t.deployment, interval_s=round(need, 1),
                              monthly_usd=t.budget_usd, cost_per_canary_usd=round(cost, 8))
                    interval = need
        return interval

    def _submitted(self, job_id: str, due: datetime) -> None:
        self._due[job_id] = due

    async def _run(self, key: Key) -> None:
        target = self._targets.get(key)
        if target is None or self._stopping.is_set():
            return
        due = self._due.pop(_job_id(key), None)
        if due is not None:
            self.lateness_s.append((self._now() - due).total_seconds())
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            result = await self._confirmed_canary(target)
        finally:
            self._inflight.discard(task)
        self._sink.confirmed(result)
        self._after(target, result)
        self.rounds_done += 1

    async def _confirmed_canary(self, target: Target) -> CanaryResult:
        s = target.settings
        result = await self._one(target, 0)
        for attempt in range(1, s.confirm + 1):
            if result.ok or result.kind in CERTAIN_AT_ONCE or self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), s.confirm_interval)
            if self._stopping.is_set():
                break
            result = await self._one(target, attempt)
        return result

    async def _one(self, target: Target, attempt: int) -> CanaryResult:
        started = self._now()
        try:
            async with self._sem:
                r = await run_canary(target, self._fleet.transports[target.resource],
                                     self._fleet.auths[target.resource], self._location)
        except asyncio.CancelledError:
            self._sink.record(cancelled_result(target, started, self._location, attempt))
            raise
        if attempt:
            r = _with_attempt(r, attempt)
        self._sink.record(r)
        return r

    def _after(self, t: Target, r: CanaryResult) -> None:
        """Back off on 429; return to the normal interval after; follow the budget."""
        base = self._interval.get(t.key, t.settings.interval)
        if r.kind is FailureKind.RATE_LIMITED:
            n = self._throttled.get(t.key, 0) + 1
            self._throttled[t.key] = n
            ceiling = min(max(BACKOFF_CAP_S, base), base * 2 ** n)
            delay = max(base, r.verdict.retry_after or 0.0, self._rng.uniform(0, ceiling))
            self._aps.modify_job(_job_id(t.key), next_run_time=self._now() + timedelta(seconds=delay))
            self._sink.expect_every(t.key, delay)  # silence during a back-off is not "unknown"
            event(log, logging.INFO, "throttled: backing off", event="backoff", resource=t.resource,
                  deployment=t.deployment, delay_s=round(delay, 1), streak=n)
            return
        if self._throttled.pop(t.key, None) is not None:
            self._sink.expect_every(t.key, base)
        if r.ok and r.usage is not None and t.budget_usd:
            measured = cost_usd(t.model, r.usage)
            new = self._effective_interval(t, measured)
            if new > base * 1.01:
                self._interval[t.key] = new
                self._aps.reschedule_job(_job_id(t.key), trigger=IntervalTrigger(
                    seconds=new, start_date=self._now() + timedelta(seconds=new), timezone=UTC))

    def interval_of(self, key: Key) -> float | None:
        return self._interval.get(key)

    def next_run(self, key: Key) -> datetime | None:
        job = self._aps.get_job(_job_id(key))
        return None if job is None else job.next_run_time


def _job_id(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def _with_attempt(r: CanaryResult, attempt: int) -> CanaryResult:
    from dataclasses import replace

    return replace(r, attempt=attempt)


def cancelled_result(t: Target, started: datetime, location: str, attempt: int = 0) -> CanaryResult:
    return CanaryResult(resource=t.resource, deployment=t.deployment, model=t.model, location=location,
                        started_at=started, verdict=CANCELLED, status_code=None, timings=Timings(),
                        usage=None, request_id=None, apim_request_id=None, response_model=None,
                        stop_reason=None, detail="cancelled at shutdown", attempt=attempt)
