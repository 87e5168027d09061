from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.errors import StoreError
from monitor.results import FailureKind
from monitor.store import MIGRATIONS, ResultWriter, Store, result_row

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


def test_the_instance_id_is_made_once_and_kept_across_reopening(tmp_path: Path) -> None:
    first = Store.open(tmp_path / "s.sqlite3")
    made = first.instance_id()
    assert made == first.instance_id() and len(made) == 36
    first.close()
    again = Store.open(tmp_path / "s.sqlite3")
    assert again.instance_id() == made
    again.close()
    assert Store.open(tmp_path / "other.sqlite3").instance_id() != made
