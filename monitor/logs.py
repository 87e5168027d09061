"""Logging set-up: one line per event, JSON (machines) or text (people).

Events carry their fields in ``extra={"fields": {...}}``; both formats print them. Only values the
monitor itself built go into fields, never request headers, so no secret can reach a log line.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from monitor.canary.results import CanaryResult

LOGGER = "monitor"


def _json_encoder() -> Callable[[object], str]:
    """``json.dumps(obj, default=str)``, byte for byte, without building an encoder for every line
    (json.dumps makes a JSONEncoder and a C encoder per call: about a third of a log line's format)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another interpreter): the plain call
        return functools.partial(json.dumps, default=str)
    # the arguments JSONEncoder(default=str).iterencode passes; no circular check: fields are flat
    # values the monitor built (a circular one would raise RecursionError instead of ValueError)
    encode = make(None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda obj: "".join(encode(obj, 0))


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._dumps = _json_encoder()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return self._dumps(out)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        fields = getattr(record, "fields", {})
        tail = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)
        line = f"{when} {record.levelname.lower():7} {record.getMessage()}" + (f"  {tail}" if tail else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(v: object) -> str:
    s = str(v)
    return json.dumps(s) if " " in s or not s else s


def setup(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure the ``monitor`` logger; ``auto`` means JSON unless the stream is a terminal."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger(LOGGER)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for noisy in ("apscheduler", "httpx", "httpcore", "uvicorn", "uvicorn.error", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.INFO)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # a canary cancelled at shutdown surfaces as "job raised an exception" with a plain-text traceback;
    # the scheduler records every outcome itself, so these are not worth a line
    logging.getLogger("apscheduler.executors.default").setLevel(logging.CRITICAL)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)


def event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": fields})


def canary(logger: logging.Logger, r: CanaryResult) -> None:
    """The line of one canary (info when ok, else warning). The record goes straight to the handlers:
    ``Logger.log`` would first walk the stack for the caller's file and line, which no formatter or
    handler here prints, for every canary."""
    level = logging.INFO if r.ok else logging.WARNING
    if logger.isEnabledFor(level):
        logger.handle(logger.makeRecord(logger.name, level, "(unknown file)", 0, "canary", (), None,
                                        extra={"fields": canary_fields(r)}))


def canary_fields(r: CanaryResult) -> dict[str, Any]:
    """The one line per canary: deployment, kind, status, latency, TTFT, both request ids (+ hint)."""
    t = r.timings
    fields: dict[str, Any] = {
        "event": "canary", "resource": r.resource, "deployment": r.deployment, "kind": r.kind.value,
        "status": r.status_code,
        "latency_ms": None if t.total_s is None else round(t.total_s * 1000, 1),
        "ttft_ms": None if t.ttft_s is None else round(t.ttft_s * 1000, 1),
        "input_tokens": r.usage.input_tokens if r.usage else None,
        "output_tokens": r.usage.output_tokens if r.usage else None,
        "request_id": r.request_id, "apim_request_id": r.apim_request_id,
    }
    if r.location:
        fields["location"] = r.location
    if not r.ok:
        fields["detail"] = r.detail
        fields["hint"] = r.verdict.hint
    return fields
