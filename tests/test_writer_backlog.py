"""The result writer while the store cannot be written: results wait in memory up to a bound, the oldest
are dropped (and counted) beyond it, and everything kept is written once the store works again."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from monitor.daemon.writer import ResultWriter
from monitor.errors import StoreError
from monitor.store.sqlite import Store, result_row

from .daemon_helpers import until
from .factories import result


class Full(Store):
    """A store on a disk that is full until `full` is switched off (the Store seam, no mock)."""

    full = True

    def save_results(self, rows: Any) -> None:
        if self.full:
            raise StoreError(f"cannot write results to {self.path}: database or disk is full")
        super().save_results(rows)


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == "monitor.writer"]  # type: ignore[attr-defined]


async def test_while_the_disk_is_full_results_wait_the_oldest_beyond_the_bound_are_dropped_and_the_rest_land(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Full.open(tmp_path / "r.sqlite3")
    writer = ResultWriter(store, retry_s=0.01, linger_s=0.0, max_pending=5)
    writer.start()
    with caplog.at_level(logging.WARNING, logger="monitor.writer"):
        writer.put(result_row(result(request_id="req_0"), None))
        await until(lambda: not writer.writable, timeout=5)
        for i in range(1, 12):
            writer.put(result_row(result(request_id=f"req_{i}"), None))
        await until(lambda: writer.dropped == 7, timeout=5)
        status = writer.status()
        assert status["writable"] is False and status["pending"] == 5 and status["dropped"] == 7
        assert "disk is full" in status["last_error"]
        store.full = False
        await until(lambda: writer.written == 5, timeout=5)
    assert await writer.stop(timeout=5) == 0
    # the newest were kept, in order; a write already in flight when the disk freed up (req_0, being
    # retried) cannot be dropped, so it may stand in for the oldest queued one (req_7)
    kept = [r[0] for r in store.query("SELECT request_id FROM results ORDER BY id")]
    assert kept in ([f"req_{i}" for i in range(7, 12)], ["req_0", *(f"req_{i}" for i in range(8, 12))])
    assert writer.status() | {"last_error": None} == {
        "writable": True, "pending": 0, "max_pending": 5, "written": 5, "dropped": 7,
        "failed_writes": writer.failures, "last_error": None}
    said = [(e["event"], e.get("dropped")) for e in events(caplog)]
    assert said == [("store_unwritable", None), ("results_dropped", None), ("store_writable", 7)]
    store.close()


async def test_a_short_refusal_drops_nothing_and_says_so_when_writes_land_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Full.open(tmp_path / "r.sqlite3")
    writer = ResultWriter(store, retry_s=0.01, linger_s=0.0, max_pending=100)
    writer.start()
    with caplog.at_level(logging.WARNING, logger="monitor.writer"):
        for i in range(3):
            writer.put(result_row(result(request_id=f"req_{i}"), None))
        await until(lambda: writer.failures >= 2, timeout=5)
        store.full = False
        await until(lambda: writer.written == 3, timeout=5)
    await writer.stop(timeout=5)
    assert writer.dropped == 0
    landed = [e for e in events(caplog) if e["event"] == "store_writable"]
    assert len(landed) == 1 and landed[0]["dropped"] == 0
    assert len([e for e in events(caplog) if e["event"] == "store_unwritable"]) == 1
    store.close()
