"""Build a Report from a source's aggregates: the arithmetic lives here, once, for both sources.

- The period is the last N whole local days (ending at today's local midnight) in the configured zone;
  the previous period is the N days before it. A rolling report (`to_now`, the `report` command) ends
  now instead: its last day is today so far, marked partial, and it is compared with the same span
  N days earlier.
- Availability: ok scheduled canaries / scheduled canaries. No canaries: None, never 100 %.
- Time in state comes from the state history, but an hour with no canary of the deployment in its
  coverage window (3 intervals + timeout, at least the hour itself) counts as `unknown` whatever the
  last state was: a monitor that was down saw nothing.
- Percentiles: nearest rank over the shared log-bucket histograms (within 2.5 %).
- Incidents: a period in `down` or `throttled` from the state history; `unknown` does not end one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from monitor.canary.classify import HINTS
from monitor.canary.pricing import price_for
from monitor.canary.results import FailureKind
from monitor.config import Config
from monitor.store.rollup import HOUR_S, merge, percentile, percentiles
from monitor.store.sqlite import Store

from . import control_plane, platform
from .local import LocalSource
from .model import (
    Change,
    Day,
    DeploymentReport,
    FailureKindCount,
    IncidentRow,
    Percentiles,
    RealUsage,
    Report,
    Totals,
)
from .source import HourRow, KindRow, Period, ReportSource, SourceData, TransitionRow

STATES = ("healthy", "degraded", "throttled", "down", "unknown")
INCIDENT_STATES = ("down", "throttled")
Key = tuple[str, str]


def period_for(now: datetime, days: int, timezone: str, *, to_now: bool = False) -> Period:
    """The last `days` whole local days before today (local midnight to local midnight); with `to_now`,
    the last `days` local days ending now, today so far being the last (partial) one."""
    tz = ZoneInfo(timezone)
    today = now.astimezone(tz).date()
    first = today - timedelta(days=days - 1 if to_now else days)
    dates = [first + timedelta(days=i) for i in range(days + 1)]
    starts = [_midnight(d, tz) for d in dates]
    end = max(now.astimezone(UTC), starts[-2]) if to_now else starts[-1]
    return Period(start=starts[0], end=end, timezone=timezone, partial=to_now,
                  days=tuple((d.isoformat(), s) for d, s in zip(dates[:-1], starts[:-1], strict=True)))


def previous(period: Period) -> Period:
    """The period of the same length just before (a rolling one: the same span n days earlier)."""
    n = len(period.days)
    tz = ZoneInfo(period.timezone)
    first = date.fromisoformat(period.days[0][0])
    dates = [first - timedelta(days=n - i) for i in range(n + 1)]
    starts = [_midnight(d, tz) for d in dates]
    end = starts[-1]
    if period.partial:  # the same local time of day n days before (wall clock), down to the hour: the
        # local store keeps hours, and a whole hour reads the same from either source
        shifted = (period.end.astimezone(tz) - timedelta(days=n)).timestamp()
        end = max(starts[-2], datetime.fromtimestamp(shifted // HOUR_S * HOUR_S, UTC))
    return Period(start=starts[0], end=end, timezone=period.timezone, partial=period.partial,
                  days=tuple((d.isoformat(), s) for d, s in zip(dates[:-1], starts[:-1], strict=True)))


def _midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)


def build_report(source: ReportSource, cfg: Config, now: datetime, days: int | None = None,
                 timezone: str | None = None, *, to_now: bool = False, store: Store | None = None) -> Report:
    """The report of the last `days` whole days, or with `to_now` of the days ending now (today partial).

    ``store``: the local store holding the control plane's changes and last inventory (with `discovery`);
    by default the local source's own."""
    days = days or cfg.reports.days
    tz = timezone or cfg.reports.timezone
    period = period_for(now, days, tz, to_now=to_now)
    before = previous(period)
    data, prior = source.fetch(period), source.fetch(before, summary_only=True)
    builder = _Builder(cfg, period, data)
    earlier = _Builder(cfg, before, prior)
    deployments = [builder.deployment(k, earlier) for k in _keys(cfg, data, prior)]
    incidents = sorted((i for d in deployments for i in d.incidents), key=lambda i: i.started_at)
    overall = builder.totals(deployments, earlier)
    azure_view = platform.views(cfg, period, data, deployments)
    cp_store = store if store is not None else _local_store(source)
    return Report(
        title=f"foundry-monitor report · {period.days[0][0]} – {period.days[-1][0]}"
              + (" (today so far)" if period.partial else ""), partial=period.partial,
        source=source.name, generated_at=_iso(now.timestamp(), tz), timezone=tz,
        start=_iso(period.start.timestamp(), tz), end=_iso(period.end.timestamp(), tz), days=days,
        slo_target_pct=cfg.reports.slo_target, overall=overall, deployments=deployments,
        incidents=incidents, real_usage=builder.real_usage(deployments),
        notes=[*data.notes, *_notes(data, period)],
        azure_view=azure_view,
        control_plane=control_plane.section(cfg, cp_store, source.name, now, period.start, period.end,
                                            deployments, azure_view))


