from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.daemon import aps
from monitor.daemon.aps import _JobStore

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


async def _nothing() -> None:
    return None


def _job(scheduler: AsyncIOScheduler, job_id: str, at: datetime | None) -> Job:
    return Job(scheduler, id=job_id, func=_nothing, trigger=IntervalTrigger(seconds=10, timezone=UTC),
               executor="default", args=(), kwargs={}, name=job_id, misfire_grace_time=10, coalesce=True,
               max_instances=1, next_run_time=at)


def test_the_job_store_orders_and_hands_out_due_jobs_as_apschedulers_own_does() -> None:
    scheduler = AsyncIOScheduler(timezone=UTC)
    ours, stock = _JobStore(), MemoryJobStore()
    rng = random.Random(7)  # noqa: S311 - a reproducible sequence, not cryptography
    # few distinct instants (whole and fractional seconds, microseconds) so that many jobs share one
    instants = [T0 + timedelta(seconds=s, microseconds=us) for s in range(5) for us in (0, 1, 999_999)]
    ids: list[str] = []
    for step in range(3000):
        op = rng.random()
        if op < 0.3 or not ids:
            job_id = f"res/dep-{step:04d}"
            at = rng.choice([*instants, None])
            for store in (ours, stock):
                store.add_job(_job(scheduler, job_id, at))
            ids.append(job_id)
        elif op < 0.85:
            job_id = rng.choice(ids)
            at = rng.choice([*instants, None])
            for store in (ours, stock):
                store.update_job(_job(scheduler, job_id, at))
        else:
            job_id = ids.pop(rng.randrange(len(ids)))
            for store in (ours, stock):
                store.remove_job(job_id)
        now = rng.choice(instants)
        assert [j.id for j in ours.get_all_jobs()] == [j.id for j in stock.get_all_jobs()]
        assert [j.id for j in ours.get_due_jobs(now)] == [j.id for j in stock.get_due_jobs(now)]
        assert ours.get_next_run_time() == stock.get_next_run_time()


async def test_a_run_reports_when_it_was_due_and_runs_the_job() -> None:
    submitted: list[tuple[str, datetime]] = []
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    scheduler = aps.scheduler(lambda job_id, due: submitted.append((job_id, due)))
    scheduler.start()
    try:
        due = datetime.now(UTC)
        scheduler.add_job(job, IntervalTrigger(seconds=3600, timezone=UTC), id="res/dep",
                          next_run_time=due, coalesce=True, max_instances=1, misfire_grace_time=3600)
        await asyncio.wait_for(ran.wait(), 10)
    finally:
        scheduler.shutdown(wait=False)
    assert submitted == [("res/dep", due)]
