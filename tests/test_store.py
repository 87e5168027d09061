from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.canary.results import FailureKind
from monitor.daemon.writer import ResultWriter
from monitor.errors import StoreError
from monitor.store import sqlite as store_mod
from monitor.store.sqlite import MIGRATIONS, Store, result_row

from .daemon_helpers import until
from .factories import T0, result


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "data" / "results.sqlite3")
    yield s  # type: ignore[misc]
    s.close()


def test_opening_creates_the_directory_and_applies_every_migration(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "new" / "dir" / "r.sqlite3")
    assert s.query("PRAGMA user_version")[0][0] == len(MIGRATIONS)
    assert s.query("PRAGMA journal_mode")[0][0] == "wal"
    s.close()


def test_results_are_saved_with_their_ids_timings_and_cost(store: Store) -> None:
    r = result(FailureKind.RATE_LIMITED, request_id="req_abc", apim_request_id="apim-xyz", retry_after=4.0)
    store.save_results([result_row(result(), 0.000025), result_row(r, None)])
    rows = store.query("SELECT kind, request_id, apim_request_id, cost_usd, retry_after FROM results "
                       "ORDER BY id")
    assert [tuple(x) for x in rows] == [("ok", "req_1", "apim-1", 0.000025, None),
                                        ("rate_limited", "req_abc", "apim-xyz", None, 4.0)]


