"""What `/status` and `/debug/{deployment}` show: plain JSON of states, results and stored history.

Built from what the daemon keeps (never from the config's secrets: the auth block shows its mode only).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.canary.classify import HINTS
from monitor.canary.results import CanaryResult, FailureKind
from monitor.canary.run import Target
from monitor.config import Resource
from monitor.store.sqlite import Store

from .health import Incident, StateView

RECENT = 50  # results (and, further back, failures) /debug shows
_KINDS = frozenset(k.value for k in FailureKind)


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def deployment(t: Target, view: StateView | None, last: CanaryResult | None, fail: CanaryResult | None,
               counts: Sequence[int], interval_s: float | None, next_run: datetime | None) -> dict[str, Any]:
    return {
        "resource": t.resource, "deployment": t.deployment, "model": t.model,
        "state": view.state.value if view else "unknown",
        "since": iso(view.since) if view else None,
        "interval_s": interval_s,
        "next_run": iso(next_run),
        "last_result": result(last) if last else None,
        "last_failure": result(fail) if fail else None,
        "counts": {"canaries": counts[0], "failures": counts[1]},
        "consecutive_failures": view.consecutive_failures if view else 0,
    }


def incident(i: Incident) -> dict[str, Any]:
    return {"resource": i.key[0], "deployment": i.key[1], "state": i.state.value,
            "started_at": iso(i.started_at), "kind": i.kind.value, "hint": i.hint,
            "request_id": i.request_id, "apim_request_id": i.apim_request_id}


def debug(t: Target, res: Resource, last: CanaryResult | None, store: Store) -> dict[str, Any]:
    return {
        "resource": t.resource, "deployment": t.deployment, "model": t.model,
        "config": {"endpoint": res.messages_url, "auth": res.auth.mode if res.auth else None,
                   "api_key_header": res.api_key_header if res.auth and res.auth.api_key else None,
                   "budget_usd": t.budget_usd, **t.settings.model_dump()},
        "last_result": result(last) if last else None,
        "results": history(store, t.key, failures_only=False),
        "failures": history(store, t.key, failures_only=True),
    }


def history(store: Store, key: tuple[str, str], *, failures_only: bool) -> list[dict[str, Any]]:
    """The last RECENT stored results (or failures, which go back further) of one deployment."""
    rows = store.query(
        "SELECT started_at, kind, status, attempt, total_s, ttft_s, input_tokens, output_tokens, "
        "request_id, apim_request_id, detail, location FROM results "
        "WHERE resource = ? AND deployment = ? AND (? = 0 OR kind != 'ok') "
        "ORDER BY started_at DESC LIMIT ?",
        (key[0], key[1], int(failures_only), RECENT))
    return [_row(row) for row in rows]


def _row(row: Any) -> dict[str, Any]:
    kind = FailureKind(row["kind"]) if row["kind"] in _KINDS else None
    return {"started_at": iso(datetime.fromtimestamp(row["started_at"], UTC)), "kind": row["kind"],
            "ok": row["kind"] == "ok", "status": row["status"], "attempt": row["attempt"],
            "latency_ms": None if row["total_s"] is None else round(row["total_s"] * 1000, 1),
            "ttft_ms": None if row["ttft_s"] is None else round(row["ttft_s"] * 1000, 1),
            "input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
            "request_id": row["request_id"], "apim_request_id": row["apim_request_id"],
            "detail": row["detail"],
            "hint": HINTS[kind] if kind is not None and kind is not FailureKind.OK else None,
            "location": row["location"] or None}


def result(r: CanaryResult) -> dict[str, Any]:
    t = r.timings
    return {"started_at": iso(r.started_at), "kind": r.kind.value, "ok": r.ok, "status": r.status_code,
            "attempt": r.attempt, "latency_ms": None if t.total_s is None else round(t.total_s * 1000, 1),
            "ttft_ms": None if t.ttft_s is None else round(t.ttft_s * 1000, 1),
            "input_tokens": r.usage.input_tokens if r.usage else None,
            "output_tokens": r.usage.output_tokens if r.usage else None,
            "request_id": r.request_id, "apim_request_id": r.apim_request_id, "detail": r.detail,
            "hint": None if r.ok else r.verdict.hint, "location": r.location or None}
