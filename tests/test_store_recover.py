"""A damaged store is moved aside (kept, with a timestamp) and a fresh one started; readers are told."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.errors import StoreDamaged, StoreError
from monitor.store.recover import open_or_recover
from monitor.store.sqlite import MIGRATIONS, Store, result_row

from .factories import result

AT = datetime(2026, 12, 1, 23, 15, 7, tzinfo=UTC)


def garbage(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(64 * 1024)
    path.write_bytes(data)
    return data


def test_a_garbage_file_is_refused_as_damaged_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite3"
    garbage(path)
    with pytest.raises(StoreDamaged, match="results.sqlite3 is damaged: file is not a database"):
        Store.open(path)


def test_a_damaged_store_and_its_wal_and_shm_are_moved_aside_with_a_timestamp_and_a_fresh_one_opens(
        tmp_path: Path) -> None:
    path = tmp_path / "data" / "results.sqlite3"
    data = garbage(path)
    Path(f"{path}-wal").write_bytes(b"wal bytes")
    Path(f"{path}-shm").write_bytes(b"shm bytes")
    store, recovery = open_or_recover(path, AT)
    try:
        assert recovery is not None
        kept = tmp_path / "data" / "results.damaged-20261201T231507Z.sqlite3"
        assert recovery.damaged == str(kept)
        assert kept.read_bytes() == data
        assert Path(f"{kept}-wal").read_bytes() == b"wal bytes"
        assert Path(f"{kept}-shm").exists()  # an index SQLite rebuilds from the WAL: its bytes carry nothing
        assert "file is not a database" in recovery.error
        assert store.query("PRAGMA user_version")[0][0] == len(MIGRATIONS)
        store.save_results([result_row(result(request_id="req_after"), None)])
        assert [r[0] for r in store.query("SELECT request_id FROM results")] == ["req_after"]
    finally:
        store.close()


def test_a_second_damage_in_the_same_second_keeps_both_copies(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite3"
    first = garbage(path)
    store, _ = open_or_recover(path, AT)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    second = garbage(path)
    store, recovery = open_or_recover(path, AT)
    store.close()
    assert recovery is not None and recovery.damaged.endswith("results.damaged-20261201T231507Z-1.sqlite3")
    assert (tmp_path / "results.damaged-20261201T231507Z.sqlite3").read_bytes() == first
    assert Path(recovery.damaged).read_bytes() == second


def test_a_healthy_store_is_opened_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite3"
    s = Store.open(path)
    s.save_results([result_row(result(request_id="req_kept"), None)])
    s.close()
    store, recovery = open_or_recover(path, AT)
    try:
        assert recovery is None
        assert [r[0] for r in store.query("SELECT request_id FROM results")] == ["req_kept"]
        assert [p.name for p in tmp_path.iterdir() if "damaged" in p.name] == []
    finally:
        store.close()


def test_a_store_that_cannot_be_opened_for_other_reasons_is_not_moved(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as caught:
        open_or_recover(blocker / "results.sqlite3", AT)
    assert not isinstance(caught.value, StoreDamaged)
    assert blocker.read_text() == "x"
