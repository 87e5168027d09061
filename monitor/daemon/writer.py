"""The store's write path for the daemon: results queue up and land in batches from a worker thread."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from monitor.errors import StoreError
from monitor.logs import event
from monitor.store.sqlite import Store

log = logging.getLogger("monitor.writer")
# a batch per quarter second, not a thread hop and a transaction per result: at 100 canaries a second
# this is most of the writer's CPU (bench/daemon_bench.py); a SIGKILL can lose at most this much
LINGER_S = 0.25
STOP_TIMEOUT_S = 5.0  # how long ResultWriter.stop() may take by default (the daemon stops within 15 s)


class ResultWriter:
    """Queues results and writes them in batches from a worker thread.

    A write, once started, runs shielded: cancelling whoever awaits it (``stop()`` cancelling the
    writer task) leaves it running, and it is settled when it ends: counted in ``written``, or, when
    the store refused it, put back in the queue to be tried again. ``stop()`` waits for writes in
    progress and writes what is queued, for a bounded time: results it could not write by then are
    counted in ``lost`` and reported in one log line.
    """

    def __init__(self, store: Store, batch: int = 500, retry_s: float = 1.0,
                 linger_s: float = LINGER_S) -> None:
        self._store = store
        self._batch = batch
        self._linger_s = linger_s  # how long the first result of a batch waits for others to join it
        self._retry_s = retry_s  # the pause after the store refused a batch
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writing: dict[asyncio.Future[None], int] = {}  # writes in progress -> their row count
        self._stopped = False
        self.written = 0
        self.failures = 0  # batches the store refused (each is tried again)
        self.lost = 0  # results that will not be written: stop() ran out of time, or an unexpected error
        self.last_error: str | None = None

    def put(self, row: tuple[Any, ...]) -> None:
        self._queue.put_nowait(row)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="result-writer")

    async def _loop(self) -> None:
        while True:
            row = await self._queue.get()
            try:
                await asyncio.sleep(self._linger_s)
            except asyncio.CancelledError:
                self._queue.put_nowait(row)  # stop() writes it
                raise
            if not await self._write([row]):
                await asyncio.sleep(self._retry_s)

    def _begin(self, rows: list[tuple[Any, ...]]) -> asyncio.Future[None]:
        """Start writing `rows` plus as many queued rows as fit in a batch, in a worker thread."""
        while len(rows) < self._batch and not self._queue.empty():
            rows.append(self._queue.get_nowait())
        write = asyncio.ensure_future(asyncio.to_thread(self._store.save_results, rows))
        self._writing[write] = len(rows)
        write.add_done_callback(functools.partial(self._settle, rows))
        return write

    def _settle(self, rows: list[tuple[Any, ...]], write: asyncio.Future[None]) -> None:
        """Account for a finished write (runs before anyone awaiting it resumes)."""
        del self._writing[write]
        exc = None if write.cancelled() else write.exception()
        failed = write.cancelled() or exc is not None
        if not failed:
            self.written += len(rows)
            if self._stopped:  # stop() gave up waiting for this write and counted its rows lost
                self.lost -= len(rows)
        elif self._stopped:
            pass  # already counted lost by stop()
        elif exc is None or isinstance(exc, StoreError):
            self.failures += 1
            self.last_error = str(exc) if exc is not None else "write cancelled"
            for row in rows:  # keep them; the next batch retries
                self._queue.put_nowait(row)
        else:  # a bug, not the store: retrying would fail again
            self.lost += len(rows)
            self.last_error = repr(exc)

    async def _write(self, rows: list[tuple[Any, ...]]) -> bool:
        """Write one batch; false when the store refused it (the rows are back in the queue)."""
        try:
            # shielded: a stop() arriving mid-write lets the batch land (and be counted), never drops it
            await asyncio.shield(self._begin(rows))
        except StoreError:
            return False
        return True

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait for writes in progress and write everything queued, trying a batch the store refuses
        again every retry_s; true when all is written, false when `timeout` seconds ran out first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        while True:
            if self._writing:  # the writer task's last write: it lands, or its rows come back to the queue
                done, _ = await asyncio.wait(set(self._writing), timeout=left())
                if not done:
                    return False
                continue
            if self._queue.empty():
                return True
            if left() == 0.0:
                return False
            write = self._begin([self._queue.get_nowait()])
            done, _ = await asyncio.wait({write}, timeout=left())
            if not done:
                return False
            if not write.cancelled() and isinstance(write.exception(), StoreError):
                pause = self._retry_s if deadline is None else min(self._retry_s, deadline - loop.time())
                if pause > 0:
                    await asyncio.sleep(pause)

    async def stop(self, timeout: float | None = STOP_TIMEOUT_S) -> int:
        """Stop the writer task and write what is left, for at most `timeout` seconds (None: no bound).

        Returns the number of results not written (also in ``lost``), and logs one line when there are
        any. A write still running when the time is up may yet land (it is then counted in ``written``
        and taken off ``lost``). Cancelling stop() itself cancels only the waiting.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait() never raises the task's own CancelledError: one raised here is stop()'s own
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                self.last_error = repr(task.exception())
        done = await self.flush(None if deadline is None else max(0.0, deadline - loop.time()))
        still_writing = 0
        if not done:
            self._stopped = True
            still_writing = sum(self._writing.values())
            self.lost += self._queue.qsize() + still_writing
            while not self._queue.empty():
                self._queue.get_nowait()
        if self.lost:
            event(log, logging.ERROR, "results could not be written to the store and are lost",
                  event="results_lost", lost=self.lost, still_writing=still_writing, timeout_s=timeout,
                  error=self.last_error, store=self._store.path)
        return self.lost
