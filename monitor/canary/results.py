"""The vocabulary of one canary: what the probe saw (Outcome), what it means (Verdict), what is kept
(CanaryResult). Everything after classification works on CanaryResult only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class FailureKind(StrEnum):
    """Every class a canary can end in. The values are metric labels: never rename them."""

    OK = "ok"
    INVALID_API_KEY = "invalid_api_key"
    TOKEN_REJECTED = "token_rejected"  # noqa: S105 - a failure class, not a password
    CREDENTIAL_UNAVAILABLE = "credential_unavailable"
    PERMISSION_DENIED = "permission_denied"
    DEPLOYMENT_NOT_FOUND = "deployment_not_found"
    ENDPOINT_NOT_FOUND = "endpoint_not_found"
    INVALID_MODEL = "invalid_model"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    MALFORMED_RESPONSE = "malformed_response"
    UNEXPECTED_STATUS = "unexpected_status"
    CANCELLED = "cancelled"


class Transport(StrEnum):
    """Why no complete HTTP exchange happened (set on Outcome.transport_error)."""

    TIMEOUT = "timeout"
    CONNECT = "connect"
    TLS = "tls"
    RESET = "reset"
    PROTOCOL = "protocol"


class AuthMode(StrEnum):
    API_KEY = "api_key"
    ENTRA = "entra"


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_5m_input_tokens: int | None = None
    cache_1h_input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Timings:
    """Seconds from the moment the request was handed to the socket layer."""

    total_s: float | None = None
    headers_s: float | None = None
    ttft_s: float | None = None
    token_s: float | None = None  # an Entra token acquisition made for this canary (not part of total)

    @property
    def output_tokens_per_s(self) -> float | None:
        return None  # computed on CanaryResult where usage is known


@dataclass(frozen=True, slots=True)
class Outcome:
    """Raw facts of one canary. Built by the probe, which never raises."""

    resource: str
    deployment: str
    started_at: datetime
    auth_mode: AuthMode
    stream: bool
    timings: Timings = field(default_factory=Timings)
    status_code: int | None = None
    request_id: str | None = None
    apim_request_id: str | None = None
    retry_after_header: str | None = None
    retry_after_ms_header: str | None = None
    error_code: str | None = None  # Azure gateway body: error.code (or APIM statusCode)
    error_type: str | None = None  # Anthropic body: error.type
    error_message: str | None = None
    stream_error_type: str | None = None  # SSE `event: error` after HTTP 200
    transport_error: Transport | None = None
    transport_detail: str | None = None
    credential_error: str | None = None
    malformed: str | None = None  # why a 2xx body or stream was not acceptable
    usage: Usage | None = None
    response_model: str | None = None
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: FailureKind
    hint: str
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.kind is FailureKind.OK


@dataclass(frozen=True, slots=True)
class CanaryResult:
    """One canary, measured and classified: the only thing stored and exported."""

    resource: str
    deployment: str
    model: str
    location: str
    started_at: datetime
    verdict: Verdict
    status_code: int | None
    timings: Timings
    usage: Usage | None
    request_id: str | None
    apim_request_id: str | None
    response_model: str | None
    stop_reason: str | None
    detail: str | None = None  # short, secret-free description of what was seen (error message)
    attempt: int = 0  # 0 = the scheduled canary; 1.. = confirmation re-checks of a failure

    @property
    def kind(self) -> FailureKind:
        return self.verdict.kind

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    @property
    def output_tokens_per_s(self) -> float | None:
        t = self.timings
        if self.usage is None or t.total_s is None or t.ttft_s is None or self.usage.output_tokens <= 1:
            return None
        span = t.total_s - t.ttft_s
        return (self.usage.output_tokens - 1) / span if span > 0 else None
