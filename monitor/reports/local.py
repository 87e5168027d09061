"""The report source on the embedded store: reads the rollups and the state history only.

Local days are made of whole UTC hours (an hour belongs to the day its start falls in), which is exact
for every time zone whose offset is a whole number of hours. Latency histograms are kept per day in
the store's zone (`reports.timezone` of the daemon that wrote them); a report in another zone rebuilds
them from the hourly histograms, which are kept only as long as raw results.
"""

from __future__ import annotations

import math
from typing import Any

from monitor.store.rollup import HOUR_S, decode_hist
from monitor.store.sqlite import Store

from .source import Hists, HourRow, KindRow, Period, SourceData, TransitionRow


class LocalSource:
    name = "local"

    def __init__(self, store: Store) -> None:
        self.store = store

    def fetch(self, period: Period, *, summary_only: bool = False) -> SourceData:
        first, last = _hour(period.start.timestamp()), _hour_after(period.end.timestamp())
        day_case, day_params = _day_case(period)
        # one row per deployment and local day (SQLite takes `model` from the row of max(hour): the
        # latest), and the hours that had canaries apart: a 30-day report reads thousands of rows, not 72 k
        days_sql = (
            "SELECT max(hour), resource, deployment, model, sum(canaries), sum(ok), sum(rechecks), "
            "sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(tps_sum), sum(tps_n) "
            f"FROM (SELECT {day_case} AS day, * FROM rollup_hour WHERE hour >= ? AND hour < ?) "
            "GROUP BY day, resource, deployment")
        hours = [HourRow(*row) for row in self.store.query(days_sql, (*day_params, first, last))]
        if summary_only:
            hists = self._hists(period, first, last, day_case, day_params)
            return SourceData(hours=hours, kinds=[], hists=hists, transitions=[], usage=None)
        seen = {(r[0], r[1]): {int(h) for h in r[2].split(",")} for r in self.store.query(
            "SELECT resource, deployment, group_concat(hour) FROM rollup_hour WHERE hour >= ? AND hour < ? "
            "AND (canaries > 0 OR rechecks > 0) GROUP BY resource, deployment", (first, last))}
        # the latest example that carried an id, per day and kind; counts summed over the day
        kinds_sql = (
            "SELECT day, resource, deployment, kind, total, request_id, apim_request_id, "
            "iif(has_id, example_at, 0.0) FROM (SELECT *, sum(count) OVER w AS total, row_number() OVER "
            "(PARTITION BY day, resource, deployment, kind ORDER BY has_id DESC, example_at DESC) AS rn "
            f"FROM (SELECT {day_case} AS day, resource, deployment, kind, count, request_id, "
            "apim_request_id, example_at, (request_id IS NOT NULL OR apim_request_id IS NOT NULL) AS has_id "
            "FROM rollup_kind WHERE hour >= ? AND hour < ?) "
            "WINDOW w AS (PARTITION BY day, resource, deployment, kind)) WHERE rn = 1")
        kinds = [KindRow(*row) for row in self.store.query(kinds_sql, (*day_params, first, last))]
        hists = self._hists(period, first, last, day_case, day_params)
        start, end = period.start.timestamp(), period.end.timestamp()
        columns = "resource, deployment, at, from_state, to_state, kind, hint, request_id, apim_request_id"
        transitions = [TransitionRow(*row) for row in self.store.query(
            f"SELECT {columns} FROM transitions WHERE at >= ? AND at < ? "
            f"UNION ALL SELECT {columns} FROM (SELECT {columns}, max(at) FROM transitions "
            "WHERE at < ? GROUP BY resource, deployment) ORDER BY at", (start, end, start))]
        return SourceData(hours=hours, kinds=kinds, hists=hists, transitions=transitions, usage=None,
                          seen_hours=seen)

    def _hists(self, period: Period, first: int, last: int, day_case: str, day_params: list[Any]) -> Hists:
        """Per-day histograms: kept per day in the store's zone (fast); days not kept that way (another
        zone, or written before the zone changed) are rebuilt from the hourly ones while those last."""
        out: Hists = {}
        if period.timezone == self.store.timezone:
            for day, resource, deployment, metric, hist in self.store.query(
                    "SELECT day, resource, deployment, metric, hist FROM rollup_hist_day "
                    "WHERE tz = ? AND day >= ? AND day <= ?",
                    (period.timezone, period.days[0][0], period.days[-1][0])):
                out[(day, resource, deployment, metric)] = decode_hist(hist)
        have = {key[0] for key in out}
        whole_day: Hists = {}  # a period ending mid-day takes that day's hours, while they are kept
        if period.partial:
            have.discard(period.days[-1][0])
            whole_day = {k: out.pop(k) for k in [k for k in out if k[0] == period.days[-1][0]]}
        bounds = [*period.days, ("", period.end)]
        for (day, start), (_, end) in zip(bounds[:-1], bounds[1:], strict=True):
            if day in have:
                continue
            sql = (f"SELECT {day_case} AS day, resource, deployment, metric, bucket, sum(count) "
                   "FROM rollup_hist WHERE hour >= ? AND hour < ? "
                   "GROUP BY day, resource, deployment, metric, bucket")
            hours = (_hour(start.timestamp()), _hour_after(end.timestamp()))
            rows = self.store.query(sql, (*day_params, *hours))
            for d, resource, deployment, metric, bucket, count in rows:
                out.setdefault((d, resource, deployment, metric), {})[bucket] = count
        if not any(k[0] == period.days[-1][0] for k in out):
            out.update(whole_day)  # its hours are pruned already: the whole day is the best left
        return out


def _hour(ts: float) -> int:
    return int(ts // HOUR_S)


def _hour_after(ts: float) -> int:
    """The first hour not in a period ending at ts: a period ending now takes the current hour so far."""
    return math.ceil(ts / HOUR_S)


def _day_case(period: Period) -> tuple[str, list[Any]]:
    """A SQL CASE mapping an epoch hour to its local date, and its parameters."""
    whens: list[str] = []
    params: list[Any] = []
    for date, start in reversed(period.days):
        whens.append("WHEN hour >= ? THEN ?")
        params += [_hour(start.timestamp()), date]
    return f"CASE {' '.join(whens)} ELSE NULL END", params
