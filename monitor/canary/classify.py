"""Outcome -> Verdict: the ONE place that turns what a canary saw into a failure class and a hint.

Pure: no I/O, no clock (an HTTP-date ``retry-after`` is measured from ``Outcome.started_at``).
Precedence, first match wins:

1. ``credential_error``  -> credential_unavailable (no request was sent)
2. ``transport_error``   -> timeout / connection_error / tls_error (even after an HTTP 200 stream start)
3. no status             -> unexpected_status
4. non-2xx status        -> the status gives a base kind (``_STATUS``, else 4xx/5xx family); the body may
   refine it only to a kind listed in ``_REFINES[base]``, trying the Azure ``error.code``, then the
   Anthropic ``error.type``, then the message text. 429 and 403 are never refined.
5. 2xx with an error     -> the Azure code, the Anthropic type, the SSE ``error`` event type (unknown: 5xx)
6. 2xx ``malformed``     -> malformed_response
7. 200 -> ok; any other 2xx -> unexpected_status

401 (and ``authentication_error``) become invalid_api_key or token_rejected by ``Outcome.auth_mode``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Final

from .results import AuthMode, FailureKind, Outcome, Transport, Verdict

__all__ = ["HINTS", "RETRYABLE_KINDS", "SPEND_LIMIT_HINT", "classify", "retry_after_seconds"]

K = FailureKind

_QUOTE_IDS = "quote both request-id and apim-request-id from the log"

HINTS: Final[Mapping[FailureKind, str]] = MappingProxyType({
    K.OK: "The canary succeeded; nothing to do.",
    K.INVALID_API_KEY: (
        "HTTP 401: the resource rejected the API key. Compare it with the key under \"Keys and "
        "Endpoint\" of the Foundry resource in the Azure portal (keys may have been rotated)."
    ),
    K.TOKEN_REJECTED: (
        "HTTP 401: the resource rejected the Entra ID token (expired, invalid or wrong audience); tokens "
        "expire after about an hour. Check which identity the monitor runs as, that the token scope is "
        "https://cognitiveservices.azure.com/.default and that Entra ID auth is enabled on the resource."
    ),
    K.CREDENTIAL_UNAVAILABLE: (
        "No Entra ID token could be obtained, so no request was sent. Check the credential sources: the "
        "managed identity (and AZURE_CLIENT_ID for a user-assigned one), the AZURE_TENANT_ID / "
        "AZURE_CLIENT_ID environment variables of a service principal, or `az login` on this host."
    ),
    K.PERMISSION_DENIED: (
        "HTTP 403 (or 401 PermissionDenied): the identity lacks a role on the Foundry resource. Assign "
        "\"Cognitive Services User\" or \"Azure AI User\" on the resource; new role assignments can take "
        "several minutes to propagate."
    ),
    K.DEPLOYMENT_NOT_FOUND: (
        "The deployment named in the request's model field was not found. The model field carries the "
        "deployment name, which may differ from the model ID (e.g. claude-sonnet-4-5): check it under "
        "\"Models + endpoints\" and that the model is available in the resource's region."
    ),
    K.ENDPOINT_NOT_FOUND: (
        "HTTP 404: the resource name, base URL or path is wrong. The base URL must be "
        "https://<resource>.services.ai.azure.com/anthropic/ (ending in /anthropic/) of an existing resource."
    ),
    K.INVALID_MODEL: (
        "HTTP 400: the model parameter was rejected. Put the deployment name (which may differ from the "
        "model ID) in the model field and check that the deployment exists and is configured correctly."
    ),
    K.BAD_REQUEST: (
        "The service rejected the canary request itself (4xx such as 400, 413 or 422). Check the canary's "
        "max_tokens, prompt and features (some are not supported on Foundry) against the logged message."
    ),
    K.RATE_LIMITED: (
        "HTTP 429: the deployment's quota (requests or tokens per minute) is used up; the canary backs off. "
        "Foundry sends no anthropic-ratelimit-* headers, so watch quota in Azure Monitor and request a quota "
        "increase in the Azure portal if it persists."
    ),
    K.OVERLOADED: (
        "The model is overloaded (529 or overloaded_error); this is usually transient and clears on its own. "
        f"If it persists, open a support case and {_QUOTE_IDS}."
    ),
    K.SERVER_ERROR: (
        "Server-side error (5xx or api_error), usually transient. "
        f"If it persists, open a support case and {_QUOTE_IDS}."
    ),
    K.TIMEOUT: (
        "No complete answer in time (client timeout, 408, 504 or timeout_error), usually transient. If it "
        f"persists, check the network path and the configured timeout, and {_QUOTE_IDS} to support."
    ),
    K.CONNECTION_ERROR: (
        "The connection failed or broke (DNS, refused, reset or an HTTP protocol error). Check that the "
        "resource host name resolves and is reachable from here, and any proxy or firewall on the way."
    ),
    K.TLS_ERROR: (
        "The TLS handshake failed, usually because a TLS-inspecting proxy presents its own certificate. "
        "Add the proxy's CA to the CA bundle in use (SSL_CERT_FILE) or bypass the proxy for this host."
    ),
    K.MALFORMED_RESPONSE: (
        "A 2xx answer carried an invalid body or stream (bad JSON, no usage, no message_stop or cut short). "
        f"Look for a proxy rewriting or truncating responses; if there is none, {_QUOTE_IDS} to support."
    ),
    K.UNEXPECTED_STATUS: (
        "The service answered with a status the monitor does not expect (e.g. a redirect or an odd 2xx). "
        "Check that the base URL points straight at the resource's /anthropic/ endpoint, not at a proxy."
    ),
    K.CANCELLED: "The canary was cancelled because the monitor is shutting down; nothing to do.",
})

SPEND_LIMIT_HINT: Final = (
    "HTTP 429 for a spend limit (enforced_spend_limit_reached): retrying will not help. Raise the spend "
    "limit or wait for the billing period to reset; check billing for the resource in the Azure portal."
)

RETRYABLE_KINDS: Final = frozenset({K.RATE_LIMITED, K.OVERLOADED, K.SERVER_ERROR, K.TIMEOUT})

MAX_RETRY_AFTER_S: Final = 3600.0

_TRANSPORT: Final[Mapping[Transport, FailureKind]] = MappingProxyType({
    Transport.TIMEOUT: K.TIMEOUT,
    Transport.CONNECT: K.CONNECTION_ERROR,
    Transport.TLS: K.TLS_ERROR,
    Transport.RESET: K.CONNECTION_ERROR,
    Transport.PROTOCOL: K.CONNECTION_ERROR,
})

# Exact statuses; others fall back to their family (4xx bad_request, 5xx server_error).
# INVALID_API_KEY stands for "authentication failed" and becomes TOKEN_REJECTED with Entra auth.
_STATUS: Final[Mapping[int, FailureKind]] = MappingProxyType({
    200: K.OK,
    401: K.INVALID_API_KEY,
    403: K.PERMISSION_DENIED,
    404: K.ENDPOINT_NOT_FOUND,
    408: K.TIMEOUT,
    429: K.RATE_LIMITED,
    504: K.TIMEOUT,
    529: K.OVERLOADED,
})

# Azure gateway `error.code`, compared case-insensitively (the APIM shape gives its statusCode as a string).
_CODE: Final[Mapping[str, FailureKind]] = MappingProxyType({code: kind for kind, codes in (
    (K.INVALID_API_KEY, ("401",)),
    (K.PERMISSION_DENIED, ("403", "permissiondenied", "authorizationfailed")),
    (K.DEPLOYMENT_NOT_FOUND, ("deploymentnotfound", "model_not_found", "modelnotfound")),
    (K.ENDPOINT_NOT_FOUND, ("404", "resourcenotfound", "api_not_supported")),
    (K.INVALID_MODEL, ("invalid_model", "invalidmodel", "unknown_model", "no_model_name")),
    (K.RATE_LIMITED, ("429", "ratelimitreached")),
    (K.TIMEOUT, ("408", "timeout")),
    (K.SERVER_ERROR, ("invalid_model_endpoint_authentication", "internalservererror", "serviceunavailable")),
) for code in codes})

# Anthropic `error.type` (body or SSE `error` event). The set is open: unknown types fall through.
_TYPE: Final[Mapping[str, FailureKind]] = MappingProxyType({
    "invalid_request_error": K.BAD_REQUEST,
    "authentication_error": K.INVALID_API_KEY,
    "billing_error": K.BAD_REQUEST,
    "permission_error": K.PERMISSION_DENIED,
    "not_found_error": K.ENDPOINT_NOT_FOUND,
    "conflict_error": K.BAD_REQUEST,
    "request_too_large": K.BAD_REQUEST,
    "rate_limit_error": K.RATE_LIMITED,
    "api_error": K.SERVER_ERROR,
    "timeout_error": K.TIMEOUT,
    "overloaded_error": K.OVERLOADED,
})

# Message text, for bodies whose code or type says too little (e.g. 404 not_found_error "model: x").
_MESSAGE: Final[tuple[tuple[re.Pattern[str], FailureKind], ...]] = (
    (re.compile(r"\b(?:deployment|model)\b[^.]{0,200}\b(?:not found|does not exist|could not be found)",
                re.I), K.DEPLOYMENT_NOT_FOUND),
    (re.compile(r"^model: \S+$", re.I), K.DEPLOYMENT_NOT_FOUND),
    (re.compile(r"invalid model|model parameter|unknown model|reference to a model", re.I), K.INVALID_MODEL),
)

# Which body-derived kinds may replace the kind a status gives (absent: never refined, e.g. 403, 429).
_REFINES: Final[Mapping[FailureKind, frozenset[FailureKind]]] = MappingProxyType({
    K.INVALID_API_KEY: frozenset({K.PERMISSION_DENIED}),
    K.ENDPOINT_NOT_FOUND: frozenset({K.DEPLOYMENT_NOT_FOUND, K.INVALID_MODEL}),
    K.BAD_REQUEST: frozenset({K.DEPLOYMENT_NOT_FOUND, K.INVALID_MODEL}),
    K.SERVER_ERROR: frozenset({K.OVERLOADED, K.TIMEOUT}),
})

_SPEND_LIMIT = re.compile(r"enforced_spend_limit_reached|spend limit", re.I)
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*")
_WAIT_TEXT = re.compile(
    r"\b(?:wait|retry after|retry in|try again in)\s+(\d{1,9}(?:\.\d{1,9})?)\s*(?:seconds?|secs?|s)\b", re.I)
_MAX_MESSAGE = 2000  # bound the text the regexes scan


def classify(outcome: Outcome) -> Verdict:
    """The failure class of one canary, a plain-words hint and, for retryable kinds, the server's wait."""
    kind = _kind(outcome)
    hint = HINTS[kind]
    if kind is K.RATE_LIMITED and _SPEND_LIMIT.search(_message(outcome)):
        hint = SPEND_LIMIT_HINT
    wait = retry_after_seconds(outcome) if kind in RETRYABLE_KINDS else None
    return Verdict(kind=kind, hint=hint, retry_after=wait)


