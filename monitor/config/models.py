"""The models of checks.yaml: frozen pydantic models with validators for durations, secrets, schedules
and zones. ``load`` builds them from a file; ``problems`` words what pydantic finds."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from .durations import format_duration, parse_duration
from .problems import Unreadable, named
from .schedule import check as check_schedule
from .secrets import Secret

DEFAULT_SCOPE = "https://cognitiveservices.azure.com/.default"
DEFAULT_PROMPT = "Reply with the single word OK."


# Ten years: far above any sane interval or retention (the longest default is 400d), and far below what
# would overflow downstream: timedelta (999999999 days), a datetime a duration from now (year 9999),
# threading/socket timeouts (about 292 years), APScheduler's IntervalTrigger, loop.call_later.
MAX_DURATION = 3650 * 86400.0


def _duration(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, str):
        raise ValueError(f"expected a duration like 30s or 5m, got {named(v)}")
    return parse_duration(v)


def _in_range(v: float) -> float:
    if v <= 0:
        raise ValueError("must be longer than 0s")
    if not v <= MAX_DURATION:  # `not <=`: also catches inf (a number of digits too long for a float)
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)}")
    return v


Duration = Annotated[float, BeforeValidator(_duration), AfterValidator(_in_range)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class Budget(_Model):
    monthly_usd: float | None = Field(default=None, gt=0)


class CheckSettings(_Model):
    """The `defaults` section: how each deployment is probed and judged."""

    interval: Duration = 60.0
    timeout: Duration = 30.0
    stream: bool = True
    max_tokens: int = Field(default=1, ge=1, le=4096)
    prompt: str = Field(default=DEFAULT_PROMPT, min_length=1, max_length=4000)
    confirm: int = Field(default=1, ge=0, le=10)
    confirm_interval: Duration = 5.0
    failure_threshold: int = Field(default=3, ge=1, le=100)
    success_threshold: int = Field(default=2, ge=1, le=100)
    latency_slo: Duration = 10.0
    ttft_slo: Duration | None = None


_SETTING_KEYS = tuple(CheckSettings.model_fields)


class Deployment(_Model):
    name: str = Field(min_length=1)
    model: str | None = None
    budget: Budget | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    stream: bool | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    prompt: str | None = Field(default=None, min_length=1, max_length=4000)
    confirm: int | None = Field(default=None, ge=0, le=10)
    confirm_interval: Duration | None = None
    failure_threshold: int | None = Field(default=None, ge=1, le=100)
    success_threshold: int | None = Field(default=None, ge=1, le=100)
    latency_slo: Duration | None = None
    ttft_slo: Duration | None = None

    @property
    def model_id(self) -> str:
        return self.model or self.name

    def settings(self, defaults: CheckSettings) -> CheckSettings:
        """The effective settings: this deployment's overrides on top of ``defaults``."""
        over = {k: getattr(self, k) for k in _SETTING_KEYS if getattr(self, k) is not None}
        return defaults.model_copy(update=over) if over else defaults


class EntraAuth(_Model):
    scope: str = DEFAULT_SCOPE
    client_id: str | None = None


class Auth(_Model):
    api_key: Secret | None = None
    entra: EntraAuth | None = None

    @property
    def mode(self) -> str:
        return "entra" if self.entra is not None else "api_key"


def _entra(v: Any) -> Any:
    return {} if v is None or v is True else v


class _AuthIn(Auth):
    entra: Annotated[EntraAuth | None, BeforeValidator(_entra)] = None


_AZURE_RESOURCE_ID = re.compile(
    r"/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.CognitiveServices/accounts/"
    r"[A-Za-z0-9][A-Za-z0-9_.-]{1,63}", re.IGNORECASE)


