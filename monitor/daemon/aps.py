"""The APScheduler 3 the canary scheduler runs on, with its per-run overhead cut where APScheduler
offers seams: the timer, the job store and the executor. Each deployment stays one APScheduler job;
what runs when (intervals, coalescing, misfire grace, max instances) is APScheduler's own.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.executors.base import run_coroutine_job
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler


def scheduler(submitted: Callable[[str, datetime], None]) -> AsyncIOScheduler:
    """An AsyncIOScheduler in UTC on the running loop; ``submitted(job_id, due)`` for every run started."""
    return _LoopScheduler(timezone=UTC, jobstores={"default": _JobStore()},
                          executors={"default": _Executor(submitted)})


class _LoopScheduler(AsyncIOScheduler):  # type: ignore[misc]  # APScheduler 3 has no type hints
    """AsyncIOScheduler whose own timer wakes it directly. The stock timer calls the thread-safe
    ``wakeup``, which goes through call_soon_threadsafe: a self-pipe write and read and one more loop
    pass for every run of every job (about 0.06 ms per canary, bench/daemon_bench.py). The timer
    always fires on the loop's own thread, so nothing needs the detour."""

    def _start_timer(self, wait_seconds: float | None) -> None:
        self._stop_timer()
        if wait_seconds is not None:
            self._timeout = self._eventloop.call_later(wait_seconds, self._wake)

    def _wake(self) -> None:
        self._stop_timer()
        self._start_timer(self._process_jobs())


class _JobStore(MemoryJobStore):  # type: ignore[misc]  # APScheduler 3 has no type hints
    """MemoryJobStore ordering jobs by ``datetime.timestamp()``. The stock store converts with
    ``calendar.timegm(dt.utctimetuple())`` in Python, three times for every run of every job (the due
    check, and the job's old and new time when it moves): the biggest part of its cost per canary. Every
    time here is timezone-aware (the scheduler's timezone is UTC), for which both give the same instant,
    and the store compares only timestamps it made itself."""

    def get_due_jobs(self, now: datetime) -> list[Job]:
        now_timestamp = now.timestamp()
        pending = []
        for job, timestamp in self._jobs:
            if timestamp is None or timestamp > now_timestamp:
                break
            pending.append(job)
        return pending

    def add_job(self, job: Job) -> None:
        if job.id in self._jobs_index:
            raise ConflictingIdError(job.id)
        timestamp = _timestamp(job.next_run_time)
        self._jobs.insert(self._get_job_index(timestamp, job.id), (job, timestamp))
        self._jobs_index[job.id] = (job, timestamp)

    def update_job(self, job: Job) -> None:
        old_job, old_timestamp = self._jobs_index.get(job.id, (None, None))
        if old_job is None:
            raise JobLookupError(job.id)
        old_index = self._get_job_index(old_timestamp, old_job.id)
        new_timestamp = _timestamp(job.next_run_time)
        if old_timestamp == new_timestamp:
            self._jobs[old_index] = (job, new_timestamp)
        else:
            del self._jobs[old_index]
            self._jobs.insert(self._get_job_index(new_timestamp, job.id), (job, new_timestamp))
        self._jobs_index[old_job.id] = (job, new_timestamp)


def _timestamp(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


class _Executor(AsyncIOExecutor):  # type: ignore[misc]  # APScheduler 3 has no type hints
    """AsyncIOExecutor for coroutine jobs only (every job here is ``CanaryScheduler._run``) that tells
    ``submitted`` when a run was due. The stock one asks ``inspect`` whether the job is a coroutine
    function on every run, and the due time would otherwise come through a job-submitted listener,
    called through the scheduler's event dispatch for every run of every job."""

    def __init__(self, submitted: Callable[[str, datetime], None]) -> None:
        super().__init__()
        self._submitted = submitted

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        def callback(f: asyncio.Task[list[object]]) -> None:
            self._pending_futures.discard(f)
            try:
                events = f.result()
            except BaseException:  # noqa: BLE001 - as the stock executor: counted as the job's error
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, events)

        self._submitted(job.id, run_times[-1])
        f = self._eventloop.create_task(run_coroutine_job(job, job._jobstore_alias, run_times,
                                                          self._logger.name))
        f.add_done_callback(callback)
        self._pending_futures.add(f)
