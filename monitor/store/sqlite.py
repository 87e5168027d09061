"""The embedded store (SQLite, WAL): canary results, health state, incidents. Results are written
here before any exporter sees them, so an exporter outage loses nothing.

Blocking sqlite3 calls run in worker threads; one lock serialises them. Schema changes are numbered
migrations applied in order (PRAGMA user_version).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from monitor.canary.results import CanaryResult
from monitor.errors import StoreDamaged, StoreError

from . import rollup

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
    # 2: hourly rollups (reports never scan raw rows) and the state history (time in each state)
    """
    CREATE TABLE rollup_hour (
        hour INTEGER NOT NULL, resource TEXT NOT NULL, deployment TEXT NOT NULL, model TEXT NOT NULL,
        canaries INTEGER NOT NULL, ok INTEGER NOT NULL, rechecks INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
        tps_sum REAL NOT NULL, tps_n INTEGER NOT NULL,
        PRIMARY KEY (hour, resource, deployment)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_kind (
        hour INTEGER NOT NULL, resource TEXT NOT NULL, deployment TEXT NOT NULL, kind TEXT NOT NULL,
        count INTEGER NOT NULL, request_id TEXT, apim_request_id TEXT, example_at REAL NOT NULL,
        PRIMARY KEY (hour, resource, deployment, kind)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_hist (
        hour INTEGER NOT NULL, resource TEXT NOT NULL, deployment TEXT NOT NULL, metric TEXT NOT NULL,
        bucket INTEGER NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (hour, resource, deployment, metric, bucket)
    ) WITHOUT ROWID;
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY,
        resource TEXT NOT NULL, deployment TEXT NOT NULL, at REAL NOT NULL,
        from_state TEXT NOT NULL, to_state TEXT NOT NULL, kind TEXT, hint TEXT,
        request_id TEXT, apim_request_id TEXT, reason TEXT
    );
    CREATE INDEX transitions_by_deployment ON transitions (resource, deployment, at);
    CREATE INDEX transitions_by_time ON transitions (at);
    """,
    # 3: latency/TTFT histograms per local day (in the store's time zone), one row per deployment and
    #    metric: a 30-day report reads a few thousand rows instead of millions of hourly buckets
    """
    CREATE TABLE rollup_hist_day (
        tz TEXT NOT NULL, day TEXT NOT NULL, resource TEXT NOT NULL, deployment TEXT NOT NULL,
        metric TEXT NOT NULL, hist TEXT NOT NULL,
        PRIMARY KEY (tz, day, resource, deployment, metric)
    ) WITHOUT ROWID;
    """,
    # 4: the control plane's changes (discovered deployments added or removed, drift, retirement warnings)
    """
    CREATE TABLE inventory_events (
        id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL,
        subscription TEXT NOT NULL, account TEXT NOT NULL, deployment TEXT NOT NULL,
        field TEXT, before TEXT, after TEXT
    );
    CREATE INDEX inventory_events_by_time ON inventory_events (at);
    CREATE INDEX inventory_events_by_deployment ON inventory_events (account, deployment, kind);
    """,
]
ROLLUPS_FROM = 2  # the migration that introduced rollups: older results are rolled up when it runs
DAY_HISTS_FROM = 3  # the migration that introduced per-day histograms: built from the hourly ones

_COLUMNS = ("started_at", "resource", "deployment", "model", "location", "attempt", "kind", "status",
            "total_s", "headers_s", "ttft_s", "input_tokens", "output_tokens", "cache_creation_tokens",
            "cache_read_tokens", "cost_usd", "request_id", "apim_request_id", "response_model",
            "stop_reason", "detail", "retry_after")
_INDEX = {name: i for i, name in enumerate(_COLUMNS)}
_CANARY = rollup.reader(_INDEX)  # a stored row -> the fields a rollup needs
_INSERT = f"INSERT INTO results ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608 - constant column names


def result_row(r: CanaryResult, cost: float | None) -> tuple[Any, ...]:
    t, u = r.timings, r.usage
    return (r.started_at.timestamp(), r.resource, r.deployment, r.model, r.location, r.attempt,
            r.kind.value, r.status_code, t.total_s, t.headers_s, t.ttft_s,
            u.input_tokens if u else None, u.output_tokens if u else None,
            u.cache_creation_input_tokens if u else None, u.cache_read_input_tokens if u else None,
            cost, r.request_id, r.apim_request_id, r.response_model, r.stop_reason, r.detail,
            r.verdict.retry_after)


BUSY_TIMEOUT_S = 10.0  # how long a statement waits for another connection's lock


def _use_wal(conn: sqlite3.Connection, wait_s: float) -> None:
    """Switch the store to WAL. On a new file, several processes doing this at once contend for the
    exclusive lock it needs, and SQLite answers the losers SQLITE_BUSY at once instead of invoking the
    busy handler (it would deadlock): so the switch is retried here, for up to wait_s."""
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def damaged(exc: sqlite3.Error) -> bool:
    """The error says the file itself is broken (not a database, malformed), not that it is busy or full."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def _statements(script: str) -> list[str]:
    """A migration script split into single statements (a `;` inside a literal or trigger stays put)."""
    *parts, tail = script.split(";")
    statements: list[str] = []
    current = ""
    for part in parts:
        current += part + ";"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if (current + tail).strip():
        statements.append((current + tail).strip())  # incomplete: let SQLite report it
    return statements


class Store:
    def __init__(self, conn: sqlite3.Connection, path: str, timezone: str = "UTC") -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path
        self.timezone = timezone  # the zone of the per-day histograms written from now on
        self._zone = ZoneInfo(timezone)

    @classmethod
    def open(cls, path: str | Path, timezone: str = "UTC") -> Store:
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(p, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store at {p}: {exc}") from None
        try:
            _use_wal(conn, BUSY_TIMEOUT_S)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            store = cls(conn, str(p), timezone)
            store._migrate()
            return store
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error) and damaged(exc):
                raise StoreDamaged(f"the store at {p} is damaged: {exc}") from None
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open the store at {p}: {exc}") from None
            raise

    def _migrate(self) -> None:
        """Bring the schema up to date: every missing migration, then the new user_version, in one
        transaction taken with the write lock (BEGIN IMMEDIATE). The version is read again under the
        lock, so of several processes opening a new store together one migrates and the others find it
        done. Statements run one by one: executescript() would COMMIT the transaction (and drop the
        lock) before running the script."""
        if self._version() == len(MIGRATIONS):
            return  # up to date: no write lock needed
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._version()  # another process may have migrated while we waited for the lock
            for number in range(version, len(MIGRATIONS)):
                for statement in _statements(MIGRATIONS[number]):
                    self._conn.execute(statement)
                if number + 1 == ROLLUPS_FROM:
                    self._backfill_rollups()
                if number + 1 == DAY_HISTS_FROM:
                    self._backfill_day_hists()
            self._conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _version(self) -> int:
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(f"the store at {self.path} has schema version {version}, newer than this "
                             f"foundry-monitor knows ({len(MIGRATIONS)}); upgrade foundry-monitor")
        return version

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one write transaction (BEGIN IMMEDIATE: the write lock is taken first,
        so a read-then-write in it sees what no other process can change before the commit)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK") if self._conn.in_transaction else None
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"cannot write to the store at {self.path}: {exc}") from None
                raise

    def save_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Store results and fold them into the hourly rollups, in one transaction."""
        if not rows:
            return
        hours = rollup.aggregate(map(_CANARY, rows))
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                self._conn.executemany(_INSERT, rows)
                self._add_rollups(hours)
                self._add_day_hists(hours)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):  # a failing disk may fail the rollback too
                    self._conn.execute("ROLLBACK") if self._conn.in_transaction else None
                raise StoreError(f"cannot write results to {self.path}: {exc}") from None

    def _add_rollups(self, hours: dict[rollup.Key, rollup.Hour]) -> None:
        c = self._conn
        c.executemany(
            "INSERT INTO rollup_hour VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (hour, resource, deployment) DO UPDATE SET model = excluded.model, "
            "canaries = canaries + excluded.canaries, ok = ok + excluded.ok, "
            "rechecks = rechecks + excluded.rechecks, input_tokens = input_tokens + excluded.input_tokens, "
            "output_tokens = output_tokens + excluded.output_tokens, "
            "cost_usd = cost_usd + excluded.cost_usd, "
            "tps_sum = tps_sum + excluded.tps_sum, tps_n = tps_n + excluded.tps_n",
            [(*k, h.model, h.canaries, h.ok, h.rechecks, h.input_tokens, h.output_tokens, h.cost_usd,
              h.tps_sum, h.tps_n) for k, h in hours.items()])
        c.executemany(
            "INSERT INTO rollup_kind VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (hour, resource, deployment, kind) DO UPDATE SET count = count + excluded.count, "
            "request_id = iif(excluded.example_at >= example_at AND excluded.request_id IS NOT NULL, "
            "excluded.request_id, request_id), "
            "apim_request_id = iif(excluded.example_at >= example_at AND excluded.request_id IS NOT NULL, "
            "excluded.apim_request_id, apim_request_id), "
            "example_at = max(example_at, excluded.example_at)",
            [(*k, kind, e[0], e[1], e[2], e[3]) for k, h in hours.items() for kind, e in h.kinds.items()])
        c.executemany(
            "INSERT INTO rollup_hist VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (hour, resource, deployment, metric, bucket) "
            "DO UPDATE SET count = count + excluded.count",
            [(*k, metric, b, n) for k, h in hours.items()
             for metric, hist in (("latency", h.latency), ("ttft", h.ttft)) for b, n in hist.items()])

    def _add_day_hists(self, hours: dict[rollup.Key, rollup.Hour]) -> None:
        """Fold hourly histograms into per-day ones (an hour belongs to the local day it starts in)."""
        deltas: dict[tuple[str, str, str], dict[str, dict[int, int]]] = {}
        days: dict[int, str] = {}
        for (hour, resource, deployment), h in hours.items():
            day = days.get(hour)
            if day is None:
                day = days[hour] = datetime.fromtimestamp(hour * rollup.HOUR_S, self._zone).date().isoformat()
            for metric, hist in (("latency", h.latency), ("ttft", h.ttft)):
                if hist:
                    of_day = deltas.setdefault((day, resource, deployment), {})
                    rollup.merge(of_day.setdefault(metric, {}), hist)
        rows = []
        for (day, resource, deployment), metrics in deltas.items():
            # both metrics of a deployment's day in one read: a batch holds most deployments once
            stored = dict(self._conn.execute(
                "SELECT metric, hist FROM rollup_hist_day WHERE tz = ? AND day = ? AND resource = ? "
                "AND deployment = ?", (self.timezone, day, resource, deployment)).fetchall())
            for metric, delta in metrics.items():
                merged = rollup.merge(rollup.decode_hist(stored[metric]) if metric in stored else {}, delta)
                rows.append((self.timezone, day, resource, deployment, metric, rollup.encode_hist(merged)))
        self._conn.executemany("INSERT OR REPLACE INTO rollup_hist_day VALUES (?, ?, ?, ?, ?, ?)", rows)

    def _backfill_day_hists(self) -> None:
        hours: dict[rollup.Key, rollup.Hour] = {}
        for hour, resource, deployment, metric, bucket, count in self._conn.execute(
                "SELECT hour, resource, deployment, metric, bucket, count FROM rollup_hist"):
            h = hours.setdefault((hour, resource, deployment), rollup.Hour())
            (h.latency if metric == "latency" else h.ttft)[bucket] = count
        self._add_day_hists(hours)

    def _backfill_rollups(self) -> None:
        cur = self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM results ORDER BY id")  # noqa: S608
        while batch := cur.fetchmany(10_000):
            self._add_rollups(rollup.aggregate(map(_CANARY, batch)))

    def add_transition(self, resource: str, deployment: str, at: datetime, from_state: str, to_state: str,
                       kind: str | None, hint: str | None, request_id: str | None,
                       apim_request_id: str | None, reason: str | None) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO transitions (resource, deployment, at, from_state, to_state, kind, hint, "
                "request_id, apim_request_id, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (resource, deployment, at.timestamp(), from_state, to_state, kind, hint, request_id,
                 apim_request_id, reason))

    def prune(self, now: datetime, raw_retention_s: float, rollup_retention_s: float) -> dict[str, int]:
        """Drop raw results older than raw_retention_s, rollups and history older than rollup_retention_s."""
        raw_before = now.timestamp() - raw_retention_s
        rollup_before = now.timestamp() - rollup_retention_s
        hour_before = int(rollup_before // rollup.HOUR_S)
        deleted: dict[str, int] = {}
        with self._lock:
            day_before = datetime.fromtimestamp(rollup_before, self._zone).date().isoformat()
            for table, column, limit in (("results", "started_at", raw_before),
                                         ("rollup_hour", "hour", hour_before),
                                         ("rollup_kind", "hour", hour_before),
                                         # hourly histograms serve the status page and reports in another
                                         # zone; the per-day ones carry long reports
                                         ("rollup_hist", "hour", int(raw_before // rollup.HOUR_S)),
                                         ("rollup_hist_day", "day", day_before),
                                         ("transitions", "at", rollup_before),
                                         ("inventory_events", "at", rollup_before)):
                cur = self._conn.execute(f"DELETE FROM {table} WHERE {column} < ?", (limit,))  # noqa: S608
                deleted[table] = cur.rowcount
            self._conn.execute(
                "DELETE FROM incidents WHERE ended_at IS NOT NULL AND ended_at < ?", (rollup_before,))
        return deleted

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._conn.cursor()
            cur.row_factory = sqlite3.Row
            return cur.execute(sql, params).fetchall()

    def add_inventory_events(self, at: datetime, events: Sequence[dict[str, Any]]) -> None:
        """Changes seen in the control plane: dicts with kind, subscription, account, deployment and
        optionally field, before, after."""
        with self._lock:
            self._conn.executemany(
                "INSERT INTO inventory_events (at, kind, subscription, account, deployment, field, before, "
                "after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(at.timestamp(), e["kind"], e["subscription"], e["account"], e["deployment"], e.get("field"),
                  e.get("before"), e.get("after")) for e in events])

    def inventory_events(self, since: datetime, until: datetime | None = None) -> list[sqlite3.Row]:
        end = until.timestamp() if until else float("inf")
        return self.query("SELECT * FROM inventory_events WHERE at >= ? AND at < ? ORDER BY at, id",
                          (since.timestamp(), end))

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

    def claim(self, name: str, period: str, now: datetime, stale_s: float) -> bool:
        """Take the job `name` for `period` unless it was already done for it, or another is at it.

        One conditional write: true for exactly one caller per period, even across processes. A claim
        left `sending` by a process that died is taken over after stale_s.
        """
        ts = now.timestamp()
        mine = json.dumps({"period": period, "status": "sending", "at": ts})
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO state (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
                "SET value = excluded.value, updated_at = excluded.updated_at "
                "WHERE json_extract(state.value, '$.period') IS NOT ? "
                "OR (json_extract(state.value, '$.status') = 'sending' AND state.updated_at < ?)",
                (name, mine, ts, period, ts - stale_s))
            return cur.rowcount == 1

    def finish(self, name: str, period: str, status: str, now: datetime, detail: str | None = None) -> None:
        """Record how the claimed job for `period` ended: `sent`, or `failed` (not tried again)."""
        value = {"period": period, "status": status, "at": now.timestamp(), "detail": detail}
        with self._lock:
            self._conn.execute("UPDATE state SET value = ?, updated_at = ? WHERE name = ? AND "
                               "json_extract(value, '$.period') = ?",
                               (json.dumps(value), now.timestamp(), name, period))

    def release(self, name: str, period: str) -> None:
        """Give a claim back (the send will be tried again), unless it already finished."""
        with self._lock:
            self._conn.execute("DELETE FROM state WHERE name = ? AND json_extract(value, '$.period') = ? "
                               "AND json_extract(value, '$.status') = 'sending'", (name, period))

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

    def open_incidents(self) -> list[sqlite3.Row]:
        """Incidents not closed yet: resource, deployment, kind (the state), started_at, first_kind, hint,
        request_id, apim_request_id."""
        return self.query("SELECT resource, deployment, kind, started_at, first_kind, hint, request_id, "
                          "apim_request_id FROM incidents WHERE ended_at IS NULL")

    def integrity_ok(self) -> bool:
        return bool(self.query("PRAGMA integrity_check")[0][0] == "ok")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
