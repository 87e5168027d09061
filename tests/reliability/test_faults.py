"""The fault matrix: one daemon, one deployment per emulator fault kind (all at once) plus healthy ones.

What is checked over a bounded run (12 s, interval 1 s, timeout 800 ms):

- the daemon stays up and answers /healthz the whole time, and stops cleanly;
- every canary the scheduler launched produced exactly one result (attempt 0), which reached the
  emulator exactly once (its ground-truth log agrees per deployment) and was stored once: no loss, no
  duplicate (no request id stored twice);
- every fault is classified as the README says;
- healthy deployments keep their schedule: lateness p99 < 100 ms, no missed or skipped runs, arrivals
  one interval apart.

How launches are counted: ``monitor/daemon/scheduler.py`` keeps no per-deployment counter. It has two global
ones: ``lateness_s`` (one entry per canary that passed the "not stopping" gate in ``_run``) and
``rounds_done`` (canaries that ended without being cancelled). Per deployment we listen to the
scheduler's own APScheduler ``EVENT_JOB_SUBMITTED`` events (job id ``resource/deployment``). A
submission whose ``_run`` found the daemon stopping launches nothing and leaves its due time in
``scheduler._due`` (``_run`` pops it only when it launches), so it is subtracted. The per-deployment sum
must equal ``len(lateness_s)``; the emulator log is an independent third count (every fault here reaches
the emulator: even ``hang`` and ``reset`` are logged once their connection ends).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
)

from monitor.canary.results import FailureKind
from monitor.daemon.service import STOP_BUDGET_S
from monitor.daemon.writer import ResultWriter
from monitor.emulator.runner import EmulatorServer
from monitor.emulator.scenario import FaultKind
from monitor.errors import StoreError
from monitor.store.sqlite import Store, result_row
from tests.daemon_helpers import config_text, make_daemon, until
from tests.factories import result

K = FailureKind
# What each fault must be classified as (streaming canaries, API-key auth), per README "Failure classes".
EXPECTED: dict[FaultKind, FailureKind] = {
    FaultKind.BAD_KEY: K.INVALID_API_KEY,
    FaultKind.EXPIRED_TOKEN: K.INVALID_API_KEY,  # a 401 to an API key is the key's fault
    FaultKind.PERMISSION_DENIED: K.PERMISSION_DENIED,
    FaultKind.DEPLOYMENT_NOT_FOUND: K.DEPLOYMENT_NOT_FOUND,
    FaultKind.INVALID_MODEL: K.INVALID_MODEL,
    FaultKind.INVALID_REQUEST: K.BAD_REQUEST,
    FaultKind.GATEWAY_TIMEOUT: K.TIMEOUT,
    FaultKind.RATE_LIMIT: K.RATE_LIMITED,
    FaultKind.API_ERROR: K.SERVER_ERROR,
    FaultKind.BACKEND_AUTH: K.SERVER_ERROR,
    FaultKind.UNAVAILABLE: K.SERVER_ERROR,
    FaultKind.OVERLOADED: K.OVERLOADED,
    FaultKind.STREAM_ERROR: K.OVERLOADED,
    FaultKind.HANG: K.TIMEOUT,
    FaultKind.RESET: K.CONNECTION_ERROR,
    FaultKind.MALFORMED_JSON: K.MALFORMED_RESPONSE,
    FaultKind.TRUNCATED_STREAM: K.MALFORMED_RESPONSE,
    FaultKind.STALLED_STREAM: K.TIMEOUT,
    FaultKind.ENDLESS_STREAM: K.TIMEOUT,
    FaultKind.HUGE_BODY: K.MALFORMED_RESPONSE,
    FaultKind.REDIRECT: K.UNEXPECTED_STATUS,
}
HEALTHY = [f"healthy-{i}" for i in range(5)]
FAULTY = {f"fault-{kind.value}": kind for kind in FaultKind}
RUN_S = 12.0
INTERVAL_S = 1.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def fault_scenario() -> dict[str, Any]:
    deployments: list[dict[str, Any]] = [
        {"name": n, "model": "claude-haiku-4-5-20251001", "latency": {"base": "5ms"}} for n in HEALTHY]
    deployments += [{"name": n, "model": "claude-haiku-4-5-20251001", "latency": {"base": "5ms"},
                     "faults": [{"kind": kind.value}]} for n, kind in FAULTY.items()]
    return {"api_key": "emu-fault-matrix-key", "deployments": deployments}


def test_every_fault_kind_has_an_expected_class() -> None:
    assert set(EXPECTED) == set(FaultKind), "a new emulator fault needs its expected class here"


@pytest.mark.timeout(60)
async def test_all_faults_at_once_lose_nothing_duplicate_nothing_and_delay_no_healthy_deployment(
        tmp_path: Path) -> None:
    names = HEALTHY + list(FAULTY)
    with EmulatorServer(scenario=fault_scenario()) as emu:
        daemon = make_daemon(tmp_path, config_text(
            emu.base_url, emu.api_key, names, tmp_path / "data",
            defaults={"interval": f"{INTERVAL_S:g}s", "timeout": "800ms", "confirm": 0}))
        events: dict[int, Counter[str]] = {code: Counter() for code in (
            EVENT_JOB_SUBMITTED, EVENT_JOB_MISSED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_ERROR)}

        errors: list[tuple[str, BaseException | None]] = []

        def on_job(ev: JobEvent) -> None:
            events[ev.code][ev.job_id.split("/", 1)[1]] += 1
            if ev.code == EVENT_JOB_ERROR:
                errors.append((ev.job_id.split("/", 1)[1], getattr(ev, "exception", None)))

        # the daemon's own APScheduler: what it submitted, missed or skipped, per deployment
        daemon.scheduler._aps.add_listener(on_job, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED
                                           | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.port is not None or task.done(), timeout=10)
        assert not task.done(), "the daemon did not start"
        healthz: list[int] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + RUN_S
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.port}", timeout=2) as client:
            while loop.time() < end:  # the run itself: /healthz is asked four times a second throughout
                healthz.append((await client.get("/healthz")).status_code)
                assert not task.done(), "the daemon stopped during the fault matrix"
                await asyncio.sleep(0.25)
        before_stop = {name: n for (_, name), (n, _) in daemon.counts.items()}
        daemon.request_stop()
        assert await task == 0
        recorded = {name: n for (_, name), (n, _) in daemon.counts.items()}  # results handed to the sink
    log = emu.log()  # read after the emulator stopped: every request in it has finished
    rows = daemon.store.query("SELECT deployment, attempt, kind, status, request_id FROM results")
    stored = Counter(r["deployment"] for r in rows)
    on_wire = Counter(e["deployment"] for e in log)

    assert healthz and set(healthz) == {200}
    # healthy deployments are never late enough to be missed or skipped; a faulty one whose canary takes
    # its whole timeout (0.8 of the 1 s interval) may overrun on a saturated machine and be skipped once
    # (max_instances=1, by design): such a run is not submitted, so it counts as neither launched nor lost
    assert not any(events[code][n] for code in (EVENT_JOB_MISSED, EVENT_JOB_MAX_INSTANCES) for n in HEALTHY)
    assert not events[EVENT_JOB_MISSED], events[EVENT_JOB_MISSED]
    # the only job errors: canaries cancelled at shutdown (recorded as `cancelled`, then re-raised)
    cancelled_rows = Counter(r["deployment"] for r in rows if r["kind"] == "cancelled")
    assert all(isinstance(exc, asyncio.CancelledError) for _, exc in errors), errors
    assert all(n <= cancelled_rows[name] for name, n in events[EVENT_JOB_ERROR].items()), errors

    # launched per deployment = submissions, minus one that found the daemon stopping
    gated = {name: int(f"emu/{name}" in daemon.scheduler._due) for name in names}
    launched = {name: events[EVENT_JOB_SUBMITTED][name] - gated[name] for name in names}
    assert sum(launched.values()) == len(daemon.scheduler.lateness_s)  # the scheduler's own count
    assert all(n >= 1 for n in launched.values()), launched
    # one result per launched canary, and at most one request on the wire each (the emulator's ground
    # truth); fewer only for canaries that timed out before their request got there (seen on a loaded box)
    assert recorded == launched
    assert all(on_wire[n] <= recorded[n] for n in names), (on_wire, recorded)
    no_answer = Counter(r["deployment"] for r in rows if r["status"] is None
                        and r["kind"] in ("timeout", "cancelled"))
    assert all(recorded[n] - on_wire[n] <= no_answer[n] for n in names), (on_wire, recorded, no_answer)
    assert all(r["attempt"] == 0 for r in rows)  # confirm: 0 -> no re-checks
    cancelled = sum(1 for r in rows if r["kind"] == "cancelled")
    assert daemon.scheduler.rounds_done >= len(rows) - cancelled

    # stored: every result, including those recorded during shutdown (one was lost at shutdown on most
    # runs before the writer's write was shielded, see the test below); nothing stored twice
    assert all(before_stop[n] <= stored[n] for n in names), (before_stop, stored)
    assert stored == recorded
    assert daemon.writer.failures == 0
    ids = [r["request_id"] for r in rows if r["request_id"]]
    assert len(ids) == len(set(ids)), "a request id was stored twice"
    by_id = {e["request_id"]: e["deployment"] for e in log}
    assert all(by_id.get(r["request_id"]) == r["deployment"] for r in rows if r["request_id"])

    kinds: dict[str, set[str]] = {}
    for r in rows:
        kinds.setdefault(r["deployment"], set()).add(r["kind"])
    for name, fault in FAULTY.items():
        assert kinds[name] - {"cancelled"} == {EXPECTED[fault].value}, (name, kinds[name])
    for name in HEALTHY:
        assert kinds[name] - {"cancelled"} == {"ok"}, (name, kinds[name])

    # healthy deployments keep their schedule beside hangs, resets, stalls and floods
    lateness = list(daemon.scheduler.lateness_s)
    p99 = percentile(lateness, 0.99)
    print(f"\nfault matrix: {sum(recorded.values())} canaries, {sum(on_wire.values())} requests seen by the "
          f"emulator, {len(rows)} stored, lateness "
          f"p50 {percentile(lateness, 0.5) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {max(lateness) * 1000:.1f} ms; skipped (overran): {dict(events[EVENT_JOB_MAX_INSTANCES])}")
    assert p99 < 0.100
    for name in HEALTHY:
        arrivals = sorted(e["t_arrival"] for e in log if e["deployment"] == name)
        assert len(arrivals) >= RUN_S / INTERVAL_S - 2, (name, len(arrivals))
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        assert max(gaps) < INTERVAL_S + 0.25 and min(gaps) > INTERVAL_S - 0.25, (name, gaps)


@asynccontextmanager
async def one_busy_worker() -> AsyncIterator[threading.Event]:
    """The loop's default executor has one worker thread, kept busy until the yielded event is set: a
    write handed to ``asyncio.to_thread`` stays queued (not started) until then."""
    loop = asyncio.get_running_loop()
    busy, release = ThreadPoolExecutor(max_workers=1), threading.Event()
    loop.set_default_executor(busy)
    blocker = loop.run_in_executor(None, release.wait)
    try:
        yield release
    finally:
        release.set()
        await blocker


async def test_a_result_recorded_as_the_writer_stops_is_still_stored(tmp_path: Path) -> None:
    """What the fault matrix saw at shutdown (one result in ~300, on most runs, before the fix in
    cc427e5), made deterministic: the writer has taken a row off its queue and handed it to a worker
    thread that has not started it when ``stop()`` cancels the writer. Unshielded, the cancelled
    ``to_thread`` future cancelled the queued work item: the row was never written and ``flush()``
    found an empty queue. Now the write is shielded and stop() waits for it."""
    store = Store.open(tmp_path / "results.sqlite3")
    writer = ResultWriter(store)
    async with one_busy_worker() as release:
        writer.start()
        writer.put(result_row(result(request_id="req_last"), None))
        await until(lambda: writer._queue.empty(), timeout=5)  # the writer holds the row, write queued
        task = writer._task
        assert task is not None
        stopping = asyncio.create_task(writer.stop())
        await until(lambda: task.cancelling() > 0, timeout=5)  # stop() has cancelled the writer task
        release.set()  # only now may the worker thread start the write
        await asyncio.wait_for(stopping, 5)
    stored = store.query("SELECT request_id FROM results")
    store.close()
    assert [r["request_id"] for r in stored] == ["req_last"]
    assert writer.written == 1


async def test_a_caller_can_cancel_a_stop_that_waits_for_a_write(tmp_path: Path) -> None:
    """``stop()`` once caught CancelledError around ``await self._task`` to absorb the writer task's own
    cancellation, but a cancellation of stop() itself landed there too and was swallowed: stop() went on
    to flush() and returned normally, so ``asyncio.wait_for(writer.stop(), budget)`` could not bound it.
    Now stop() waits for the task with ``asyncio.wait`` (which never raises the task's own cancellation),
    so a CancelledError there is stop()'s own and propagates."""
    store = Store.open(tmp_path / "results.sqlite3")
    writer = ResultWriter(store)
    async with one_busy_worker():
        writer.start()
        writer.put(result_row(result(), None))
        await until(lambda: writer._queue.empty(), timeout=5)
        task = writer._task
        assert task is not None
        stopping = asyncio.create_task(writer.stop())
        await until(lambda: task.cancelling() > 0, timeout=5)  # stop() waits for the writer's write
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=5)
        cancelled = stopping.done() and stopping.cancelled()
    if not stopping.done():
        await stopping
    store.close()
    assert cancelled, "stop() returned normally after being cancelled"


class FullDisk(Store):
    """A store whose writes fail the way a full or read-only disk makes them (sqlite3 -> StoreError)."""

    def save_results(self, rows: Any) -> None:
        raise StoreError(f"cannot write results to {self.path}: database or disk is full")


@pytest.mark.timeout(60)
async def test_stopping_while_the_store_cannot_be_written_ends_within_the_stop_budget(tmp_path: Path) -> None:
    """flush() once put a failed batch back and tried again every second, forever, and the daemon's
    _shutdown awaits writer.stop() without a bound: SIGTERM never ended a daemon whose disk was full. Now
    stop() retries for at most its timeout (5 s by default) and counts what it could not write."""
    store = FullDisk.open(tmp_path / "results.sqlite3")
    writer = ResultWriter(store)
    writer.start()
    writer.put(result_row(result(), None))
    await until(lambda: writer.failures >= 1, timeout=5)
    try:
        assert await asyncio.wait_for(writer.stop(), STOP_BUDGET_S) == 1
    finally:
        store.close()
    assert writer.lost == 1 and writer.written == 0
