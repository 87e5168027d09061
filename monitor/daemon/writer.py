"""The store's write path for the daemon: results queue up and land in batches from a worker thread.

When the store cannot be written (disk full, read-only, I/O errors) canaries go on: results wait in
memory, up to ``max_pending`` (then the oldest are dropped and counted), and are written when the store
works again. Each turn is one log event (-> telemetry): unwritable, dropping, written again.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Iterable
from typing import Any

from monitor.errors import StoreError
from monitor.logs import event
from monitor.store.sqlite import Store

log = logging.getLogger("monitor.writer")
# a batch per quarter second, not a thread hop and a transaction per result: at 100 canaries a second
# this is most of the writer's CPU (bench/daemon_bench.py); a SIGKILL can lose at most this much
LINGER_S = 0.25
STOP_TIMEOUT_S = 5.0  # how long ResultWriter.stop() may take by default (the daemon stops within 15 s)
# results kept in memory while the store cannot be written: a row is ~1 kB, so this is ~20 MB, and
# 5.5 hours of a 60-deployment fleet probed every minute
MAX_PENDING = 20_000


class Backlog:
    """The rows waiting to be written, oldest first: rows a failed write gives back go to the front
    (they are the oldest), and when the bound is reached the oldest make room."""

    def __init__(self) -> None:
        self._rows: collections.deque[tuple[Any, ...]] = collections.deque()
        self._ready = asyncio.Event()

    def put_nowait(self, row: tuple[Any, ...]) -> None:
        self._rows.append(row)
        self._ready.set()

    def put_back(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self._rows.extendleft(reversed(list(rows)))
        if self._rows:
            self._ready.set()

    def drop_oldest(self, n: int) -> int:
        n = min(n, len(self._rows))
        for _ in range(n):
            self._rows.popleft()
        return n

    async def get(self) -> tuple[Any, ...]:
        while not self._rows:
            self._ready.clear()
            await self._ready.wait()
        return self._rows.popleft()

    def get_nowait(self) -> tuple[Any, ...]:
        return self._rows.popleft()

    def empty(self) -> bool:
        return not self._rows

    def qsize(self) -> int:
        return len(self._rows)


class ResultWriter:
    """Queues results and writes them in batches from a worker thread.

    A write, once started, runs shielded: cancelling whoever awaits it (``stop()`` cancelling the
    writer task) leaves it running, and it is settled when it ends: counted in ``written``, or, when
    the store refused it, put back in the queue to be tried again. ``stop()`` waits for writes in
    progress and writes what is queued, for a bounded time: results it could not write by then are
    counted in ``lost`` and reported in one log line.

    While the store refuses writes the rows wait (``pending``), at most ``max_pending`` of them: beyond
    that the oldest are dropped and counted in ``dropped``.
    """

    def __init__(self, store: Store, batch: int = 500, retry_s: float = 1.0,
                 linger_s: float = LINGER_S, max_pending: int = MAX_PENDING) -> None:
        self._store = store
        self._batch = batch
        self._linger_s = linger_s  # how long the first result of a batch waits for others to join it
        self._retry_s = retry_s  # the pause after the store refused a batch
        self._queue = Backlog()
        self._max_pending = max_pending
        self._task: asyncio.Task[None] | None = None
        self._writing: dict[asyncio.Future[None], int] = {}  # writes in progress -> their row count
        self._stopped = False
        self.written = 0
        self.failures = 0  # batches the store refused (each is tried again)
        self.lost = 0  # results that will not be written: stop() ran out of time, or an unexpected error
        self.last_error: str | None = None
        self.dropped = 0  # results dropped because the store could not be written and memory was full
        self.writable = True  # false from a refused write to the next write that lands
        self._episode_dropped = 0  # dropped since the store last refused a write

    @property
    def pending(self) -> int:
        """Results waiting to be written (queued and in a write in progress)."""
        return self._queue.qsize() + sum(self._writing.values())

    def put(self, row: tuple[Any, ...]) -> None:
        self._queue.put_nowait(row)
        self._bound()

    def _bound(self) -> None:
        over = self.pending - self._max_pending
        if over <= 0:
            return
        dropped = self._queue.drop_oldest(over)
        if dropped and not self._episode_dropped:
            event(log, logging.ERROR, f"the store still cannot be written and {self._max_pending} results "
                  "wait in memory: the oldest are dropped from now on", event="results_dropped",
                  max_pending=self._max_pending, error=self.last_error, store=self._store.path)
        self.dropped += dropped
        self._episode_dropped += dropped

    def status(self) -> dict[str, Any]:
        """The write path for /status: writable, pending, dropped, written, last error."""
        return {"writable": self.writable, "pending": self.pending, "max_pending": self._max_pending,
                "written": self.written, "dropped": self.dropped, "failed_writes": self.failures,
                "last_error": None if self.writable else self.last_error}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="result-writer")

    async def _loop(self) -> None:
        while True:
            row = await self._queue.get()
            try:
                if self._queue.qsize() < self._batch:  # a backlog (catching up) need not wait for more
                    await asyncio.sleep(self._linger_s)
            except asyncio.CancelledError:
                self._queue.put_back([row])  # stop() writes it
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
            if not self.writable:
                self._writable_again()
        elif self._stopped:
            pass  # already counted lost by stop()
        elif exc is None or isinstance(exc, StoreError):
            self.failures += 1
            self.last_error = str(exc) if exc is not None else "write cancelled"
            if self.writable and exc is not None:
                self.writable = False
                self._episode_dropped = 0
                event(log, logging.ERROR, "the store cannot be written: canaries go on, results wait in "
                      "memory and are written when it works again", event="store_unwritable",
                      error=self.last_error, pending=self.pending + len(rows),
                      max_pending=self._max_pending, store=self._store.path)
            self._queue.put_back(rows)  # keep them; the next batch retries
            self._bound()
        else:  # a bug, not the store: retrying would fail again
            self.lost += len(rows)
            self.last_error = repr(exc)

    def _writable_again(self) -> None:
        self.writable = True
        event(log, logging.WARNING if not self._episode_dropped else logging.ERROR,
              "the store is written again" + (f"; {self._episode_dropped} results were dropped meanwhile"
                                              if self._episode_dropped else ", nothing was dropped"),
              event="store_writable", dropped=self._episode_dropped, dropped_total=self.dropped,
              backlog=self.pending, store=self._store.path)
        self._episode_dropped = 0

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
