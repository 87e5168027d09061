"""Small builders for values tests need (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.canary.results import CanaryResult, FailureKind, Timings, Usage, Verdict

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def result(kind: FailureKind = FailureKind.OK, *, deployment: str = "dep", resource: str = "res",
           model: str = "claude-haiku-4-5", at: datetime = T0, total_s: float | None = 0.2,
           ttft_s: float | None = 0.1, usage: Usage | None = None, request_id: str | None = "req_1",
           apim_request_id: str | None = "apim-1", status: int | None = None, attempt: int = 0,
           detail: str | None = None, retry_after: float | None = None) -> CanaryResult:
    ok = kind is FailureKind.OK
    return CanaryResult(
        resource=resource, deployment=deployment, model=model, location="test", started_at=at,
        verdict=Verdict(kind, "" if ok else f"hint for {kind.value}", retry_after),
        status_code=status if status is not None else (200 if ok else 500),
        timings=Timings(total_s=total_s, headers_s=total_s, ttft_s=ttft_s),
        usage=usage if usage is not None else (Usage(20, 1) if ok else None),
        request_id=request_id, apim_request_id=apim_request_id, response_model=model if ok else None,
        stop_reason="max_tokens" if ok else None, detail=detail, attempt=attempt,
    )
