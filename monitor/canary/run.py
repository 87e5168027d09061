"""One canary for one deployment, end to end: probe -> classify -> CanaryResult."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from monitor.config import CheckSettings

from . import probe
from .auth import AuthProvider
from .classify import classify
from .results import CanaryResult, FailureKind, Outcome, Verdict
from .suggest import with_suggestion


@dataclass(frozen=True, slots=True)
class Target:
    """A deployment as the scheduler and `check` see it: identity, settings, prepared request."""

    resource: str
    deployment: str
    model: str
    settings: CheckSettings
    request: probe.Request
    budget_usd: float | None = None  # monthly cap for this deployment's canaries
    siblings: tuple[str, ...] = ()  # the deployments of the same resource (for "did you mean"; itself too)

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource, self.deployment)


async def run_canary(target: Target, transport: httpx.AsyncBaseTransport, auth: AuthProvider,
                     location: str = "") -> CanaryResult:
    outcome = await probe.run(target.request, transport, auth)
    verdict = with_suggestion(classify(outcome), target.deployment, target.siblings)
    if verdict.kind is FailureKind.TOKEN_REJECTED:
        auth.forget()  # the next canary (or the confirm re-check) fetches a fresh token
    return to_result(target, outcome, verdict, location)


def to_result(target: Target, outcome: Outcome, verdict: Verdict, location: str = "") -> CanaryResult:
    return CanaryResult(
        resource=target.resource, deployment=target.deployment, model=target.model, location=location,
        started_at=outcome.started_at, verdict=verdict, status_code=outcome.status_code,
        timings=outcome.timings, usage=outcome.usage, request_id=outcome.request_id,
        apim_request_id=outcome.apim_request_id, response_model=outcome.response_model,
        stop_reason=outcome.stop_reason, detail=_detail(outcome),
    )


def _detail(o: Outcome) -> str | None:
    """A short secret-free line saying what was seen (the server's own message where there is one)."""
    if o.credential_error:
        return o.credential_error
    if o.transport_error:
        return f"{o.transport_error.value}: {o.transport_detail or ''}".strip()
    if o.stream_error_type:
        return f"stream error {o.stream_error_type}: {o.error_message or ''}".strip()
    if o.error_code or o.error_type or o.error_message:
        label = o.error_code or o.error_type or ""
        return f"{label}: {o.error_message or ''}".strip(": ")
    return o.malformed