def _kind(o: Outcome) -> FailureKind:
    if o.credential_error is not None:
        return K.CREDENTIAL_UNAVAILABLE
    if o.transport_error is not None:
        return _TRANSPORT.get(o.transport_error, K.CONNECTION_ERROR)
    status = o.status_code
    if status is None:
        return K.UNEXPECTED_STATUS
    if 200 <= status <= 299:
        base = _kind_2xx(o, status)
    else:
        base = _STATUS[status] if status in _STATUS else _family(status)
    return _for_mode(_refine(base, o), o.auth_mode)


def _kind_2xx(o: Outcome, status: int) -> FailureKind:
    """A 2xx is judged by the error it carries (code, type, SSE error event), then by body sanity."""
    if o.error_code or o.error_type or o.stream_error_type:
        found = _by_code(o.error_code) or _by_type(o.error_type) or _by_type(o.stream_error_type)
        return found or K.SERVER_ERROR  # an error the service names in a way we do not know
    if o.malformed is not None:
        return K.MALFORMED_RESPONSE
    return _STATUS.get(status, K.UNEXPECTED_STATUS)


def _refine(base: FailureKind, o: Outcome) -> FailureKind:
    """The first kind the body suggests that ``_REFINES`` allows in place of ``base``; else ``base``.

    The body is read strongest first: Azure code, Anthropic type, then the message text."""
    allowed = _REFINES.get(base)
    if not allowed:  # ok among them: no body to read (it scanned every message pattern per canary)
        return base
    text = _message(o)
    candidates = (_by_code(o.error_code), _by_type(o.error_type),
                  *(kind for pattern, kind in _MESSAGE if pattern.search(text)))
    return next((kind for kind in candidates if kind in allowed), base)


