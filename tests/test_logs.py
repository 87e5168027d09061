from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from monitor import logs
from monitor.canary.results import FailureKind
from tests.factories import result


def _record(fields: dict[str, object], exc: bool = False) -> logging.LogRecord:
    record = logging.LogRecord("monitor.daemon", logging.WARNING, __file__, 1, "a %s", ("message",), None)
    record.created = datetime(2026, 11, 2, 12, 0, 1, 234567, tzinfo=UTC).timestamp()
    record.fields = fields  # type: ignore[attr-defined]
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            record.exc_info = sys.exc_info()
    return record


@pytest.mark.parametrize("fields", [
    {},
    {"event": "canary", "status": 200, "latency_ms": 12.3, "ttft_ms": None, "ok": True, "n": -4},
    {"hint": 'quotes " and \\ and\nnew lines, tabs\t', "unicode": "Zürich ☃ 😀", "kind": FailureKind.OK},
    {"nan": float("nan"), "inf": float("inf"), "big": 10**30, "tiny": 1e-300},
    {"path": Path("/data/store.db"), "at": datetime(2026, 1, 2, tzinfo=UTC), "d": Decimal("1.5"),
     "nested": {"a": [1, 2.5, None, "x"]}, "tuple": (1, 2)},
])
def test_json_lines_are_byte_for_byte_what_json_dumps_prints(fields: dict[str, object]) -> None:
    for exc in (False, True):
        record = _record(fields, exc)
        formatter = logs.JsonFormatter()
        line = formatter.format(record)
        expected = {"time": "2026-11-02T12:00:01.234+00:00", "level": "warning", "logger": "monitor.daemon",
                    "message": "a message", **fields}
        if exc:
            expected["exception"] = formatter.formatException(record.exc_info)  # type: ignore[arg-type]
        assert line == json.dumps(expected, default=str)


@pytest.fixture
def canary_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own with the JSON handler `setup` installs (the monitor's logger is left alone)."""
    stream = io.StringIO()
    log = logging.getLogger("test_logs.canary")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log, stream
    log.removeHandler(handler)


def test_the_canary_line_carries_its_fields_at_info_when_ok_and_warning_when_not(
        canary_log: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = canary_log
    logs.canary(log, result())
    logs.canary(log, result(FailureKind.SERVER_ERROR, detail="boom"))
    ok, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert ok["level"] == "info" and ok["message"] == "canary" and ok["logger"] == "test_logs.canary"
    assert {k: v for k, v in ok.items() if k not in ("time", "level", "logger", "message")} \
        == logs.canary_fields(result())
    assert failed["level"] == "warning" and failed["kind"] == "server_error" and failed["detail"] == "boom"
    assert failed["hint"] == "hint for server_error"


def test_the_canary_line_is_not_written_when_its_level_is_off(
        canary_log: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = canary_log
    log.setLevel(logging.WARNING)
    logs.canary(log, result())
    assert stream.getvalue() == ""