def _azure_resource_id(v: str) -> str:
    if not _AZURE_RESOURCE_ID.fullmatch(v):
        raise Unreadable(
            f'expected an Azure resource ID like /subscriptions/<subscription GUID>/resourceGroups/<group>/'
            f'providers/Microsoft.CognitiveServices/accounts/<name>, got "{v}"',
            "expected an Azure resource ID like /subscriptions/<subscription GUID>/resourceGroups/<group>/"
            "providers/Microsoft.CognitiveServices/accounts/<name>")
    return v.rstrip("/")


class Resource(_Model):
    name: str = Field(min_length=1)
    resource: str | None = None
    # the Foundry resource in ARM: Azure's own view (platform metrics per deployment) is read from it
    azure_resource_id: Annotated[str, AfterValidator(_azure_resource_id)] | None = None
    base_url: str | None = None
    location: str | None = None
    auth: _AuthIn | None = None
    api_key_header: Literal["x-api-key", "api-key"] = "x-api-key"
    budget: Budget | None = None
    deployments: list[Deployment] = Field(min_length=1)

    @property
    def endpoint(self) -> str:
        """Base URL ending in a slash, as the SDK builds it."""
        if self.base_url:
            return self.base_url.rstrip("/") + "/"
        return f"https://{self.resource}.services.ai.azure.com/anthropic/"

    @property
    def messages_url(self) -> str:
        return self.endpoint + "v1/messages"


class AzureExport(_Model):
    """What goes to Azure Monitor besides one availability record per canary (README "Telemetry" gives
    the bytes of each choice): Application Insights bills by ingested volume."""

    spans: Literal["failures", "all", "none"] = "failures"  # failed and slow canaries only, by default
    metrics: Literal["daemon", "all", "none"] = "daemon"  # per-deployment series stay in Prometheus


class Override(_Model):
    """`discovery.overrides[]`: any `defaults` key (and `budget`, `model`) for discovered deployments whose
    name matches the shell-style pattern `match`; the first matching entry wins."""

    match: str = Field(min_length=1)
    model: str | None = None
    budget: Budget | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    stream: bool | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    prompt: str | None = Field(default=None, min_length=1, max_length=4000)
    confirm: int | None = Field(default=None, ge=0, le=10)
    confirm_interval: Duration | None = None
    failure_threshold: int | None = Field(default=None, ge=1, le=100)
    success_threshold: int | None = Field(default=None, ge=1, le=100)
    latency_slo: Duration | None = None
    ttft_slo: Duration | None = None


DEFAULT_ARM_ENDPOINT = "https://management.azure.com"


class Discovery(_Model):
    """Every Claude deployment of the named subscriptions, read from Azure Resource Manager."""

    subscriptions: list[str] = Field(min_length=1)
    resource_groups: list[str] = Field(default_factory=list)  # empty: the whole subscription
    tags: dict[str, str] = Field(default_factory=dict)  # an account must carry every one of these tags
    include: list[str] = Field(default_factory=lambda: ["*"])  # deployment name patterns (fnmatch)
    exclude: list[str] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)
    refresh: Duration = 600.0
    credential: Literal["default", "managed_identity"] = "default"  # for ARM and the discovered canaries
    client_id: str | None = None  # a user-assigned managed identity
    scope: str = DEFAULT_SCOPE  # the token scope of the discovered deployments' canaries
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT  # sovereign clouds, or a stand-in in tests
    ca_file: str | None = None  # a private CA for ARM and the token endpoint (a TLS-inspecting proxy)
    endpoint: str | None = None  # the canaries' base URL instead of https://{subdomain}.services.ai.azure.com/
    #                              anthropic/; `{subdomain}` is replaced (tests point it at the emulator)


class Telemetry(_Model):
    connection_string: Secret | None = None  # else $APPLICATIONINSIGHTS_CONNECTION_STRING
    credential: Literal["none", "managed_identity", "default"] = "none"  # Entra auth for ingestion
    client_id: str | None = None  # user-assigned managed identity for ingestion
    service_name: str = "foundry-monitor"
    location: str | None = None
    export_interval: Duration = 60.0
    offline_storage: bool = True  # <data_dir>/telemetry keeps what an ingestion outage would lose
    azure: AzureExport = AzureExport()


