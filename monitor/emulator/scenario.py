"""The emulator's scenario: deployments, their latency, rate limits and injected faults.

A scenario is YAML (or a dict in tests)::

    api_key: emu-key                 # optional; a random key is generated otherwise
    accept_api_key_header: true      # also accept the `api-key` header (x-api-key always works)
    model_field: model_id            # what the response `model` says: model_id or deployment
    seed: 1                          # fault draws are reproducible
    identity: {header: secret-header, token_lifetime: 1h}
    deployments:
      - name: my-haiku               # the deployment name clients send as `model`
        model: claude-haiku-4-5-20251001
        latency: {base: 40ms, jitter: 10ms}   # before the response head
        ttft: 30ms                   # then until the first token
        tokens_per_second: 200       # then the stream pace
        reply: OK
        rate_limit: {requests_per_minute: 60}  # a real token bucket -> 429 RateLimitReached
        faults:
          - {kind: api_error, rate: 0.2}                      # 20% of requests
          - {kind: rate_limit, retry_after: 5, window: {start: 10s, end: 40s}}
        background: {per_minute: 30, errors: {429: 0.05, 503: 0.01}}  # real callers, besides canaries
    azure: {account: emulator, region: eastus}   # served as a Foundry resource's platform metrics
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from monitor.config.durations import parse_duration
from monitor.config.yamlsource import load_document
from monitor.errors import ConfigError, ConfigProblem

from .arm import Arm


class FaultKind(StrEnum):
    BAD_KEY = "bad_key"                        # 401, Azure "invalid subscription key" body
    EXPIRED_TOKEN = "expired_token"  # noqa: S105 - 401, APIM "Access token is ... or have expired"
    PERMISSION_DENIED = "permission_denied"    # 403 PermissionDenied (RBAC role missing)
    DEPLOYMENT_NOT_FOUND = "deployment_not_found"  # 404 DeploymentNotFound
    INVALID_MODEL = "invalid_model"            # 400 unknown_model
    INVALID_REQUEST = "invalid_request"        # 400 invalid_request_error (Anthropic shape)
    GATEWAY_TIMEOUT = "gateway_timeout"        # 408 Timeout (Azure shape)
    RATE_LIMIT = "rate_limit"                  # 429 RateLimitReached with retry-after
    API_ERROR = "api_error"                    # 500 api_error (Anthropic shape)
    BACKEND_AUTH = "backend_auth"              # 500 invalid_model_endpoint_authentication
    UNAVAILABLE = "unavailable"                # 503 ServiceUnavailable
    OVERLOADED = "overloaded"                  # 529 overloaded_error
    STREAM_ERROR = "stream_error"              # HTTP 200, then an SSE `error` event
    HANG = "hang"                              # no response at all
    RESET = "reset"                            # TCP reset before any response byte
    MALFORMED_JSON = "malformed_json"          # HTTP 200 with a body that is not JSON
    TRUNCATED_STREAM = "truncated_stream"      # SSE ends before message_stop
    STALLED_STREAM = "stalled_stream"          # SSE starts, then nothing more
    HUGE_BODY = "huge_body"                    # HTTP 200 with a 2 MiB body
    ENDLESS_STREAM = "endless_stream"          # SSE pings forever
    REDIRECT = "redirect"                      # 307 to a sign-in page, as a misrouted proxy does


def _duration(v: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return parse_duration(v)


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Model):
    start: Duration = 0.0
    end: Duration | None = None

    def contains(self, elapsed: float) -> bool:
        return elapsed >= self.start and (self.end is None or elapsed < self.end)


class Fault(_Model):
    kind: FaultKind
    rate: float = Field(default=1.0, ge=0, le=1)
    window: Window = Window()
    retry_after: float | None = Field(default=None, ge=0)   # rate_limit: the retry-after header
    error_type: str = "overloaded_error"                     # stream_error: the event's error.type


class Latency(_Model):
    base: Duration = 0.0
    jitter: Duration = 0.0


class RateLimit(_Model):
    requests_per_minute: float = Field(gt=0)


class Background(_Model):
    """Real callers' traffic besides the canaries: `per_minute` requests on a fixed grid, a share of
    them answered with each error status (the rest 200), synthesised into the log as if served."""

    per_minute: float = Field(gt=0, le=6000)
    errors: dict[int, float] = Field(default_factory=dict)  # status -> share, e.g. {429: 0.05, 503: 0.01}
    input_tokens: int = Field(default=600, ge=0)
    output_tokens: int = Field(default=150, ge=0)
    cache_read_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)
    ttft: Duration = 0.4
    duration: Duration = 2.0
    stream_share: float = Field(default=0.5, ge=0, le=1)

    @field_validator("errors")
    @classmethod
    def _mix(cls, v: dict[int, float]) -> dict[int, float]:
        if any(not 400 <= code <= 599 for code in v):
            raise ValueError("error statuses must be between 400 and 599")
        if any(share < 0 for share in v.values()) or sum(v.values()) > 1:
            raise ValueError("error shares must be >= 0 and add up to at most 1")
        return v


class Deployment(_Model):
    name: str = Field(min_length=1)
    model: str = "claude-haiku-4-5-20251001"
    latency: Latency = Latency()
    ttft: Duration = 0.0
    tokens_per_second: float = Field(default=0, ge=0)  # 0: no pacing
    reply: str = "OK"
    rate_limit: RateLimit | None = None
    faults: tuple[Fault, ...] = ()
    background: Background | None = None


class Identity(_Model):
    header: str = "emulator-identity-header"
    token_lifetime: Duration = 3600.0


class AzureResource(_Model):
    """The emulator as one Foundry resource in ARM, for the platform metrics API it serves."""

    account: str = "emulator"  # any subscription and resource group; another account name is a 404
    region: str = "eastus"
    forbidden: bool = False  # 403 AuthorizationFailed, as without the Monitoring Reader role
    throttle: int = Field(default=0, ge=0)  # the next N metrics calls answer 429 with retry-after
    retry_after: float = Field(default=1.0, ge=0)


class Scenario(_Model):
    api_key: str = Field(default_factory=lambda: "emu-" + secrets.token_hex(16), min_length=1)
    accept_api_key_header: bool = True
    model_field: Literal["model_id", "deployment"] = "model_id"
    seed: int | None = None
    identity: Identity = Identity()
    deployments: tuple[Deployment, ...] = ()
    azure: AzureResource = AzureResource()
    arm: Arm = Arm()  # the control plane (monitor.emulator.arm): subscriptions, accounts, models, quota


CATALOGUE = (
    ("claude-opus-4-5", "claude-opus-4-5-20251101"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    ("claude-opus-4-1", "claude-opus-4-1-20250805"),
)


def default_scenario() -> Scenario:
    """The four catalogue models, each deployed under its own alias, answering in ~50 ms."""
    return Scenario(deployments=tuple(
        Deployment(name=name, model=model, latency=Latency(base=0.04, jitter=0.02), ttft=0.01)
        for name, model in CATALOGUE))


def parse(data: Any, file: str = "scenario") -> Scenario:
    """A validated Scenario from plain data; ConfigError naming each bad key otherwise."""
    try:
        scenario = Scenario.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError([ConfigProblem(file, None, ".".join(str(p) for p in e["loc"]),
                                         str(e["msg"]).removeprefix("Value error, "))
                           for e in exc.errors(include_url=False)]) from None
    _check_unique(scenario, file)
    return scenario


def load(source: str | Path | dict[str, Any] | Scenario | None) -> Scenario:
    """A Scenario from a file path, a dict, a Scenario, or None (the default catalogue)."""
    if source is None:
        return default_scenario()
    if isinstance(source, Scenario):
        return source
    if isinstance(source, dict):
        return parse(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), None, "", f"cannot read the scenario: {exc.strerror}")]) \
            from None
    doc = load_document(text, str(path), env={})
    try:
        scenario = Scenario.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError([doc.problem(tuple(e["loc"]), str(e["msg"]).removeprefix("Value error, "))
                           for e in exc.errors(include_url=False)]) from None
    _check_unique(scenario, str(path))
    return scenario


def dump(scenario: Scenario) -> str:
    return yaml.safe_dump(scenario.model_dump(mode="json", exclude={"api_key"}), sort_keys=False)


def _check_unique(scenario: Scenario, file: str) -> None:
    seen: set[str] = set()
    for i, dep in enumerate(scenario.deployments):
        if dep.name in seen:
            raise ConfigError([ConfigProblem(file, None, f"deployments[{i}].name",
                                             f'duplicate deployment name "{dep.name}"')])
        seen.add(dep.name)