def _local_store(source: ReportSource) -> Store | None:
    """The store under a local source (wrapped or not); None for Log Analytics."""
    if isinstance(source, platform.PlatformSource):
        return _local_store(source.inner)
    return source.store if isinstance(source, LocalSource) else None


def _keys(cfg: Config, *datas: SourceData) -> list[Key]:
    keys = {(r.name, d.name) for r, d, _ in cfg.targets()}
    for data in datas[:1]:  # deployments seen in this period, even if no longer configured
        keys |= {(h.resource, h.deployment) for h in data.hours}
    return sorted(keys)


def _notes(data: SourceData, period: Period) -> list[str]:
    last = period.days[-1][0]
    if period.partial:
        until = period.end.astimezone(ZoneInfo(period.timezone)).strftime("%H:%M")
        notes = [f"Period: {period.days[0][0]} 00:00 to now ({last} {until}), {period.timezone}; {last} is "
                 "partial: today so far."]
    else:
        notes = [f"Period: {period.days[0][0]} 00:00 to {last} 24:00, {period.timezone}."]
    if data.usage is None and data.platform is not None:
        notes.append("Per-resource totals from Log Analytics AzureMetrics (the fallback for Azure's view) "
                     "are not in this source (--source log-analytics).")
    elif data.usage is None:
        notes.append("Real usage (all traffic, not only the canaries) is not in this source: it comes from "
                     "the Foundry resources' platform metrics in Log Analytics (--source log-analytics).")
    return notes


def _iso(ts: float, tz: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat(timespec="seconds")


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 3) if whole else None


def _pcts(hist: Mapping[int, int]) -> Percentiles:
    p50, p95, p99 = percentiles(hist, (50, 95, 99))
    return Percentiles(p50=p50, p95=p95, p99=p99)


