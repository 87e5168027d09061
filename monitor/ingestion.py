"""What a config will cost to run: Azure Monitor ingestion (GB a day and a month) and canary tokens (USD a
month), estimated before deploying. `foundry-monitor validate` prints it.

The bytes per envelope are the figures `bench/ingestion_bench.py` measures on the real exporters (it
prints them beside these constants; change both together). Ingestion is counted as the uncompressed
JSON of every envelope, which is what Application Insights bills by (its `_BilledSize` is close to it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from .canary.pricing import cost_usd, estimated_canary_usage
from .config import Budget, Config

DAY_S: Final = 86400.0
MONTH_DAYS: Final = 30.4375  # the average month, as the budget interval uses
GB: Final = 1e9

# bytes of one envelope (compact JSON), measured by bench/ingestion_bench.py with realistic names
ENVELOPE_BYTES: Final[Mapping[str, int]] = MappingProxyType({
    "availability": 1340,    # one per canary: the Application Insights form of a synthetic check
    "span": 1590,            # a CLIENT span (AppDependencies), for failed and slow canaries by default
    "metrics": 920,          # one point of a per-deployment series (AppMetrics), each export (`metrics: all`)
    "daemon metrics": 615,   # one point of the daemon's own series, each export
    "events": 1200,          # one state change (AppEvents)
})
# metric points a deployment adds to every export with `metrics: all` (duration, time to first token,
# input and output tokens, result count, cost, state) when its canaries are ok
SERIES_PER_DEPLOYMENT: Final = 7
# the daemon's own series with `metrics: daemon`: last_reload_success every export (Entra token
# acquisitions and reloads add a point only when they happen)
DAEMON_SERIES: Final = 1


@dataclass(frozen=True, slots=True)
class Estimate:
    canaries_per_day: float
    bytes_per_canary: float  # availability + spans of ok canaries (none unless spans: all)
    metric_bytes_per_day: float
    failure_bytes: int  # what one failed canary adds (its span; a re-check is another canary)
    tokens_usd_per_month: float
    unpriced: tuple[str, ...]  # deployments whose model has no price

    @property
    def bytes_per_day(self) -> float:
        return self.canaries_per_day * self.bytes_per_canary + self.metric_bytes_per_day

    @property
    def gb_per_day(self) -> float:
        return self.bytes_per_day / GB

    @property
    def gb_per_month(self) -> float:
        return self.gb_per_day * MONTH_DAYS


def estimate(cfg: Config) -> Estimate:
    """The daily Azure Monitor ingestion and monthly token cost of `cfg` with every canary ok (failures
    add `failure_bytes` each, and their re-checks), as if a connection string were set."""
    azure = cfg.telemetry.azure
    canaries = 0.0
    usd = 0.0
    unpriced: list[str] = []
    deployments = 0
    for res, dep, s in cfg.targets():
        deployments += 1
        usage = estimated_canary_usage(s.prompt, s.max_tokens)
        cost = cost_usd(dep.model_id, usage)
        interval = s.interval
        budget = _budget(res.budget, dep.budget, len(res.deployments))
        if cost and budget:
            interval = max(interval, cost * MONTH_DAYS * DAY_S / budget)
        per_day = DAY_S / interval
        canaries += per_day
        if cost is None:
            unpriced.append(f"{res.name}/{dep.name}")
        else:
            usd += cost * per_day * MONTH_DAYS
    per_canary = float(ENVELOPE_BYTES["availability"])
    if azure.spans == "all":
        per_canary += ENVELOPE_BYTES["span"]
    exports_per_day = DAY_S / cfg.telemetry.export_interval
    series = SERIES_PER_DEPLOYMENT * deployments if azure.metrics == "all" else 0
    metric_bytes = (series * ENVELOPE_BYTES["metrics"] + DAEMON_SERIES * ENVELOPE_BYTES["daemon metrics"]
                    if azure.metrics != "none" else 0.0) * exports_per_day
    failure = ENVELOPE_BYTES["span"] if azure.spans != "none" else 0
    return Estimate(canaries, per_canary, metric_bytes, failure, usd, tuple(unpriced))


def _budget(res_budget: Budget | None, dep_budget: Budget | None, deployments: int) -> float | None:
    """The monthly budget of one deployment, as the fleet resolves it (a resource's is shared evenly)."""
    if dep_budget is not None and dep_budget.monthly_usd:
        return dep_budget.monthly_usd
    if res_budget is not None and res_budget.monthly_usd:
        return res_budget.monthly_usd / deployments
    return None


def _size(n: float) -> str:
    return f"{n / GB:,.2f} GB" if n >= GB / 10 else f"{n / 1e6:,.1f} MB"


def describe(est: Estimate, *, exporting: bool) -> list[str]:
    """The lines `validate` prints; `exporting`: a connection string is set."""
    lines = [f"canaries: {est.canaries_per_day:,.0f} a day; estimated token cost "
             f"${est.tokens_usd_per_month:,.2f} a month (list prices)"]
    if est.unpriced:
        shown = ", ".join(est.unpriced[:3]) + (" ..." if len(est.unpriced) > 3 else "")
        lines[0] += f"; no price for {len(est.unpriced)} deployment(s): {shown}"
    lines.append(f"Azure Monitor ingestion (estimated): {_size(est.bytes_per_day)} a day, "
                 f"{_size(est.bytes_per_day * MONTH_DAYS)} a month ({est.bytes_per_canary:,.0f} bytes per "
                 f"canary, metrics {_size(est.metric_bytes_per_day)} a day)")
    if not exporting:
        lines[-1] += "; nothing is sent now: no connection string (Prometheus only)"
    if est.failure_bytes:
        lines.append(f"  each failed or slow canary adds {est.failure_bytes:,} bytes (its span); "
                     "see README \"Telemetry\" for what each option costs")
    return lines
