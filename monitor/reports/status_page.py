"""The daemon's `/` page: one row per deployment (state and for how long, a history bar of its last
results coloured by kind, latency, one line of the last failure's hint with the rest behind a click),
then the open incidents. Times read "3 min ago" with the exact UTC time on hover.

The page is a section per concern (templates/status/*.html.j2, included by status.html.j2): a new
concern adds its template there and its data to `render_status`'s context. One self-contained HTML
document: inline CSS and SVG, a few lines of inline script, nothing fetched.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor.config import Config
from monitor.store.rollup import HOUR_S
from monitor.store.sqlite import Store

from . import charts, when
from .history import BAR, EMPTY_COLOUR, KIND_COLOURS, UNKNOWN_COLOUR, Cell, last_results
from .model import AzureView
from .render import _ENV, AZURE_HEADER, azure_row

AZURE_EVERY_S = 300.0  # the status page reads Azure's platform metrics at most this often

REFRESH_S = 30
HOURS = 24
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")


@dataclass(frozen=True, slots=True)
class Hint:
    """A hint cut for one line: its first sentence, and the rest (shown when opened)."""

    first: str
    rest: str


def split_hint(hint: str | None) -> Hint:
    text = " ".join((hint or "").split())
    first, *rest = _SENTENCE_END.split(text, maxsplit=1)
    return Hint(first, rest[0] if rest else "")


def availability_24h(store: Store, now: datetime) -> dict[tuple[str, str], tuple[int, int]]:
    """(ok, canaries) per (resource, deployment) over the hourly rollups of the last 24 hours."""
    first = int(now.timestamp() // HOUR_S) - HOURS + 1
    rows = store.query("SELECT resource, deployment, SUM(ok) AS ok, SUM(canaries) AS n FROM rollup_hour "
                       "WHERE hour >= ? GROUP BY resource, deployment", (first,))
    return {(r["resource"], r["deployment"]): (int(r["ok"]), int(r["n"])) for r in rows if r["n"]}


def _row(d: Mapping[str, Any], cells: Sequence[Cell], day: tuple[int, int] | None) -> dict[str, Any]:
    key = f"{d['resource']}/{d['deployment']}"
    latencies = [c.latency_ms for c in cells]
    fail = d.get("last_failure") or None
    return {
        **d,
        "key": key,
        "cells": [None] * (BAR - len(cells)) + list(cells),
        "ok_count": sum(1 for c in cells if c.ok),
        "day": day,
        "latency_spark": charts.sparkline(latencies, floor=0.0, width=120, height=18,
                                          label=f"{key} latency of the last {len(cells)} results")
        if sum(v is not None for v in latencies) >= 2 else "",
        "hint": split_hint(fail.get("hint")) if fail else None,
        "failure_is_current": bool(fail and d.get("last_result")
                                   and fail.get("started_at") == d["last_result"].get("started_at")),
    }


class AzureToday:
    """Azure's view of today (since local midnight) for the status page, read at most every 5 minutes
    (the page refreshes every 30 s; ARM throttles per principal). Thread-safe: pages render in threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: datetime | None = None
        self._cfg: Config | None = None
        self._views: list[AzureView] | None = None
        self.note: str | None = None

    def get(self, cfg: Config, store: Store, now: datetime) -> list[AzureView] | None:
        if not cfg.reports.metrics.enabled or not any(r.azure_resource_id for r in cfg.resources):
            return None
        with self._lock:
            fresh = self._at is not None and (now - self._at).total_seconds() < AZURE_EVERY_S
            if fresh and self._cfg is cfg:
                return self._views
            from .build import build_report
            from .sources import build_source

            try:  # the reader turns Azure's refusals into notes; this is for what is left (e.g. the store)
                report = build_report(build_source(cfg, "local", lambda: store), cfg, now + timedelta(days=1),
                                      days=1)
                self._views, self.note = report.azure_view, None
            except Exception as exc:  # noqa: BLE001 - a status page shows the problem, it does not fail
                self._views, self.note = [], f"Azure's view could not be built: {type(exc).__name__}: {exc}"
            self._at, self._cfg = now, cfg
            return self._views


def render_status(status: Mapping[str, Any], store: Store, now: datetime,
                  azure: list[AzureView] | None = None, azure_note: str | None = None) -> str:
    """The page for `status` (what /status returns), with history from `store`, times relative to `now`."""
    deployments = status["deployments"]
    history = last_results(store, [(d["resource"], d["deployment"]) for d in deployments])
    days = availability_24h(store, now)
    rows = [_row(d, history.get((d["resource"], d["deployment"]), []),
                 days.get((d["resource"], d["deployment"]))) for d in deployments]
    seen = {c.kind for r in rows for c in r["cells"] if c is not None}
    legend = [(k, c) for k, c in KIND_COLOURS.items() if k in seen]
    incidents = [{**i, "hint": split_hint(i.get("hint"))} for i in status.get("open_incidents", [])]
    healthy = sum(1 for d in deployments if d["state"] == "healthy")
    notes = [f"{v.resource}/{v.deployment}: {v.disagreement}" for v in azure or () if v.disagreement]
    notes += sorted({f"{v.resource}: {v.note}" for v in azure or () if v.note})
    notes += [azure_note] if azure_note else []
    return _ENV.get_template("status.html.j2").render(
        azure=None if azure is None else [AZURE_HEADER, *(azure_row(v) for v in azure)], azure_notes=notes,
        azure_every_min=int(AZURE_EVERY_S // 60),
        status=status, rows=rows, incidents=incidents, healthy=healthy, total=len(deployments),
        refresh_s=REFRESH_S, bar=BAR, now=now, legend=legend, kind_colours=KIND_COLOURS,
        empty_colour=EMPTY_COLOUR, unknown_colour=UNKNOWN_COLOUR,
        ago=lambda v: when.ago(v, now), exact=when.exact,
        since=lambda v: when.duration((now - at).total_seconds()) if (at := when.parse(v)) else "-")
