"""The daemon's `/` page: every deployment's state, last result, a 24-hour sparkline of availability
and median latency (from the hourly rollups), open incidents and the hint of the last failure."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from monitor.config import Config
from monitor.store.rollup import HOUR_S, percentile
from monitor.store.sqlite import Store

from . import charts
from .model import AzureView
from .render import _ENV, AZURE_HEADER, azure_row

AZURE_EVERY_S = 300.0  # the status page reads Azure's platform metrics at most this often

REFRESH_S = 30
HOURS = 24


Day = dict[str, tuple[list[float | None], list[float | None]]]


def last_day(store: Store, now: datetime) -> Day:
    """Per `resource/deployment`: hourly availability (%) and p50 latency (ms), oldest first."""
    first = int(now.timestamp() // HOUR_S) - HOURS + 1
    avail: dict[str, list[float | None]] = defaultdict(lambda: [None] * HOURS)
    for row in store.query("SELECT hour, resource, deployment, canaries, ok FROM rollup_hour WHERE hour >= ?",
                           (first,)):
        if row["canaries"]:
            avail[f"{row['resource']}/{row['deployment']}"][row["hour"] - first] = \
                100.0 * row["ok"] / row["canaries"]
    hists: dict[str, list[dict[int, int]]] = defaultdict(lambda: [{} for _ in range(HOURS)])
    for row in store.query("SELECT hour, resource, deployment, bucket, count FROM rollup_hist "
                           "WHERE hour >= ? AND metric = 'latency'", (first,)):
        hists[f"{row['resource']}/{row['deployment']}"][row["hour"] - first][row["bucket"]] = row["count"]
    keys = set(avail) | set(hists)
    return {k: (avail[k], [percentile(h, 50) for h in hists[k]]) for k in keys}


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


def render_status(status: dict[str, Any], day: Day, azure: list[AzureView] | None = None,
                  azure_note: str | None = None) -> str:
    sparks = {}
    for d in status["deployments"]:
        key = f"{d['resource']}/{d['deployment']}"
        avail, latency = day.get(key, ([None] * HOURS, [None] * HOURS))
        sparks[key] = (charts.sparkline(avail, floor=0.0, ceiling=100.0, color=charts.PALETTE[2],
                                        label=f"{key} availability per hour"),
                       charts.sparkline(latency, floor=0.0, label=f"{key} median latency per hour"))
    healthy = sum(1 for d in status["deployments"] if d["state"] == "healthy")
    notes = [f"{v.resource}/{v.deployment}: {v.disagreement}" for v in azure or () if v.disagreement]
    notes += sorted({f"{v.resource}: {v.note}" for v in azure or () if v.note})
    notes += [azure_note] if azure_note else []
    return _ENV.get_template("status.html.j2").render(
        status=status, sparks=sparks, healthy=healthy, total=len(status["deployments"]), refresh_s=REFRESH_S,
        azure=None if azure is None else [AZURE_HEADER, *(azure_row(v) for v in azure)], azure_notes=notes,
        azure_every_min=int(AZURE_EVERY_S // 60))
