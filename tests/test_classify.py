"""Outcome -> Verdict: one row per fault, with the expected kind and a keyword of its hint."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.canary.classify import HINTS, RETRYABLE_KINDS, SPEND_LIMIT_HINT, classify, retry_after_seconds
from monitor.canary.results import AuthMode, FailureKind, Outcome, Transport

K = FailureKind
KEY = AuthMode.API_KEY
ENTRA = AuthMode.ENTRA
T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)

AZURE_BAD_KEY = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
                 "a valid key for an active subscription and use a correct regional API endpoint for your "
                 "resource.")
APIM_BAD_TOKEN = ("Unauthorized. Access token is missing, invalid, audience is incorrect "
                  "(https://cognitiveservices.azure.com), or have expired.")
RBAC = "The principal `0000` lacks the required data action `x/action` to perform `POST /x` operation."
NO_DEPLOYMENT = ("The API deployment for this resource does not exist. If you created the deployment within "
                 "the last 5 minutes, please wait a moment and try again.")
QUOTA = ("Rate limit of 2000 per 60s exceeded for UserByModelByMinuteUncachedInputTokens. "
         "Please wait 23 seconds before retrying.")


def outcome(**fields: Any) -> Outcome:
    base: dict[str, Any] = {"resource": "res", "deployment": "claude-canary", "started_at": T0,
                            "auth_mode": KEY, "stream": False}
    return Outcome(**(base | fields))


def http(status: int, **fields: Any) -> Outcome:
    return outcome(status_code=status, **fields)


CASES = [
    # -- success and 2xx sanity
    pytest.param(http(200), K.OK, "nothing to do", id="200-with-a-valid-body-is-ok"),
    pytest.param(http(200, stream=True), K.OK, "nothing to do", id="200-stream-with-message-stop-is-ok"),
    pytest.param(http(200, malformed="body is not a JSON object"), K.MALFORMED_RESPONSE, "proxy",
                 id="200-with-bad-json-is-malformed"),
    pytest.param(http(200, stream=True, malformed="stream ended before message_stop"), K.MALFORMED_RESPONSE,
                 "message_stop", id="200-stream-without-message-stop-is-malformed"),
    pytest.param(http(204), K.UNEXPECTED_STATUS, "redirect", id="204-without-a-body-problem-is-unexpected"),
    pytest.param(http(302), K.UNEXPECTED_STATUS, "/anthropic/", id="302-redirect-is-unexpected-status"),
    pytest.param(http(101), K.UNEXPECTED_STATUS, "status", id="1xx-is-unexpected-status"),
    pytest.param(outcome(), K.UNEXPECTED_STATUS, "status", id="no-status-and-no-error-is-unexpected-status"),
    # -- mid-stream errors after HTTP 200
    pytest.param(http(200, stream=True, stream_error_type="overloaded_error", error_message="Overloaded"),
                 K.OVERLOADED, "transient", id="200-stream-with-overloaded-error-event-is-overloaded"),
    pytest.param(http(200, stream=True, stream_error_type="api_error"), K.SERVER_ERROR, "apim-request-id",
                 id="200-stream-with-api-error-event-is-server-error"),
    pytest.param(http(200, stream=True, stream_error_type="rate_limit_error"), K.RATE_LIMITED,
                 "Azure Monitor", id="200-stream-with-rate-limit-error-event-is-rate-limited"),
    pytest.param(http(200, stream=True, stream_error_type="error"), K.SERVER_ERROR, "support",
                 id="200-stream-with-unknown-error-event-is-server-error"),
    pytest.param(http(200, error_type="overloaded_error", stream_error_type="overloaded_error"), K.OVERLOADED,
                 "overloaded", id="200-with-an-overloaded-error-body-is-overloaded"),
    pytest.param(http(200, stream=True, stream_error_type="overloaded_error",
                      malformed="stream ended before message_stop"), K.OVERLOADED, "overloaded",
                 id="stream-error-event-wins-over-body-sanity"),
    # -- credentials and transport
    pytest.param(outcome(auth_mode=ENTRA, credential_error="DefaultAzureCredential failed"),
                 K.CREDENTIAL_UNAVAILABLE, "az login", id="no-entra-token-is-credential-unavailable"),
    pytest.param(outcome(auth_mode=ENTRA, credential_error=""), K.CREDENTIAL_UNAVAILABLE, "AZURE_CLIENT_ID",
                 id="credential-error-with-empty-text-is-still-credential-unavailable"),
    pytest.param(outcome(credential_error="x", transport_error=Transport.TLS, status_code=500),
                 K.CREDENTIAL_UNAVAILABLE, "managed identity", id="credential-error-wins-over-everything"),
    pytest.param(outcome(transport_error=Transport.TIMEOUT), K.TIMEOUT, "timeout",
                 id="client-timeout-is-timeout"),
    pytest.param(http(200, stream=True, transport_error=Transport.TIMEOUT), K.TIMEOUT, "timeout",
                 id="timeout-during-a-200-stream-is-timeout"),
    pytest.param(outcome(transport_error=Transport.CONNECT), K.CONNECTION_ERROR, "resolves",
                 id="dns-or-refused-connection-is-connection-error"),
    pytest.param(outcome(transport_error=Transport.RESET), K.CONNECTION_ERROR, "firewall",
                 id="connection-reset-is-connection-error"),
    pytest.param(outcome(transport_error=Transport.PROTOCOL), K.CONNECTION_ERROR, "protocol",
                 id="http-protocol-error-is-connection-error"),
    pytest.param(outcome(transport_error=Transport.TLS), K.TLS_ERROR, "SSL_CERT_FILE",
                 id="tls-handshake-failure-is-tls-error"),
    pytest.param(http(429, transport_error=Transport.RESET), K.CONNECTION_ERROR, "reachable",
                 id="transport-error-wins-over-status"),
    # -- 401: auth mode decides, PermissionDenied means RBAC
    pytest.param(http(401, error_code="401", error_message=AZURE_BAD_KEY), K.INVALID_API_KEY,
                 "Keys and Endpoint", id="401-azure-shape-with-api-key-is-invalid-api-key"),
    pytest.param(http(401, error_type="authentication_error", error_message="invalid x-api-key"),
                 K.INVALID_API_KEY, "rotated", id="401-anthropic-shape-with-api-key-is-invalid-api-key"),
    pytest.param(http(401), K.INVALID_API_KEY, "Keys and Endpoint",
                 id="401-without-a-body-is-invalid-api-key"),
    pytest.param(http(401, auth_mode=ENTRA, error_code="401", error_message=APIM_BAD_TOKEN),
                 K.TOKEN_REJECTED, "cognitiveservices.azure.com/.default",
                 id="401-apim-shape-with-entra-token-is-token-rejected"),
    pytest.param(http(401, auth_mode=ENTRA), K.TOKEN_REJECTED, "hour",
                 id="401-with-entra-token-is-token-rejected"),
    pytest.param(http(401, auth_mode=ENTRA, error_code="PermissionDenied", error_message=RBAC),
                 K.PERMISSION_DENIED, "propagate", id="401-permission-denied-during-rbac-propagation"),
    # -- 403
    pytest.param(http(403, auth_mode=ENTRA, error_code="PermissionDenied", error_message=RBAC),
                 K.PERMISSION_DENIED, "Cognitive Services User", id="403-azure-shape-is-permission-denied"),
    pytest.param(http(403, error_type="permission_error"), K.PERMISSION_DENIED, "Azure AI User",
                 id="403-anthropic-shape-is-permission-denied"),
    # -- 404
    pytest.param(http(404, error_code="DeploymentNotFound", error_message=NO_DEPLOYMENT),
                 K.DEPLOYMENT_NOT_FOUND, "deployment name",
                 id="404-deployment-not-found-code-is-deployment-not-found"),
    pytest.param(http(404, error_code="DeploymentNotFound", error_type="invalid_request_error"),
                 K.DEPLOYMENT_NOT_FOUND, "model ID", id="404-azure-code-wins-over-anthropic-type"),
    pytest.param(http(404, error_type="not_found_error", error_message="model: claude-sonnet-4-20250514"),
                 K.DEPLOYMENT_NOT_FOUND, "region",
                 id="404-not-found-error-naming-the-model-is-deployment-not-found"),
    pytest.param(http(404, error_message="Model not found"), K.DEPLOYMENT_NOT_FOUND, "model field",
                 id="404-model-not-found-text-is-deployment-not-found"),
    pytest.param(http(404, error_code="404", error_message="Resource not found"), K.ENDPOINT_NOT_FOUND,
                 "/anthropic/", id="404-resource-not-found-is-endpoint-not-found"),
    pytest.param(http(404, error_code="api_not_supported"), K.ENDPOINT_NOT_FOUND, "base URL",
                 id="404-api-not-supported-is-endpoint-not-found"),
    pytest.param(http(404, error_type="not_found_error",
                      error_message="The requested resource could not be found."), K.ENDPOINT_NOT_FOUND,
                 "resource name", id="404-generic-not-found-error-is-endpoint-not-found"),
    pytest.param(http(404), K.ENDPOINT_NOT_FOUND, "/anthropic/",
                 id="404-without-a-body-is-endpoint-not-found"),
    # -- 400 and other 4xx
    pytest.param(http(400, error_code="invalid_model"), K.INVALID_MODEL, "deployment name",
                 id="400-invalid-model-code-is-invalid-model"),
    pytest.param(http(400, error_code="unknown_model", error_message="Unknown model: claude-x"),
                 K.INVALID_MODEL, "model parameter", id="400-unknown-model-code-is-invalid-model"),
    pytest.param(http(400, error_code="no_model_name",
                      error_message="Could not find a reference to a model in the request"),
                 K.INVALID_MODEL, "configured", id="400-no-model-name-code-is-invalid-model"),
    pytest.param(http(400, error_type="invalid_request_error", error_message="Invalid model parameter"),
                 K.INVALID_MODEL, "model field", id="400-invalid-model-parameter-text-is-invalid-model"),
    pytest.param(http(400, error_type="invalid_request_error", error_message="max_tokens: Field required"),
                 K.BAD_REQUEST, "max_tokens", id="400-invalid-request-error-is-bad-request"),
    pytest.param(http(400, error_message="anthropic-version: header is required"), K.BAD_REQUEST, "canary",
                 id="400-without-a-known-code-is-bad-request"),
    pytest.param(http(413, error_type="request_too_large"), K.BAD_REQUEST, "413",
                 id="413-request-too-large-is-bad-request"),
    pytest.param(http(422), K.BAD_REQUEST, "422", id="422-is-bad-request"),
    pytest.param(http(402, error_type="billing_error"), K.BAD_REQUEST, "4xx",
                 id="402-billing-error-is-bad-request"),
    pytest.param(http(408, error_code="Timeout", error_message="The operation was timeout."), K.TIMEOUT,
                 "408", id="408-gateway-timeout-is-timeout"),
    # -- 429: any body
    pytest.param(http(429, error_code="RateLimitReached", error_message=QUOTA), K.RATE_LIMITED, "quota",
                 id="429-azure-rate-limit-reached-is-rate-limited"),
    pytest.param(http(429, error_type="rate_limit_error"), K.RATE_LIMITED, "anthropic-ratelimit",
                 id="429-anthropic-shape-is-rate-limited"),
    pytest.param(http(429, error_code="429"), K.RATE_LIMITED, "backs off",
                 id="429-apim-shape-is-rate-limited"),
    pytest.param(http(429, error_code="DeploymentNotFound", error_type="invalid_request_error"),
                 K.RATE_LIMITED, "quota increase", id="429-with-any-body-is-rate-limited"),
    pytest.param(http(429, error_type="rate_limit_error",
                      error_message="enforced_spend_limit_reached: workspace spend limit reached"),
                 K.RATE_LIMITED, "spend limit", id="429-spend-limit-is-rate-limited-with-its-own-hint"),
    # -- 5xx, 529, 504
    pytest.param(http(500, error_type="api_error", error_message="Internal server error"), K.SERVER_ERROR,
                 "request-id", id="500-api-error-is-server-error"),
    pytest.param(http(500, error_code="invalid_model_endpoint_authentication",
                      error_message="Failed to authenticate to backend endpoint."),
                 K.SERVER_ERROR, "transient", id="500-backend-authentication-failure-is-server-error"),
    pytest.param(http(502), K.SERVER_ERROR, "5xx", id="502-is-server-error"),
    pytest.param(http(503), K.SERVER_ERROR, "support", id="503-is-server-error"),
    pytest.param(http(503, error_type="overloaded_error"), K.OVERLOADED, "529",
                 id="503-with-overloaded-error-body-is-overloaded"),
    pytest.param(http(500, error_message="model not found"), K.SERVER_ERROR, "5xx",
                 id="500-is-not-refined-into-a-client-error-by-its-message"),
    pytest.param(http(529, error_type="overloaded_error", error_message="Overloaded"), K.OVERLOADED,
                 "apim-request-id", id="529-overloaded-error-is-overloaded"),
    pytest.param(http(529), K.OVERLOADED, "clears on its own", id="529-without-a-body-is-overloaded"),
    pytest.param(http(504, error_type="timeout_error", error_message="Request timeout"), K.TIMEOUT, "504",
                 id="504-timeout-error-is-timeout"),
    pytest.param(http(599), K.SERVER_ERROR, "5xx", id="unknown-5xx-is-server-error"),
    pytest.param(http(700), K.UNEXPECTED_STATUS, "status", id="status-outside-1xx-to-5xx-is-unexpected"),
]


@pytest.mark.parametrize(("case", "kind", "keyword"), CASES)
def test_each_fault_is_classified_with_its_hint(case: Outcome, kind: FailureKind, keyword: str) -> None:
    verdict = classify(case)
    assert verdict.kind is kind
    assert keyword.lower() in verdict.hint.lower()


def test_every_failure_kind_but_cancelled_is_covered_by_a_case() -> None:
    covered = {param.values[1] for param in CASES}
    assert covered == set(FailureKind) - {K.CANCELLED}


def test_cancelled_is_left_to_the_daemon_but_has_a_hint() -> None:
    assert "shutting down" in HINTS[K.CANCELLED]


def test_every_failure_kind_has_a_short_hint() -> None:
    assert set(HINTS) == set(FailureKind)
    for kind, hint in HINTS.items():
        assert hint.strip(), kind
        assert len(hint) <= 320, kind
        assert len(re.findall(r"[.!?](?:\s|$)", hint)) <= 3, kind  # one or two sentences (plus "e.g.")


def test_the_hint_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        HINTS[K.OK] = "changed"  # type: ignore[index]


def test_spend_limit_hint_differs_from_the_quota_hint() -> None:
    assert SPEND_LIMIT_HINT != HINTS[K.RATE_LIMITED]
    assert classify(http(429, error_message=QUOTA)).hint == HINTS[K.RATE_LIMITED]


HTTP_DATE_IN_30S = format_datetime(T0 + timedelta(seconds=30), usegmt=True)

RETRY_CASES = [
    pytest.param(http(429, retry_after_ms_header="1500", retry_after_header="9"), 1.5,
                 id="retry-after-ms-wins-over-retry-after"),
    pytest.param(http(429, retry_after_header="7"), 7.0, id="retry-after-in-seconds"),
    pytest.param(http(429, retry_after_header=" 2.5 "), 2.5, id="retry-after-as-a-float"),
    pytest.param(http(429, retry_after_header=HTTP_DATE_IN_30S), 30.0,
                 id="retry-after-http-date-is-measured-from-started-at"),
    pytest.param(http(429, retry_after_header=HTTP_DATE_IN_30S, started_at=T0.replace(tzinfo=None)), 30.0,
                 id="a-naive-started-at-is-taken-as-utc"),
    pytest.param(http(429, retry_after_header=HTTP_DATE_IN_30S,
                      started_at=T0.astimezone(timezone(timedelta(hours=2)))), 30.0,
                 id="started-at-in-another-zone-gives-the-same-wait"),
    pytest.param(http(429, retry_after_header=format_datetime(T0 - timedelta(minutes=5), usegmt=True)), 0.0,
                 id="retry-after-date-in-the-past-is-clamped-to-zero"),
    pytest.param(http(429, error_message=QUOTA), 23.0, id="please-wait-n-seconds-in-the-message"),
    pytest.param(http(429, error_message="Please retry after 12 seconds."), 12.0,
                 id="retry-after-n-seconds-in-the-message"),
    pytest.param(http(429, retry_after_ms_header="soon", retry_after_header="later", error_message=QUOTA),
                 23.0, id="unparsable-headers-fall-back-to-the-message"),
    pytest.param(http(429, retry_after_header="86400"), 3600.0, id="a-day-is-clamped-to-an-hour"),
    pytest.param(http(429, retry_after_ms_header="9" * 400), 3600.0, id="an-absurd-number-is-clamped"),
    pytest.param(http(429), None, id="no-hint-means-no-retry-after"),
    pytest.param(http(529, retry_after_header="3"), 3.0, id="overloaded-carries-retry-after"),
    pytest.param(http(503, retry_after_ms_header="250"), 0.25, id="server-error-carries-retry-after"),
    pytest.param(http(504, retry_after_header="4"), 4.0, id="timeout-carries-retry-after"),
    pytest.param(http(401, retry_after_header="30"), None, id="auth-failures-never-carry-retry-after"),
    pytest.param(http(400, error_message="Please wait 5 seconds"), None,
                 id="bad-request-never-carries-retry-after"),
    pytest.param(http(200, retry_after_header="30"), None, id="success-never-carries-retry-after"),
]


@pytest.mark.parametrize(("case", "expected"), RETRY_CASES)
def test_retry_after_is_read_from_headers_then_message(case: Outcome, expected: float | None) -> None:
    got = classify(case).retry_after
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_retry_after_seconds_reads_headers_whatever_the_kind() -> None:
    assert retry_after_seconds(http(401, retry_after_header="30")) == 30.0


def test_no_hint_ever_repeats_a_secret_from_the_outcome(fake_key: str) -> None:
    leaky = dict(error_message=f"Access denied for key {fake_key}", transport_detail=fake_key,
                 retry_after_header=fake_key, retry_after_ms_header=fake_key, error_code=fake_key,
                 error_type=fake_key, malformed=fake_key)
    cases = [http(status, auth_mode=mode, **leaky) for status in (200, 400, 401, 403, 404, 429, 500, 529)
             for mode in AuthMode]
    cases += [outcome(transport_error=t, **leaky) for t in Transport]
    cases += [outcome(credential_error=f"token request with {fake_key} failed", **leaky),
              http(200, stream_error_type=fake_key, **leaky)]
    for case in cases:
        verdict = classify(case)
        assert fake_key not in verdict.hint
        assert fake_key not in repr(verdict)


def test_hints_are_static_text_without_secret_looking_values() -> None:
    secret_like = re.compile(r"sk-ant-|[0-9a-f]{32}|[A-Za-z0-9+/]{40,}={0,2}|Bearer\s+\S", re.I)
    for hint in [*HINTS.values(), SPEND_LIMIT_HINT]:
        assert not secret_like.search(hint), hint


def test_classify_is_pure_the_same_outcome_gives_the_same_verdict() -> None:
    case = http(429, error_code="RateLimitReached", error_message=QUOTA, retry_after_header=HTTP_DATE_IN_30S)
    assert classify(case) == classify(case)


# -- property: classify never raises and always explains itself

_codes = st.one_of(st.none(), st.text(max_size=30),
                   st.sampled_from(["401", "404", "429", "PermissionDenied", "DeploymentNotFound", "Timeout",
                                    "api_not_supported", "invalid_model", "RateLimitReached"]))
_types = st.one_of(st.none(), st.text(max_size=30),
                   st.sampled_from(["overloaded_error", "api_error", "not_found_error", "error",
                                    "authentication_error", "rate_limit_error", "timeout_error",
                                    "invalid_request_error"]))
_offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
_datetimes = st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), st.builds(timezone, _offsets)))
_retry_after = st.one_of(st.none(), st.text(max_size=40), st.from_regex(r"\A\s*\d{1,30}(\.\d{1,10})?\s*\Z"),
                         _datetimes.map(lambda d: format_datetime(d.replace(tzinfo=None))),
                         st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Mon, 01 Jan 0001 00:00:00 +2400",
                                          "Fri, 31 Dec 9999 23:59:59 -2359", "-5", "nan", "inf", "1e9"]))
_outcomes = st.builds(
    Outcome,
    resource=st.text(max_size=10), deployment=st.text(max_size=10), started_at=_datetimes,
    auth_mode=st.sampled_from(AuthMode), stream=st.booleans(),
    status_code=st.one_of(st.none(), st.integers(min_value=-1000, max_value=100_000),
                          st.sampled_from([200, 400, 401, 403, 404, 408, 429, 500, 503, 504, 529])),
    retry_after_header=_retry_after, retry_after_ms_header=_retry_after,
    error_code=_codes, error_type=_types, stream_error_type=_types,
    error_message=st.one_of(st.none(), st.text(max_size=300),
                            st.from_regex(r"(Please wait|retry after) \d{1,12} seconds", fullmatch=False)),
    transport_error=st.one_of(st.none(), st.sampled_from(Transport)),
    transport_detail=st.one_of(st.none(), st.text(max_size=20)),
    credential_error=st.one_of(st.none(), st.text(max_size=20)),
    malformed=st.one_of(st.none(), st.text(max_size=20)),
)


@settings(max_examples=500, database=None)
@given(_outcomes)
def test_classify_never_raises_and_always_gives_a_hint(case: Outcome) -> None:
    verdict = classify(case)
    assert verdict.kind in set(FailureKind) - {K.CANCELLED}
    assert verdict.hint.strip()
    if verdict.retry_after is not None:
        assert verdict.kind in RETRYABLE_KINDS
        assert 0.0 <= verdict.retry_after <= 3600.0