class Store(_Model):
    path: str | None = None
    raw_retention: Duration = 7 * 86400.0  # ~260 B a canary: 1,000 deployments at 60 s keep ~2.6 GB
    rollup_retention: Duration = 400 * 86400.0
    max_pending: int = Field(default=20_000, ge=1)  # results kept in memory while the store is unwritable


class Server(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    debug_endpoints: bool = True
    bearer_token: Secret | None = None


def _schedule(text: str) -> str:
    try:
        return check_schedule(text)
    except ValueError as exc:  # APScheduler's reason quotes the offending field
        raise Unreadable(str(exc), f'cannot read schedule "{text}"; write a weekday and a time like '
                                    '"mon 08:00", or five crontab fields like "0 8 * * mon"') from None


class Weekly(_Model):
    enabled: bool = False
    schedule: Annotated[str, AfterValidator(_schedule)] = "mon 08:00"  # or crontab "0 8 * * mon"
    recipients: list[str] = Field(default_factory=list)
    grace: Duration = 24 * 3600.0  # a send missed while the daemon was down is made up within this time


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown time zone "{name}"; use an IANA name such as Europe/Berlin') from None
    return name


TimeZone = Annotated[str, AfterValidator(_zone)]


class PlatformMetrics(_Model):
    """`reports.metrics`: how Azure's own view (platform metrics on the ARM API) is read."""

    enabled: bool = True  # off: resources[].azure_resource_id is ignored by reports
    credential: Literal["default", "managed_identity"] = "default"  # needs Monitoring Reader on each resource
    client_id: str | None = None  # a user-assigned managed identity
    endpoint: str | None = None  # ARM, if not https://management.azure.com (sovereign clouds, tests)


class Reports(_Model):
    timezone: TimeZone = "UTC"
    days: int = Field(default=30, ge=1, le=400)
    slo_target: float = Field(default=99.9, gt=0, le=100)
    workspace_id: str | None = None  # Log Analytics workspace (GUID); else $FOUNDRY_MONITOR_WORKSPACE_ID
    credential: Literal["default", "managed_identity"] = "default"  # Entra identity for the query API
    client_id: str | None = None  # a user-assigned managed identity
    endpoint: str | None = None  # the query API, if not https://api.loganalytics.io (sovereign clouds)
    weekly: Weekly = Weekly()
    metrics: PlatformMetrics = PlatformMetrics()


class Smtp(_Model):
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: Secret | None = None
    ca_file: str | None = None  # a private CA for the server's certificate
    timeout: Duration = 30.0


class Acs(_Model):
    """Azure Communication Services Email: a connection string, or an endpoint with Entra ID."""

    connection_string: Secret | None = None
    endpoint: str | None = None
    credential: Literal["managed_identity", "default"] = "default"
    client_id: str | None = None


class Email(_Model):
    sender: str | None = None
    smtp: Smtp | None = None
    acs: Acs | None = None


class Config(_Model):
    data_dir: str = "./data"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # one log line per ok canary too (failures always have theirs); auto: while the fleet is small
    log_canaries: Literal["auto", "all", "failures"] = "auto"
    defaults: CheckSettings = CheckSettings()
    resources: list[Resource] = Field(default_factory=list)  # required unless `discovery` is set
    discovery: Discovery | None = None
    telemetry: Telemetry = Telemetry()
    store: Store = Store()
    server: Server = Server()
    reports: Reports = Reports()
    email: Email = Email()
    source: str = Field(default="checks.yaml", exclude=True)

    def targets(self) -> Iterator[tuple[Resource, Deployment, CheckSettings]]:
        for res in self.resources:
            for dep in res.deployments:
                yield res, dep, dep.settings(self.defaults)


# --- loading -----------------------------------------------------------------------------------------
