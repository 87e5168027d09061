"""Azure's view in a report: each deployment's real traffic from the platform metrics, beside the canaries.

`PlatformSource` wraps the report's own source (local store or Log Analytics) and adds, for a full
fetch, what `monitor.azure.metrics` reads for every resource with an `azure_resource_id`; `views`
turns that into one `AzureView` per deployment: requests and failures by class (429, other 4xx, 5xx),
tokens, the estimated cost, Azure's availability and TTFT beside the canary's, the canaries' share,
and one sentence where the two views disagree. Log Analytics' `AzureMetrics` (per resource, no
deployment split) stays what it was: the fallback listed under "Real usage".
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable

from monitor.azure.metrics import CACHE, REQUESTS, MetricsReader, Point, ResourceMetrics
from monitor.canary.pricing import price_for
from monitor.config import Config

from .model import AzureDay, AzureView, DeploymentReport, Percentiles
from .source import Period, ReportSource, SourceData

SOURCE = "Azure Monitor platform metrics (ARM, per deployment)"
THROTTLED_NOTABLE_PCT = 1.0  # real callers' 429 share worth a sentence
FAILING_NOTABLE_PCT = 1.0  # real callers' 5xx share worth a sentence


class PlatformSource:
    """The report's source, plus Azure's platform metrics for the resources that name their ARM ID."""

    def __init__(self, inner: ReportSource, reader: MetricsReader, resources: dict[str, str]) -> None:
        self.inner, self.reader, self.resources = inner, reader, resources
        self.name = inner.name

    def fetch(self, period: Period, *, summary_only: bool = False) -> SourceData:
        data = self.inner.fetch(period, summary_only=summary_only)
        if summary_only:
            return data
        read = {name: self.reader.read(rid, period.start, period.end) for name, rid in self.resources.items()}
        return dataclasses.replace(data, platform=read)


def _local_days(period: Period) -> list[tuple[str, float, float]]:
    bounds = [*((d, s.timestamp()) for d, s in period.days), ("", period.end.timestamp())]
    return [(d, a, b) for (d, a), (_, b) in zip(bounds[:-1], bounds[1:], strict=True)]


def _day_of(days: list[tuple[str, float, float]], at: float) -> str | None:
    for day, a, b in days:
        if a <= at < b:
            return day
    return None


def _pct(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 3)


def _weighted(points: Iterable[Point]) -> float | None:
    num = den = 0.0
    for p in points:
        w = p.count if p.count is not None else 1.0
        num, den = num + p.value * w, den + w
    return round(num / den, 3) if den else None


def _status_class(status: str | None) -> str:
    code = int(status) if status and status.isdigit() else 0
    if code == 429:
        return "throttled"
    if 400 <= code < 500:
        return "client_errors"
    if code >= 500:
        return "server_errors"
    return "ok"


def views(cfg: Config, period: Period, data: SourceData,
          deployments: list[DeploymentReport]) -> list[AzureView] | None:
    """One AzureView per deployment of each resource with an azure_resource_id (None: no such resource)."""
    if data.platform is None:
        return None
    days = _local_days(period)
    start, end = period.start.timestamp(), period.end.timestamp()
    out: list[AzureView] = []
    by_res: dict[str, list[DeploymentReport]] = defaultdict(list)
    for d in deployments:
        by_res[d.resource].append(d)
    for res in cfg.resources:
        metrics = data.platform.get(res.name)
        if metrics is None:
            continue
        points: dict[str, list[Point]] = defaultdict(list)
        for p in metrics.points:
            if start <= p.at < end:
                points[p.deployment].append(p)
        mine = {d.deployment: d for d in by_res.get(res.name, [])}
        names = sorted(set(mine) | set(points))
        for name in names:
            out.append(_view(res.name, name, mine.get(name), points.get(name, []), metrics, days,
                             cfg.reports.slo_target))
    return out


def _total(points: list[Point], metric: str, missing: tuple[str, ...]) -> float | None:
    if metric in missing:
        return None
    return float(sum(p.value for p in points if p.metric == metric))


def _view(resource: str, deployment: str, d: DeploymentReport | None, points: list[Point],
          metrics: ResourceMetrics, days: list[tuple[str, float, float]], slo: float) -> AzureView:
    missing = metrics.missing
    read = REQUESTS not in missing
    classes: dict[str, float] = defaultdict(float)
    for p in points:
        if p.metric == REQUESTS:
            classes[_status_class(p.status)] += p.value
    requests = float(sum(classes.values())) if read else None
    by_class = {k: (classes.get(k, 0.0) if read else None)
                for k in ("throttled", "client_errors", "server_errors")}
    tin, tout = _total(points, "InputTokens", missing), _total(points, "OutputTokens", missing)
    cache_read = _total(points, CACHE[0], missing)
    write_5m, write_1h = (_total(points, m, missing) for m in CACHE[1:])
    cache_write = None if write_5m is None and write_1h is None else (write_5m or 0.0) + (write_1h or 0.0)
    model = d.model if d else ""
    price = price_for(model) if model else None
    cost = None
    if price is not None and tin is not None and tout is not None:
        cost = (tin * price.input + tout * price.output + (cache_read or 0.0) * price.cache_read
                + (write_5m or 0.0) * price.cache_write_5m + (write_1h or 0.0) * price.cache_write_1h) / 1e6
        cost = round(cost, 4)
    availability = None if "ModelAvailabilityRate" in missing else \
        _weighted(p for p in points if p.metric == "ModelAvailabilityRate")
    ttft = None if "NormalizedTimeToFirstToken" in missing else \
        _weighted(p for p in points if p.metric == "NormalizedTimeToFirstToken")
    canary_requests = (d.canaries + d.rechecks) if d else 0
    share = _pct(canary_requests, requests) if requests else None
    view_days = []
    for day, _, _ in days:
        inside = [p for p in points if _day_of(days, p.at) == day]
        dc: dict[str, float] = defaultdict(float)
        for p in inside:
            if p.metric == REQUESTS:
                dc[_status_class(p.status)] += p.value
        view_days.append(AzureDay(
            date=day, requests=float(sum(dc.values())) if read else None,
            throttled=dc.get("throttled", 0.0) if read else None,
            client_errors=dc.get("client_errors", 0.0) if read else None,
            server_errors=dc.get("server_errors", 0.0) if read else None,
            input_tokens=_total(inside, "InputTokens", missing),
            output_tokens=_total(inside, "OutputTokens", missing)))
    last_day_hours: list[float | None] = []
    if read and metrics.grain_s <= 3600.0:
        _, first, last = days[-1]
        hourly: dict[int, float] = defaultdict(float)
        for p in points:
            if p.metric == REQUESTS and first <= p.at < last:
                hourly[int((p.at - first) // 3600)] += p.value
        last_day_hours = [hourly.get(h, 0.0) for h in range(int((last - first) // 3600))]
    peak = None
    if read:
        per_grain: dict[float, float] = defaultdict(float)
        for p in points:
            if p.metric == REQUESTS:
                per_grain[p.at] += p.value
        peak = round(max(per_grain.values(), default=0.0) / (metrics.grain_s / 60.0), 3)
    pcts = {k: _pct(v, requests) for k, v in by_class.items()}
    canary_avail = d.availability_pct if d else None
    return AzureView(
        resource=resource, deployment=deployment,
        source=SOURCE if read else f"none: {metrics.note or 'not read'}",
        requests=requests, throttled=by_class["throttled"], client_errors=by_class["client_errors"],
        server_errors=by_class["server_errors"], throttled_pct=pcts["throttled"],
        client_errors_pct=pcts["client_errors"], server_errors_pct=pcts["server_errors"],
        input_tokens=tin, output_tokens=tout, cache_read_tokens=cache_read, cache_write_tokens=cache_write,
        estimated_cost_usd=cost, availability_pct=availability, ttft_ms=ttft,
        canary_availability_pct=canary_avail,
        canary_ttft_ms=Percentiles(p50=d.ttft_ms.p50, p95=d.ttft_ms.p95) if d else Percentiles(),
        canary_requests=canary_requests, canary_share_pct=share,
        disagreement=disagreement(canary_avail, d, requests, by_class, slo),
        note=metrics.note, days=view_days, last_day_hours=last_day_hours, peak_requests_per_min=peak,
        grain_s=metrics.grain_s if read else None)


def disagreement(canary_avail: float | None, d: DeploymentReport | None, requests: float | None,
                 by_class: dict[str, float | None], slo: float) -> str | None:
    """One plain sentence where the canary's view and the other callers' disagree, with what it usually
    means. Azure counts the canaries too: their failed requests (at most every failed canary and every
    re-check) are taken out of Azure's failures before the other callers are judged."""
    if canary_avail is None or d is None or requests is None:
        return None
    canary_failed = float(d.canaries - d.ok + d.rechecks)
    others = requests - (d.canaries + d.rechecks)
    if others <= 0:
        return None

    def share(kind: str) -> float:
        return 100.0 * max(0.0, (by_class[kind] or 0.0) - canary_failed) / others

    throttled, failing = share("throttled"), share("server_errors")
    if canary_avail < slo and failing < FAILING_NOTABLE_PCT and throttled < THROTTLED_NOTABLE_PCT:
        return (f"The canaries failed ({_fmt(canary_avail)} available) while the other callers' requests "
                f"succeeded ({_fmt(100.0 - failing)} without a server error): this usually points at the "
                "canary's own path (its key or identity, network, DNS, proxy or region), not at the "
                "deployment.")
    if canary_avail >= slo and throttled >= THROTTLED_NOTABLE_PCT:
        return (f"Real callers were throttled ({_fmt(throttled)} of their requests got 429) while the "
                "canaries were fine: the deployment's quota (tokens or requests per minute) is too small for "
                "real traffic; the canary's one small request still fits under it.")
    if canary_avail >= slo and failing >= FAILING_NOTABLE_PCT:
        return (f"Real callers saw server errors ({_fmt(failing)} of their requests got 5xx) while the "
                "canaries succeeded: failures that depend on load or request size (long prompts, long "
                "outputs), which the canary's tiny request does not reach.")
    return None


def _fmt(v: float) -> str:
    return f"{v:.2f}%" if not math.isclose(v, round(v)) else f"{v:.0f}%"