def _by_code(code: str | None) -> FailureKind | None:
    return _CODE.get(code.strip().casefold()) if code else None


def _by_type(error_type: str | None) -> FailureKind | None:
    return _TYPE.get(error_type) if error_type else None


def _family(status: int) -> FailureKind:
    if 400 <= status <= 499:
        return K.BAD_REQUEST
    if 500 <= status <= 599:
        return K.SERVER_ERROR
    return K.UNEXPECTED_STATUS


def _for_mode(kind: FailureKind, mode: AuthMode) -> FailureKind:
    if kind is K.INVALID_API_KEY and mode is AuthMode.ENTRA:
        return K.TOKEN_REJECTED
    return kind


def _message(o: Outcome) -> str:
    return (o.error_message or "")[:_MAX_MESSAGE]


def retry_after_seconds(outcome: Outcome) -> float | None:
    """The server's requested wait in seconds, clamped to 0..3600, or None.

    Sources in order: ``retry-after-ms``; ``retry-after`` as seconds or as an HTTP date (measured from
    ``outcome.started_at``); "Please wait N seconds" / "retry after N seconds" in the error message.
    """
    for value in (
        _ms(outcome.retry_after_ms_header),
        _seconds_or_date(outcome.retry_after_header, outcome.started_at),
        _from_text(_message(outcome)),
    ):
        if value is not None and not math.isnan(value):
            return min(max(value, 0.0), MAX_RETRY_AFTER_S)
    return None


def _ms(header: str | None) -> float | None:
    if header is None or not (m := _NUMBER.fullmatch(header)):
        return None
    return float(m.group(1)) / 1000.0


def _seconds_or_date(header: str | None, reference: datetime) -> float | None:
    if header is None:
        return None
    if m := _NUMBER.fullmatch(header):
        return float(m.group(1))
    try:
        when = parsedate_to_datetime(header.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return (_aware(when) - _aware(reference)).total_seconds()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _from_text(text: str) -> float | None:
    m = _WAIT_TEXT.search(text)
    return float(m.group(1)) if m else None
