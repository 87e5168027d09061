"""The embedded store (SQLite, WAL): canary results, health state, incidents. Results are written
here before any exporter sees them, so an exporter outage loses nothing.

Blocking sqlite3 calls run in worker threads; one lock serialises them. Schema changes are numbered
migrations applied in order (PRAGMA user_version).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import StoreError
from .results import CanaryResult

MIGRATIONS: list[str] = [
    # 1: results, key/value state, incidents
    """
    CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        resource TEXT NOT NULL, deployment TEXT NOT NULL, model TEXT NOT NULL, location TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        kind TEXT NOT NULL, status INTEGER,
        total_s REAL, headers_s REAL, ttft_s REAL,
        input_tokens INTEGER, output_tokens INTEGER, cache_creation_tokens INTEGER, cache_read_tokens INTEGER,
        cost_usd REAL,
        request_id TEXT, apim_request_id TEXT, response_model TEXT, stop_reason TEXT,
        detail TEXT, retry_after REAL
    );
    CREATE INDEX results_by_deployment ON results (resource, deployment, started_at);
    CREATE INDEX results_by_time ON results (started_at);
    CREATE TABLE state (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        resource TEXT NOT NULL, deployment TEXT NOT NULL, kind TEXT NOT NULL,
        started_at REAL NOT NULL, ended_at REAL,
        first_kind TEXT, hint TEXT, request_id TEXT, apim_request_id TEXT,
        UNIQUE (resource, deployment, kind, started_at)
    );
    """,
]

_COLUMNS = ("started_at", "resource", "deployment", "model", "location", "attempt", "kind", "status",
            "total_s", "headers_s", "ttft_s", "input_tokens", "output_tokens", "cache_creation_tokens",
            "cache_read_tokens", "cost_usd", "request_id", "apim_request_id", "response_model",
            "stop_reason", "detail", "retry_after")
_INSERT = f"INSERT INTO results ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608 - constant column names


def result_row(r: CanaryResult, cost: float | None) -> tuple[Any, ...]:
    t, u = r.timings, r.usage
    return (r.started_at.timestamp(), r.resource, r.deployment, r.model, r.location, r.attempt,
            r.kind.value, r.status_code, t.total_s, t.headers_s, t.ttft_s,
            u.input_tokens if u else None, u.output_tokens if u else None,
            u.cache_creation_input_tokens if u else None, u.cache_read_input_tokens if u else None,
            cost, r.request_id, r.apim_request_id, r.response_model, r.stop_reason, r.detail,
            r.verdict.retry_after)


class Store:
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, path: str | Path) -> Store:
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(p, check_same_thread=False, isolation_level=None, timeout=10)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            store = cls(conn, str(p))
            store._migrate()
            return store
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store at {p}: {exc}") from None

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"the store at {self.path} has schema version {version}, newer than this "
                             f"foundry-monitor knows ({len(MIGRATIONS)}); upgrade foundry-monitor")
        for number in range(version, len(MIGRATIONS)):
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executescript(MIGRATIONS[number].replace("\n    ", "\n"))
                self._conn.execute(f"PRAGMA user_version = {number + 1}")

    def save_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                self._conn.executemany(_INSERT, rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK") if self._conn.in_transaction else None
                raise StoreError(f"cannot write results to {self.path}: {exc}") from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._conn.cursor()
            cur.row_factory = sqlite3.Row
            return cur.execute(sql, params).fetchall()

    def put_state(self, name: str, value: Any, now: datetime) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO state (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (name, json.dumps(value), now.timestamp()))

    def get_state(self, name: str) -> Any:
        rows = self.query("SELECT value FROM state WHERE name = ?", (name,))
        if not rows:
            return None
        try:
            return json.loads(rows[0]["value"])
        except ValueError:
            return None

    def instance_id(self) -> str:
        """This daemon's stable identity (telemetry service.instance.id): made once, kept across restarts."""
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO state (name, value, updated_at) VALUES (?, ?, ?)",
                               ("instance_id", json.dumps(str(uuid.uuid4())), time.time()))
        value = self.get_state("instance_id")
        return value if isinstance(value, str) and value else str(uuid.uuid4())

    def open_incident(self, resource: str, deployment: str, kind: str, started_at: datetime,
                      first_kind: str | None, hint: str | None, request_id: str | None,
                      apim_request_id: str | None) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO incidents (resource, deployment, kind, started_at, first_kind, hint,"
                " request_id, apim_request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (resource, deployment, kind, started_at.timestamp(), first_kind, hint, request_id,
                 apim_request_id))

    def close_incident(self, resource: str, deployment: str, kind: str, ended_at: datetime) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE incidents SET ended_at = ? WHERE resource = ? AND deployment = ? AND kind = ? "
                "AND ended_at IS NULL", (ended_at.timestamp(), resource, deployment, kind))

    def integrity_ok(self) -> bool:
        return bool(self.query("PRAGMA integrity_check")[0][0] == "ok")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class ResultWriter:
    """Queues results and writes them in batches from a worker thread; ``flush`` drains everything."""

    def __init__(self, store: Store, batch: int = 500) -> None:
        self._store = store
        self._batch = batch
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failures = 0

    def put(self, row: tuple[Any, ...]) -> None:
        self._queue.put_nowait(row)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="result-writer")

    async def _loop(self) -> None:
        while True:
            rows = [await self._queue.get()]
            await self._write(rows)

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        while len(rows) < self._batch and not self._queue.empty():
            rows.append(self._queue.get_nowait())
        try:
            await asyncio.to_thread(self._store.save_results, rows)
            self.written += len(rows)
        except StoreError:
            self.failures += 1
            for row in rows:  # keep them; the next batch retries
                self._queue.put_nowait(row)
            await asyncio.sleep(1.0)

    async def flush(self) -> None:
        while not self._queue.empty():
            await self._write([self._queue.get_nowait()])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()