def test_reopening_keeps_results_and_state(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    s = Store.open(path)
    s.save_results([result_row(result(), None)])
    s.put_state("health", {"version": 1}, T0)
    s.close()
    s = Store.open(path)
    assert s.query("SELECT count(*) FROM results")[0][0] == 1
    assert s.get_state("health") == {"version": 1}
    assert s.integrity_ok()
    s.close()


def test_a_store_from_a_newer_version_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this foundry-monitor knows"):
        Store.open(path)


def test_an_unopenable_path_raises_store_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store.open(blocker / "r.sqlite3")


def test_incidents_open_once_and_close(store: Store) -> None:
    for _ in range(2):
        store.open_incident("res", "dep", "down", T0, "server_error", "hint", "req_1", "apim-1")
    store.close_incident("res", "dep", "down", T0 + timedelta(minutes=5))
    rows = store.query("SELECT kind, started_at, ended_at, request_id FROM incidents")
    assert len(rows) == 1
    assert rows[0]["ended_at"] - rows[0]["started_at"] == 300


async def test_the_writer_batches_and_flushes_everything_on_stop(store: Store) -> None:
    writer = ResultWriter(store, batch=7)
    writer.start()
    for i in range(100):
        writer.put(result_row(result(request_id=f"req_{i}"), None))
    await writer.stop()
    assert writer.written == 100
    ids = {r[0] for r in store.query("SELECT request_id FROM results")}
    assert ids == {f"req_{i}" for i in range(100)}


class Refusing(Store):
    """Refuses the first `refusals` writes the way a locked or full disk does, then writes normally."""

    refusals = 0

    def save_results(self, rows: Any) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise StoreError(f"cannot write results to {self.path}: database is locked")
        super().save_results(rows)


class Stuck(Store):
    """Writes only once `go` is set: a write that outlives stop()'s budget."""

    go: threading.Event

    def save_results(self, rows: Any) -> None:
        self.go.wait(30)
        super().save_results(rows)


async def test_stop_retries_a_store_that_refuses_a_while_and_writes_everything(tmp_path: Path) -> None:
    store = Refusing.open(tmp_path / "r.sqlite3")
    store.refusals = 3
    writer = ResultWriter(store, retry_s=0.01)
    for i in range(10):
        writer.put(result_row(result(request_id=f"req_{i}"), None))
    assert await writer.stop(timeout=5) == 0
    assert writer.written == 10 and writer.lost == 0 and writer.failures == 3
    assert store.query("SELECT count(*) FROM results")[0][0] == 10
    store.close()


async def test_stop_gives_up_on_a_store_that_cannot_be_written_and_reports_what_is_lost_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Refusing.open(tmp_path / "r.sqlite3")
    store.refusals = 10**9
    writer = ResultWriter(store, retry_s=0.01)
    writer.start()
    for i in range(3):
        writer.put(result_row(result(request_id=f"req_{i}"), None))
    await until(lambda: writer.failures >= 1, timeout=5)
    with caplog.at_level(logging.ERROR, logger="monitor.writer"):
        assert await writer.stop(timeout=0.2) == 3
    assert writer.lost == 3 and writer.written == 0
    lines = [r for r in caplog.records if r.name == "monitor.writer"
             and r.fields["event"] == "results_lost"]  # type: ignore[attr-defined]
    assert len(lines) == 1
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["event"] == "results_lost" and fields["lost"] == 3
    assert "database is locked" in fields["error"]
    store.close()


async def test_a_write_still_running_when_stop_gives_up_is_counted_when_it_lands(tmp_path: Path) -> None:
    store = Stuck.open(tmp_path / "r.sqlite3")
    store.go = threading.Event()
    writer = ResultWriter(store)
    writer.start()
    writer.put(result_row(result(request_id="req_slow"), None))
    await until(lambda: writer._queue.empty(), timeout=5)  # the writer has handed it to a thread
    assert await writer.stop(timeout=0.1) == 1  # not confirmed within the budget: counted lost
    store.go.set()
    await until(lambda: writer.written == 1, timeout=5)
    assert writer.lost == 0
    assert [r[0] for r in store.query("SELECT request_id FROM results")] == ["req_slow"]
    store.close()


async def test_cancelling_stop_leaves_the_queued_results_to_a_later_stop(tmp_path: Path) -> None:
    store = Refusing.open(tmp_path / "r.sqlite3")
    store.refusals = 1
    writer = ResultWriter(store, retry_s=60)  # stop() waits out the pause after the first refusal
    writer.put(result_row(result(request_id="req_1"), None))
    stopping = asyncio.create_task(writer.stop(timeout=None))
    await until(lambda: writer.failures == 1, timeout=5)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert writer.lost == 0
    assert await writer.stop(timeout=5) == 0
    assert writer.written == 1
    store.close()


def test_a_migration_that_fails_leaves_the_store_as_it_was(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.sqlite3"
    Store.open(path).close()
    broken = "CREATE TABLE extra (x INTEGER);\nCREATE TABLE results (y INTEGER);"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(StoreError, match="table results already exists"):
        Store.open(path)
    monkeypatch.undo()
    s = Store.open(path)
    assert s.query("PRAGMA user_version")[0][0] == len(MIGRATIONS)
    assert not s.query("SELECT name FROM sqlite_master WHERE name = 'extra'")  # one transaction: no half
    s.close()


def test_migration_scripts_split_into_single_statements_at_their_own_semicolons() -> None:
    script = "CREATE TABLE a (x TEXT DEFAULT 'a;b');\nCREATE TRIGGER t AFTER INSERT ON a BEGIN\n" \
             "  UPDATE a SET x = 'c;d'; DELETE FROM a WHERE 0;\nEND;\n"
    assert store_mod._statements(script) == [
        "CREATE TABLE a (x TEXT DEFAULT 'a;b');",
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE a SET x = 'c;d'; DELETE FROM a WHERE 0;\nEND;"]


def test_the_instance_id_is_made_once_and_kept_across_reopening(tmp_path: Path) -> None:
    first = Store.open(tmp_path / "s.sqlite3")
    made = first.instance_id()
    assert made == first.instance_id() and len(made) == 36
    first.close()
    again = Store.open(tmp_path / "s.sqlite3")
    assert again.instance_id() == made
    again.close()
    assert Store.open(tmp_path / "other.sqlite3").instance_id() != made


def test_rollups_follow_every_write_and_match_the_raw_rows(store: Store) -> None:
    from .report_seed import NOW, costs, seed

    history = seed(NOW, days=3, interval_s=300)
    rows = [result_row(r, c) for r, c in costs(history.results)]
    for i in range(0, len(rows), 97):  # batches that split hours, so upserts add to existing rows
        store.save_results(rows[i:i + 97])
    raw = {(r[0], r[1], r[2]): tuple(r[3:]) for r in store.query(
        "SELECT CAST(started_at / 3600 AS INTEGER) AS hour, resource, deployment, "
        "sum(attempt = 0 AND kind != 'cancelled'), sum(attempt = 0 AND kind = 'ok'), sum(attempt > 0), "
        "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
        "round(coalesce(sum(cost_usd), 0), 9) "
        "FROM results GROUP BY hour, resource, deployment")}
    rolled = {(r[0], r[1], r[2]): tuple(r[3:]) for r in store.query(
        "SELECT hour, resource, deployment, canaries, ok, rechecks, input_tokens, output_tokens, "
        "round(cost_usd, 9) FROM rollup_hour")}
    assert rolled == raw and len(raw) > 100
    kinds = store.query("SELECT sum(count) FROM rollup_kind")[0][0]
    assert kinds == store.query("SELECT count(*) FROM results WHERE attempt = 0 AND kind NOT IN "
                                "('ok', 'cancelled')")[0][0]
    hist = store.query("SELECT sum(count) FROM rollup_hist WHERE metric = 'latency'")[0][0]
    assert hist == store.query("SELECT count(*) FROM results WHERE attempt = 0 AND kind = 'ok'")[0][0]


def test_a_version_1_store_gets_rollups_of_its_old_results_when_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0].replace("\n    ", "\n"))
    conn.execute("PRAGMA user_version = 1")
    columns = ", ".join(["started_at", "resource", "deployment", "model", "location", "attempt", "kind",
                         "status", "total_s", "headers_s", "ttft_s", "input_tokens", "output_tokens",
                         "cache_creation_tokens", "cache_read_tokens", "cost_usd", "request_id",
                         "apim_request_id", "response_model", "stop_reason", "detail", "retry_after"])
    old = [result_row(result(at=T0 + timedelta(minutes=m)), 0.001) for m in range(90)]
    conn.executemany(f"INSERT INTO results ({columns}) VALUES ({', '.join('?' * 22)})", old)  # noqa: S608
    conn.commit()
    conn.close()
    s = Store.open(path)
    assert s.query("SELECT sum(canaries), sum(ok) FROM rollup_hour")[0][:] == (90, 90)
    assert s.query("SELECT count(*) FROM rollup_hour")[0][0] == 2  # 12:00-12:59 and 13:00-13:29
    s.close()


def test_pruning_drops_raw_rows_and_rollups_by_their_own_retention(store: Store) -> None:
    old, recent = T0 - timedelta(days=40), T0 - timedelta(days=1)
    store.save_results([result_row(result(at=old), None), result_row(result(at=recent), None)])
    store.add_transition("res", "dep", old, "unknown", "healthy", None, None, None, None, None)
    deleted = store.prune(T0, raw_retention_s=35 * 86400, rollup_retention_s=400 * 86400)
    assert deleted["results"] == 1 and deleted["rollup_hour"] == 0 and deleted["transitions"] == 0
    assert store.query("SELECT count(*) FROM rollup_hour")[0][0] == 2  # the report still covers day -40
    deleted = store.prune(T0, raw_retention_s=35 * 86400, rollup_retention_s=30 * 86400)
    assert deleted["rollup_hour"] == 1 and deleted["transitions"] == 1


def test_a_reader_sees_a_consistent_store_while_the_daemon_writes(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "shared.sqlite3"
    writer = Store.open(path)
    reader = Store.open(path)
    stop = threading.Event()
    seen: list[tuple[int, int]] = []

    def read() -> None:
        while not stop.is_set():
            row = reader.query("SELECT (SELECT count(*) FROM results WHERE attempt = 0), "
                               "(SELECT coalesce(sum(canaries), 0) FROM rollup_hour)")[0]  # one snapshot
            seen.append((row[0], row[1]))

    t = threading.Thread(target=read)
    t.start()
    try:
        for batch in range(40):
            writer.save_results([result_row(result(at=T0 + timedelta(seconds=batch * 50 + i)), None)
                                 for i in range(50)])
    finally:
        stop.set()
        t.join(10)
    assert seen and all(raw == rolled for raw, rolled in seen)  # one transaction: never half a batch
    assert reader.query("SELECT count(*) FROM results")[0][0] == 2000
    writer.close()
    reader.close()
