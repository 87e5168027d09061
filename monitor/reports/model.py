"""The Report: what owners ask every week, for one period, per deployment and overall.

Every figure that could not be measured is None ("no data"), never zero. Times are ISO 8601 with the
report's time zone offset; durations in milliseconds; money in USD (estimated from the pricing table).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _M(BaseModel):
    model_config = ConfigDict(frozen=True)


class Percentiles(_M):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class FailureKindCount(_M):
    kind: str
    count: int
    hint: str
    request_id: str | None = None  # the latest example that carried ids
    apim_request_id: str | None = None


class IncidentRow(_M):
    resource: str
    deployment: str
    state: str  # down | throttled
    started_at: str
    ended_at: str | None  # None: still open at the end of the period
    duration_s: float
    kind: str | None
    hint: str | None
    request_id: str | None
    apim_request_id: str | None


class Day(_M):
    date: str
    partial: bool = False  # the current day, so far (a rolling report ends now)
    canaries: int
    ok: int
    availability_pct: float | None
    latency_ms: Percentiles
    ttft_ms: Percentiles
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Change(_M):
    """This period against the previous one of the same length (None where either has no data)."""

    availability_pct: float | None = None  # percentage points
    latency_p95_ms: float | None = None
    ttft_p95_ms: float | None = None
    cost_usd: float | None = None
    output_tokens: int | None = None


class DeploymentReport(_M):
    resource: str
    deployment: str
    model: str
    canaries: int
    ok: int
    rechecks: int
    availability_pct: float | None
    slo_met: bool | None
    state_pct: dict[str, float]  # share of the period in each state; unknown included, never counted as up
    latency_ms: Percentiles
    ttft_ms: Percentiles
    output_tokens_per_s: float | None
    failures: list[FailureKindCount]
    incidents: list[IncidentRow]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    days: list[Day]
    change: Change


class Totals(_M):
    deployments: int
    canaries: int
    ok: int
    availability_pct: float | None
    slo_met: int  # deployments that met the SLO
    slo_judged: int  # deployments with data to judge
    latency_ms: Percentiles
    ttft_ms: Percentiles
    input_tokens: int
    output_tokens: int
    cost_usd: float
    failures: list[FailureKindCount]
    days: list[Day]
    change: Change


class RealUsage(_M):
    """A Foundry resource's real traffic from its platform metrics, beside what the canaries spent."""

    resource: str  # the config's resource name
    azure_resource: str
    requests: float | None
    input_tokens: float | None
    output_tokens: float | None
    estimated_cost_usd: float | None  # None when the resource's deployments differ in price
    canary_share_pct: float | None  # the monitor's own share of the requests


class AzureDay(_M):
    """One local day of a deployment's real traffic, from the platform metrics."""

    date: str
    requests: float | None
    throttled: float | None  # 429
    client_errors: float | None  # other 4xx
    server_errors: float | None  # 5xx
    input_tokens: float | None
    output_tokens: float | None


class AzureView(_M):
    """One deployment as Azure saw all its traffic (platform metrics), beside the canaries' view.

    Every Azure figure is None when it could not be read (`note` says why); the canary figures come
    from this report's own source."""

    resource: str
    deployment: str
    source: str  # where the Azure figures came from
    requests: float | None
    throttled: float | None  # 429
    client_errors: float | None  # other 4xx
    server_errors: float | None  # 5xx
    throttled_pct: float | None
    client_errors_pct: float | None
    server_errors_pct: float | None
    input_tokens: float | None
    output_tokens: float | None
    cache_read_tokens: float | None
    cache_write_tokens: float | None
    estimated_cost_usd: float | None
    availability_pct: float | None  # Azure's ModelAvailabilityRate, weighted by requests
    ttft_ms: float | None  # Azure's NormalizedTimeToFirstToken, average
    canary_availability_pct: float | None
    canary_ttft_ms: Percentiles
    canary_requests: int
    canary_share_pct: float | None  # the canaries' share of all requests Azure counted
    disagreement: str | None  # one sentence where the two views disagree, with what it usually means
    note: str | None  # what could not be read
    days: list[AzureDay]
    last_day_hours: list[float | None] = []  # requests per hour of the last day ([]: not read hourly)
    peak_requests_per_min: float | None = None  # the busiest time grain's requests, per minute
    grain_s: float | None = None  # the metrics' time grain (the peak is an average over one grain)


class ControlPlaneChange(_M):
    """One change the daemon saw in Azure Resource Manager (the store's inventory_events)."""

    at: str
    kind: str  # added | removed | drift | retirement
    subscription: str
    account: str
    deployment: str
    field: str | None  # drift: what changed; retirement: the threshold in days
    before: str | None
    after: str | None
    text: str  # the same, in words


class InventoryRow(_M):
    """One Claude deployment as ARM last described it (the daemon's last snapshot)."""

    subscription: str
    account: str
    region: str
    deployment: str
    model: str
    version: str
    sku: str
    capacity: int | None
    rate_limits: str  # e.g. "50 requests/min, 50000 tokens/min"; "" when ARM lists none
    state: str
    retirement: str | None
    days_to_retirement: int | None  # from the report's generation time; None: no date in the catalogue
    quota: str | None  # the subscription quota it draws on, "name current/limit"; None: not read
    monitored: bool


class Headroom(_M):
    """What a deployment's own request limit allows against what real callers used (platform metrics),
    or, without platform metrics, whether the canaries were throttled."""

    resource: str
    deployment: str
    limit_requests_per_min: float | None  # ARM rateLimits, key request; None: ARM lists none
    peak_requests_per_min: float | None  # None: no platform metrics
    peak_pct_of_limit: float | None
    grain_s: float | None  # the peak is the average over the busiest grain of this many seconds
    throttled: float | None  # real callers' 429s (platform metrics); None: not read
    canary_throttled: int  # canaries classified as throttled
    quota: str | None  # the shared subscription quota's name
    hint: str | None  # why it is throttled, as far as ARM and the metrics tell


class ControlPlane(_M):
    """The control plane in the period (with `discovery`): what changed, the last inventory, headroom."""

    source: str  # where these figures come from
    changes: list[ControlPlaneChange]
    inventory_at: str | None  # when ARM was last read; None: no snapshot kept
    inventory: list[InventoryRow] | None  # None: not available (no store, or never read)
    headroom: list[Headroom]
    notes: list[str]


class Report(_M):
    title: str
    source: str
    generated_at: str
    timezone: str
    start: str
    end: str
    days: int
    partial: bool = False  # ends now: the last day is today so far (the weekly email keeps whole days)
    slo_target_pct: float
    overall: Totals
    deployments: list[DeploymentReport]
    incidents: list[IncidentRow]
    real_usage: list[RealUsage] | None  # None: not available from this source
    notes: list[str]
    azure_view: list[AzureView] | None = None  # None: no resource has an azure_resource_id
    control_plane: ControlPlane | None = None  # None: the config has no discovery section
