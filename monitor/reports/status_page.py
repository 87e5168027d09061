"""The daemon's `/` page: every deployment's state, last result, a 24-hour sparkline of availability
and median latency (from the hourly rollups), open incidents and the hint of the last failure."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from monitor.store.rollup import HOUR_S, percentile
from monitor.store.sqlite import Store

from . import charts
from .render import _ENV

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


def render_status(status: dict[str, Any], day: Day) -> str:
    sparks = {}
    for d in status["deployments"]:
        key = f"{d['resource']}/{d['deployment']}"
        avail, latency = day.get(key, ([None] * HOURS, [None] * HOURS))
        sparks[key] = (charts.sparkline(avail, floor=0.0, ceiling=100.0, color=charts.PALETTE[2],
                                        label=f"{key} availability per hour"),
                       charts.sparkline(latency, floor=0.0, label=f"{key} median latency per hour"))
    healthy = sum(1 for d in status["deployments"] if d["state"] == "healthy")
    return _ENV.get_template("status.html.j2").render(status=status, sparks=sparks, healthy=healthy,
                                                      total=len(status["deployments"]), refresh_s=REFRESH_S)