def _diff(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return None if a is None or b is None else round(a - b, digits)


@dataclass
class _Agg:
    model: str = ""
    canaries: int = 0
    ok: int = 0
    rechecks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    tps_sum: float = 0.0
    tps_n: int = 0
    hours: set[int] = field(default_factory=set)

    def add(self, h: HourRow) -> None:
        self.model = h.model or self.model
        self.canaries += h.canaries
        self.ok += h.ok
        self.rechecks += h.rechecks
        self.input_tokens += h.input_tokens
        self.output_tokens += h.output_tokens
        self.cost_usd += h.cost_usd
        self.tps_sum += h.tps_sum
        self.tps_n += h.tps_n
        if h.canaries or h.rechecks:
            self.hours.add(h.hour)

    def combine(self, other: _Agg) -> None:
        self.model = other.model or self.model
        self.canaries += other.canaries
        self.ok += other.ok
        self.rechecks += other.rechecks
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.tps_sum += other.tps_sum
        self.tps_n += other.tps_n
        self.hours |= other.hours


class _Builder:
    def __init__(self, cfg: Config, period: Period, data: SourceData) -> None:
        self.cfg, self.period, self.data = cfg, period, data
        self.targets = {(r.name, d.name): (r, d, s) for r, d, s in cfg.targets()}
        self.day_of_hour = _hour_days(period)
        self.aggs: dict[Key, _Agg] = defaultdict(_Agg)
        self.day_aggs: dict[tuple[Key, str], _Agg] = defaultdict(_Agg)
        for h in data.hours:
            day = self.day_of_hour.get(h.hour)
            if day is not None:
                self.day_aggs[((h.resource, h.deployment), day)].add(h)
        for (key, _), day_agg in self.day_aggs.items():  # a period is its days
            self.aggs[key].combine(day_agg)
        if data.seen_hours is not None:
            for key, agg in self.aggs.items():
                agg.hours = data.seen_hours.get(key, set())
        self.kinds: dict[Key, list[KindRow]] = defaultdict(list)
        for k in data.kinds:
            self.kinds[(k.resource, k.deployment)].append(k)
        self.hists: dict[tuple[Key, str, str], dict[int, int]] = {  # (key, metric, day)
            ((resource, deployment), metric, day): hist
            for (day, resource, deployment, metric), hist in data.hists.items()}
        self.period_hists: dict[tuple[Key, str], dict[int, int]] = {}  # merged once, used many times
        for (key, metric, _day), hist in self.hists.items():
            merge(self.period_hists.setdefault((key, metric), {}), hist)
        self._all: dict[str, dict[int, int]] = {}
        self.transitions: dict[Key, list[TransitionRow]] = defaultdict(list)
        for t in sorted(data.transitions, key=lambda t: t.at):
            self.transitions[(t.resource, t.deployment)].append(t)

    # --- one deployment --------------------------------------------------------------------------

    def deployment(self, key: Key, earlier: _Builder) -> DeploymentReport:
        agg = self.aggs.get(key, _Agg())
        target = self.targets.get(key)
        model = agg.model or (target[1].model_id if target else "")
        latency, ttft = self.hist(key, "latency"), self.hist(key, "ttft")
        availability = _pct(agg.ok, agg.canaries)
        return DeploymentReport(
            resource=key[0], deployment=key[1], model=model, canaries=agg.canaries, ok=agg.ok,
            rechecks=agg.rechecks, availability_pct=availability,
            slo_met=None if availability is None else availability >= self.cfg.reports.slo_target,
            state_pct=self.state_pct(key, agg.hours), latency_ms=_pcts(latency), ttft_ms=_pcts(ttft),
            output_tokens_per_s=round(agg.tps_sum / agg.tps_n, 1) if agg.tps_n else None,
            failures=self.failures([key]), incidents=self.incidents(key),
            input_tokens=agg.input_tokens, output_tokens=agg.output_tokens, cost_usd=round(agg.cost_usd, 6),
            days=[self.day(d, [key]) for d, _ in self.period.days],
            change=_change(self.summary(key), earlier.summary(key)))

    def summary(self, key: Key | None) -> dict[str, float | None]:
        """The figures the next period compares against (key None: all deployments)."""
        keys = list(self.aggs) if key is None else [key]
        aggs = [self.aggs[k] for k in keys if k in self.aggs]
        canaries = sum(a.canaries for a in aggs)
        lat = self.all_hist("latency") if key is None else self.hist(key, "latency")
        ttft = self.all_hist("ttft") if key is None else self.hist(key, "ttft")
        return {"canaries": canaries, "availability": _pct(sum(a.ok for a in aggs), canaries),
                "latency_p95": percentile(lat, 95), "ttft_p95": percentile(ttft, 95),
                "cost": sum(a.cost_usd for a in aggs), "output_tokens": sum(a.output_tokens for a in aggs)}

    def all_hist(self, metric: str) -> dict[int, int]:
        """Every deployment's histogram for the period, merged (once)."""
        if metric not in self._all:
            self._all[metric] = {}
            for (_, m), hist in self.period_hists.items():
                if m == metric:
                    merge(self._all[metric], hist)
        return self._all[metric]

    def hist(self, key: Key, metric: str, day: str | None = None) -> dict[int, int]:
        """The histogram of one deployment for one day, or for the whole period (do not modify it)."""
        if day is not None:
            return self.hists.get((key, metric, day), {})
        return self.period_hists.get((key, metric), {})

    def day(self, day: str, keys: Iterable[Key]) -> Day:
        canaries = ok = tin = tout = 0
        cost = 0.0
        keys = list(keys)
        for key in keys:
            a = self.day_aggs.get((key, day))
            if a is not None:
                canaries, ok = canaries + a.canaries, ok + a.ok
                tin, tout, cost = tin + a.input_tokens, tout + a.output_tokens, cost + a.cost_usd
        if len(keys) == 1:
            lat, ttft = self.hist(keys[0], "latency", day), self.hist(keys[0], "ttft", day)
        else:
            lat, ttft = {}, {}
            for key in keys:
                merge(lat, self.hist(key, "latency", day))
                merge(ttft, self.hist(key, "ttft", day))
        partial = self.period.partial and day == self.period.days[-1][0]
        return Day(date=day, partial=partial, canaries=canaries, ok=ok, availability_pct=_pct(ok, canaries),
                   latency_ms=_pcts(lat), ttft_ms=_pcts(ttft), input_tokens=tin, output_tokens=tout,
                   cost_usd=round(cost, 6))

    def failures(self, keys: Iterable[Key]) -> list[FailureKindCount]:
        counts: dict[str, int] = defaultdict(int)
        example: dict[str, tuple[float, str | None, str | None]] = {}
        for r in (r for key in keys for r in self.kinds.get(key, ())):
            counts[r.kind] += r.count
            latest = example.get(r.kind, (-1.0, None, None))[0]
            if (r.request_id or r.apim_request_id) and r.example_at >= latest:
                example[r.kind] = (r.example_at, r.request_id or None, r.apim_request_id or None)
        out = []
        for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            _, rid, apim = example.get(kind, (0.0, None, None))
            out.append(FailureKindCount(kind=kind, count=n, hint=_hint(kind), request_id=rid,
                                        apim_request_id=apim))
        return out

    def state_pct(self, key: Key, seen_hours: set[int]) -> dict[str, float]:
        target = self.targets.get(key)
        window_s = 3 * target[2].interval + target[2].timeout if target else 3 * 60.0 + 30.0
        window = max(1, math.ceil(window_s / HOUR_S))
        seconds = dict.fromkeys(STATES, 0.0)
        start, end = self.period.start.timestamp(), self.period.end.timestamp()
        segments = self.segments(key, start, end)
        covered = {h + i for h in seen_hours for i in range(window)}
        for state, a, b in segments:
            hour = int(a // HOUR_S)
            while a < b:
                edge = min(b, (hour + 1) * HOUR_S)
                seconds[state if hour in covered else "unknown"] += edge - a
                a, hour = edge, hour + 1
        total = end - start
        return {s: round(100.0 * v / total, 3) for s, v in seconds.items()}

    def segments(self, key: Key, start: float, end: float) -> list[tuple[str, float, float]]:
        state, at = "unknown", start
        out: list[tuple[str, float, float]] = []
        for t in self.transitions.get(key, []):
            if t.at < start:
                state = t.to_state
                continue
            if t.at >= end:
                break
            if t.at > at:
                out.append((state, at, t.at))
            state, at = t.to_state, t.at
        if end > at:
            out.append((state, at, end))
        return [(s if s in STATES else "unknown", a, b) for s, a, b in out]

    def incidents(self, key: Key) -> list[IncidentRow]:
        start, end = self.period.start.timestamp(), self.period.end.timestamp()
        tz = self.period.timezone
        out: list[IncidentRow] = []
        open_: TransitionRow | None = None

        def close(at: float | None) -> None:
            assert open_ is not None
            began = max(open_.at, start)
            out.append(IncidentRow(
                resource=key[0], deployment=key[1], state=open_.to_state, started_at=_iso(open_.at, tz),
                ended_at=None if at is None else _iso(at, tz), duration_s=round((at or end) - began, 1),
                kind=open_.kind, hint=open_.hint, request_id=open_.request_id,
                apim_request_id=open_.apim_request_id))

        for t in self.transitions.get(key, []):
            if t.at >= end:
                break
            if open_ is not None and t.to_state != "unknown" and t.to_state != open_.to_state:
                if t.at >= start:
                    close(t.at)
                open_ = None
            if t.to_state in INCIDENT_STATES and open_ is None:
                open_ = t
        if open_ is not None:
            close(None)
        return out

    # --- all deployments -------------------------------------------------------------------------

    def totals(self, deployments: list[DeploymentReport], earlier: _Builder) -> Totals:
        keys = [(d.resource, d.deployment) for d in deployments]
        canaries, ok = sum(d.canaries for d in deployments), sum(d.ok for d in deployments)
        lat, ttft = self.all_hist("latency"), self.all_hist("ttft")
        cost = sum(d.cost_usd for d in deployments)
        out_tokens = sum(d.output_tokens for d in deployments)
        availability = _pct(ok, canaries)
        return Totals(
            deployments=len(deployments), canaries=canaries, ok=ok, availability_pct=availability,
            slo_met=sum(1 for d in deployments if d.slo_met),
            slo_judged=sum(d.slo_met is not None for d in deployments),
            latency_ms=_pcts(lat), ttft_ms=_pcts(ttft), input_tokens=sum(d.input_tokens for d in deployments),
            output_tokens=out_tokens, cost_usd=round(cost, 6), failures=self.failures(keys),
            days=[self.day(d, keys) for d, _ in self.period.days],
            change=_change(self.summary(None), earlier.summary(None)))

    def real_usage(self, deployments: list[DeploymentReport]) -> list[RealUsage] | None:
        if self.data.usage is None:
            return None
        by_name = {u.resource.lower(): u for u in self.data.usage}
        out = []
        for res in self.cfg.resources:
            azure_name = (res.resource or "").lower()
            u = by_name.get(azure_name)
            mine = [d for d in deployments if d.resource == res.name]
            models = {d.model for d in mine}
            price = price_for(models.pop()) if len(models) == 1 else None
            cost = None
            if u is not None and price is not None and None not in (u.input_tokens, u.output_tokens):
                assert u.input_tokens is not None and u.output_tokens is not None
                cost = round((u.input_tokens * price.input + u.output_tokens * price.output) / 1e6, 2)
            canary_requests = sum(d.canaries + d.rechecks for d in mine)
            share = None
            if u is not None and u.requests:
                share = round(100.0 * canary_requests / u.requests, 3)
            out.append(RealUsage(resource=res.name, azure_resource=azure_name,
                                 requests=u.requests if u else None,
                                 input_tokens=u.input_tokens if u else None,
                                 output_tokens=u.output_tokens if u else None,
                                 estimated_cost_usd=cost, canary_share_pct=share))
        return out


def _change(now: Mapping[str, float | None], before: Mapping[str, float | None]) -> Change:
    had = bool(before["canaries"])
    tokens = int((now["output_tokens"] or 0) - (before["output_tokens"] or 0))
    return Change(availability_pct=_diff(now["availability"], before["availability"]),
                  latency_p95_ms=_diff(now["latency_p95"], before["latency_p95"], 1),
                  ttft_p95_ms=_diff(now["ttft_p95"], before["ttft_p95"], 1),
                  cost_usd=_diff(now["cost"], before["cost"], 6) if had else None,
                  output_tokens=tokens if had else None)


def _hour_days(period: Period) -> dict[int, str]:
    """Epoch hour -> the local date it belongs to (by the hour's start)."""
    out: dict[int, str] = {}
    bounds = [*period.days, ("", period.end)]
    for (day, start), (_, nxt) in zip(bounds[:-1], bounds[1:], strict=True):
        for hour in range(int(start.timestamp() // HOUR_S), int(math.ceil(nxt.timestamp() / HOUR_S))):
            out.setdefault(hour, day)
    return out


def _hint(kind: str) -> str:
    try:
        return HINTS[FailureKind(kind)]
    except ValueError:
        return ""
