"""Responses to a request that got past the checks: an injected error, a JSON message or an SSE stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from . import wire
from .scenario import Deployment, Fault, FaultKind
from .state import LogEntry

K = FaultKind
HUGE_BYTES = 2 << 20
_SSE_HEADERS = {"cache-control": "no-cache"}
_SSE_TYPE = "text/event-stream; charset=utf-8"

_ERRORS: dict[FaultKind, Callable[[Fault, LogEntry, str], wire.ErrorReply]] = {
    K.BAD_KEY: lambda f, e, p: wire.bad_key(),
    K.EXPIRED_TOKEN: lambda f, e, p: wire.bad_token(),
    K.PERMISSION_DENIED: lambda f, e, p: wire.permission_denied(p),
    K.DEPLOYMENT_NOT_FOUND: lambda f, e, p: wire.deployment_not_found(e.deployment or ""),
    K.INVALID_MODEL: lambda f, e, p: wire.invalid_model(e.deployment),
    K.INVALID_REQUEST: lambda f, e, p: wire.anthropic(
        400, "invalid_request_error", "max_tokens: Input should be greater than or equal to 1", e.request_id),
    K.GATEWAY_TIMEOUT: lambda f, e, p: wire.gateway_timeout(),
    K.RATE_LIMIT: lambda f, e, p: wire.rate_limited(1000, f.retry_after),
    K.API_ERROR: lambda f, e, p: wire.anthropic(500, "api_error", "Internal server error", e.request_id),
    K.BACKEND_AUTH: lambda f, e, p: wire.backend_auth(e.request_id),
    K.UNAVAILABLE: lambda f, e, p: wire.unavailable(),
    K.OVERLOADED: lambda f, e, p: wire.anthropic(529, "overloaded_error", "Overloaded", e.request_id),
    K.REDIRECT: lambda f, e, p: wire.redirect(),
}


def ids(entry: LogEntry) -> dict[str, str]:
    return {"request-id": entry.request_id, "apim-request-id": entry.apim_request_id}


def error(reply: wire.ErrorReply, entry: LogEntry) -> Response:
    return JSONResponse(reply.body, status_code=reply.status, headers={**ids(entry), **dict(reply.headers)})


def invalid_request(message: str, entry: LogEntry) -> Response:
    return error(wire.anthropic(400, "invalid_request_error", message, entry.request_id), entry)


def count(body: dict[str, Any], fault: Fault | None, entry: LogEntry, path: str) -> Response:
    """count_tokens: error faults apply; stream and body faults do not (there is no stream)."""
    if fault is not None and fault.kind in _ERRORS:
        return error(_ERRORS[fault.kind](fault, entry, path), entry)
    entry.input_tokens = wire.input_tokens(body)
    return JSONResponse({"input_tokens": entry.input_tokens}, headers=ids(entry))


@dataclass(frozen=True)
class Plan:
    spec: Deployment
    body: dict[str, Any]
    fault: Fault | None
    entry: LogEntry
    model_field: str
    stopping: asyncio.Event

    @property
    def kind(self) -> FaultKind | None:
        return self.fault.kind if self.fault else None


async def reply(plan: Plan, path: str) -> Response:
    """The answer to a Messages request after the latency has passed."""
    fault, entry = plan.fault, plan.entry
    if fault is not None and fault.kind in _ERRORS:
        return error(_ERRORS[fault.kind](fault, entry, path), entry)
    if entry.stream:
        return StreamingResponse(_events(plan), media_type=_SSE_TYPE, headers={**_SSE_HEADERS, **ids(entry)})
    return await _json(plan)


def _content(plan: Plan) -> tuple[list[str], str, int]:
    tokens = wire.tokens_of(plan.spec.reply)
    max_tokens = int(plan.body["max_tokens"])
    stop = "end_turn"
    if len(tokens) > max_tokens:
        tokens, stop = tokens[:max_tokens], "max_tokens"
    plan.entry.input_tokens = wire.input_tokens(plan.body)
    plan.entry.output_tokens = len(tokens)
    return tokens, stop, plan.entry.input_tokens


def _model(plan: Plan) -> str:
    return plan.spec.model if plan.model_field == "model_id" else plan.spec.name


async def _json(plan: Plan) -> Response:
    tokens, stop, n_in = _content(plan)
    kind = plan.kind
    if kind in (K.STALLED_STREAM, K.ENDLESS_STREAM):
        return StreamingResponse(_stall(plan), media_type="application/json", headers=ids(plan.entry))
    pace = 1.0 / plan.spec.tokens_per_second if plan.spec.tokens_per_second else 0.0
    await asyncio.sleep(plan.spec.ttft + pace * max(0, len(tokens) - 1))
    if kind is K.STREAM_ERROR:  # without a stream, the same error arrives as a status
        return error(wire.anthropic(529, plan.fault.error_type if plan.fault else "overloaded_error",
                                    "Overloaded", plan.entry.request_id), plan.entry)
    text = "".join(tokens)
    if kind is K.HUGE_BODY:
        text = "x" * HUGE_BYTES
    body = json.dumps(wire.message(wire.message_id(), _model(plan), text, stop, n_in, len(tokens))).encode()
    if kind in (K.MALFORMED_JSON, K.TRUNCATED_STREAM):
        body = body[: len(body) // 2]
    return Response(body, media_type="application/json", headers=ids(plan.entry))


async def _events(plan: Plan) -> AsyncIterator[bytes]:
    tokens, stop, n_in = _content(plan)
    kind, entry = plan.kind, plan.entry
    if kind is K.MALFORMED_JSON:
        yield b'event: message_start\ndata: {"type":"message_start","message":{"id":\n\n'
        return
    yield wire.message_start(wire.message_id(), _model(plan), n_in)
    yield wire.BLOCK_START
    yield wire.PING
    if kind is K.STALLED_STREAM:
        await plan.stopping.wait()
        return
    if kind is K.ENDLESS_STREAM:
        while not plan.stopping.is_set():
            yield wire.PING
            await asyncio.sleep(0.01)
        return
    await asyncio.sleep(plan.spec.ttft)
    if kind is K.STREAM_ERROR:
        yield wire.error_event(plan.fault.error_type if plan.fault else "overloaded_error", "Overloaded")
        return
    if kind is K.HUGE_BODY:
        tokens = ["x" * 65536] * (HUGE_BYTES // 65536)
    pace = 1.0 / plan.spec.tokens_per_second if plan.spec.tokens_per_second else 0.0
    for i, token in enumerate(tokens):
        if i == 0:
            entry.t_first_token = time.time()
        elif pace:
            await asyncio.sleep(pace)
        yield wire.delta(token)
        if kind is K.TRUNCATED_STREAM:
            return
    yield wire.BLOCK_STOP
    yield wire.message_delta(stop, n_in, len(tokens))
    yield wire.MESSAGE_STOP


async def _stall(plan: Plan) -> AsyncIterator[bytes]:
    yield b'{"model": "'
    await plan.stopping.wait()
