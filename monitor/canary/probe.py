"""One canary request -> Outcome: what happened on the wire, measured honestly. Never raises.

Timings come from one monotonic clock started when bytes start moving, as the transport's ``trace``
extension reports it (a new connection's connect, or the request head on a pooled one; when the transport
reports neither, when the request is handed to it): headers (status line and headers parsed), first token
(the chunk carrying the first ``content_block_delta``, not the first byte), total (last byte read).
No retries here.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from monitor import __version__

from .auth import AuthProvider, CredentialUnavailable
from .results import Outcome, Timings, Transport, Usage

ANTHROPIC_VERSION = "2023-06-01"
MAX_BODY_BYTES = 1 << 20  # a canary answer is tiny; anything bigger is a broken or hostile server
MAX_ERROR_BYTES = 64 << 10


@dataclass(frozen=True, slots=True)
class Request:
    """Everything about one deployment's canary that does not change between runs."""

    resource: str
    deployment: str
    url: str
    body: bytes
    stream: bool
    timeout: float
    parsed_url: httpx.URL = field(compare=False, repr=False)  # parsed once: parsing costs ~13 us a canary

    @classmethod
    def build(cls, resource: str, deployment: str, url: str, *, prompt: str, max_tokens: int,
              stream: bool, timeout: float) -> Request:
        payload: dict[str, Any] = {"model": deployment, "max_tokens": max_tokens,
                                   "messages": [{"role": "user", "content": prompt}]}
        if stream:
            payload["stream"] = True
        return cls(resource, deployment, url, json.dumps(payload).encode(), stream, timeout, httpx.URL(url))

    @property
    def timeouts(self) -> dict[str, float]:
        """httpx's per-request timeouts: connect and pool. No read timeout: ``run`` bounds the whole
        exchange by ``timeout`` already, and a read timeout would re-arm a timer on every chunk read."""
        return {"connect": min(10.0, self.timeout), "pool": self.timeout}


BASE_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    "anthropic-version": ANTHROPIC_VERSION,
    "user-agent": f"foundry-monitor/{__version__}",
}


@dataclass
class _Facts:
    """Mutable notes taken while the request runs; frozen into an Outcome at the end."""

    status_code: int | None = None
    request_id: str | None = None
    apim_request_id: str | None = None
    retry_after_header: str | None = None
    retry_after_ms_header: str | None = None
    headers_s: float | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    token_s: float | None = None
    error_code: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    stream_error_type: str | None = None
    transport_error: Transport | None = None
    transport_detail: str | None = None
    credential_error: str | None = None
    malformed: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    response_model: str | None = None
    stop_reason: str | None = None


async def run(req: Request, transport: httpx.AsyncBaseTransport, auth: AuthProvider,
              clock: Callable[[], float] = time.perf_counter) -> Outcome:
    started_at = datetime.now(UTC)
    f = _Facts()
    try:
        try:
            auth_headers = await auth.headers()
        except CredentialUnavailable as exc:
            f.credential_error = str(exc)
            return _outcome(req, auth, started_at, f)
        finally:
            f.token_s = auth.take_acquisition()
        headers = {**BASE_HEADERS, **auth_headers}
        async with asyncio.timeout(req.timeout):
            await _exchange(req, transport, headers, f, clock)
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        _transport(f, Transport.TIMEOUT, f"no complete answer within {req.timeout:g}s")
    except httpx.TimeoutException as exc:
        _transport(f, Transport.TIMEOUT, f"{type(exc).__name__} after {req.timeout:g}s")
    except httpx.TransportError as exc:
        _transport(f, _transport_kind(exc), _short(exc))
    except Exception as exc:  # noqa: BLE001 - the probe never raises; a bug shows as a protocol failure
        _transport(f, Transport.PROTOCOL, f"unexpected {_short(exc)}")
    return _outcome(req, auth, started_at, f)


_WIRE_START = frozenset({"connection.connect_tcp.started", "connection.connect_unix_socket.started",
                         "http11.send_request_headers.started", "http2.send_request_headers.started"})


async def _exchange(req: Request, transport: httpx.AsyncBaseTransport, headers: dict[str, str], f: _Facts,
                    clock: Callable[[], float]) -> None:
    t_call = clock()
    wire: list[float] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        # the clock starts when bytes start moving (connect, or the request head on a pooled connection),
        # so the client library's own bookkeeping is not reported as the service's latency
        if not wire and event in _WIRE_START:
            wire.append(clock())

    request = httpx.Request("POST", req.parsed_url, content=req.body, headers=headers,
                            extensions={"timeout": req.timeouts, "trace": trace})
    response = await transport.handle_async_request(request)
    t0 = wire[0] if wire else t_call
    try:
        f.headers_s = clock() - t0
        f.status_code = response.status_code
        h = response.headers
        f.request_id, f.apim_request_id = h.get("request-id"), h.get("apim-request-id")
        f.retry_after_header, f.retry_after_ms_header = h.get("retry-after"), h.get("retry-after-ms")
        if not 200 <= response.status_code < 300:
            body = await _read(response, MAX_ERROR_BYTES)
            f.total_s = clock() - t0
            _parse_error_body(body, f)
        elif req.stream and "text/event-stream" in h.get("content-type", ""):
            await _read_stream(response, f, clock, t0)
            f.total_s = clock() - t0
        else:
            body = await _read(response, MAX_BODY_BYTES)
            f.total_s = clock() - t0
            if body is None:
                f.malformed = f"body larger than {MAX_BODY_BYTES} bytes"
            else:
                if req.stream:
                    f.malformed = f"expected an event stream, got {h.get('content-type', 'no content-type')}"
                _parse_message(body, f)
    finally:
        await response.aclose()


async def _read(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (reading stops there)."""
    buf = bytearray()
    async for chunk in response.aiter_raw():
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def _parse_error_body(body: bytes | None, f: _Facts) -> None:
    data = _json(body)
    if not isinstance(data, dict):
        return
    err = data.get("error")
    if isinstance(err, dict):
        code, etype, msg = err.get("code"), err.get("type"), err.get("message")
        f.error_code = str(code) if code is not None else None
        f.error_type = etype if isinstance(etype, str) else None
        f.error_message = msg[:500] if isinstance(msg, str) else None
    elif "statusCode" in data:  # APIM shape
        f.error_code = str(data.get("statusCode"))
        msg = data.get("message")
        f.error_message = msg[:500] if isinstance(msg, str) else None


def _parse_message(body: bytes, f: _Facts) -> None:
    data = _json(body)
    if not isinstance(data, dict):
        f.malformed = f.malformed or "body is not a JSON object"
        return
    f.response_model = _str(data.get("model"))
    f.stop_reason = _str(data.get("stop_reason"))
    usage = data.get("usage")
    if data.get("type") == "error" and isinstance(data.get("error"), dict):
        _parse_error_body(body, f)
        f.stream_error_type = f.error_type
    elif not isinstance(usage, dict) or not _is_int(usage.get("input_tokens")) or not _is_int(
            usage.get("output_tokens")):
        f.malformed = f.malformed or "no usage with input_tokens and output_tokens"
    elif not isinstance(data.get("content"), list):
        f.malformed = f.malformed or "no content list"
    else:
        f.usage = usage


async def _read_stream(response: httpx.Response, f: _Facts, clock: Callable[[], float], t0: float) -> None:
    parser = SSEParser()
    seen_start = seen_stop = False
    total = 0
    async for chunk in response.aiter_raw():
        now = clock()
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            f.malformed = f"stream longer than {MAX_BODY_BYTES} bytes"
            return
        for event, data in parser.feed(chunk):
            if event == "ping":
                continue
            payload = _json(data)
            if not isinstance(payload, dict):
                f.malformed = f"event {event or 'message'} carries invalid JSON"
                return
            etype = payload.get("type", event)
            if etype == "message_start":
                seen_start = True
                msg = payload.get("message")
                if isinstance(msg, dict):
                    f.response_model = _str(msg.get("model"))
                    if isinstance(msg.get("usage"), dict):
                        f.usage.update(msg["usage"])
            elif etype == "content_block_delta" and f.ttft_s is None:
                f.ttft_s = now - t0
            elif etype == "message_delta":
                delta, usage = payload.get("delta"), payload.get("usage")
                if isinstance(delta, dict):
                    f.stop_reason = _str(delta.get("stop_reason")) or f.stop_reason
                if isinstance(usage, dict):
                    f.usage.update({k: v for k, v in usage.items() if v is not None})
            elif etype == "message_stop":
                seen_stop = True
            elif etype == "error":
                raw = payload.get("error")
                err: dict[str, Any] = raw if isinstance(raw, dict) else {}
                f.stream_error_type = _str(err.get("type")) or "error"
                msg = err.get("message")
                f.error_message = msg[:500] if isinstance(msg, str) else None
                return
        # after message_stop keep reading to the end of the body (the last chunk is a few bytes away):
        # a response closed early takes its connection with it, and the next canary pays a new handshake
    if not seen_start:
        f.malformed = "stream ended before message_start"
    elif not seen_stop:
        f.malformed = "stream ended before message_stop"
    elif not _is_int(f.usage.get("output_tokens")):
        f.malformed = "stream carried no output_tokens usage"


class SSEParser:
    """Incremental text/event-stream parser: bytes in, (event, data) pairs out. Bounded by the caller."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        self._buf += chunk.replace(b"\r\n", b"\n")
        out: list[tuple[str, bytes]] = []
        while (end := self._buf.find(b"\n\n")) >= 0:
            block, self._buf = self._buf[:end], self._buf[end + 2:]
            event, data = "", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    event = line[6:].strip().decode("utf-8", "replace")
                elif line.startswith(b"data:"):
                    data.append(line[5:].removeprefix(b" "))
            if event or data:
                out.append((event, b"\n".join(data)))
        return out


def _outcome(req: Request, auth: AuthProvider, started_at: datetime, f: _Facts) -> Outcome:
    u = f.usage
    raw = u.get("cache_creation")
    cache: dict[str, Any] = raw if isinstance(raw, dict) else {}
    usage = Usage(
        input_tokens=_int(u.get("input_tokens")), output_tokens=_int(u.get("output_tokens")),
        cache_creation_input_tokens=_int(u.get("cache_creation_input_tokens")),
        cache_read_input_tokens=_int(u.get("cache_read_input_tokens")),
        cache_5m_input_tokens=_opt_int(cache.get("ephemeral_5m_input_tokens")),
        cache_1h_input_tokens=_opt_int(cache.get("ephemeral_1h_input_tokens")),
    ) if _is_int(u.get("output_tokens")) or _is_int(u.get("input_tokens")) else None
    return Outcome(
        resource=req.resource, deployment=req.deployment, started_at=started_at, auth_mode=auth.mode,
        stream=req.stream, timings=Timings(total_s=f.total_s, headers_s=f.headers_s, ttft_s=f.ttft_s,
                                           token_s=f.token_s),
        status_code=f.status_code, request_id=f.request_id, apim_request_id=f.apim_request_id,
        retry_after_header=f.retry_after_header, retry_after_ms_header=f.retry_after_ms_header,
        error_code=f.error_code, error_type=f.error_type, error_message=f.error_message,
        stream_error_type=f.stream_error_type, transport_error=f.transport_error,
        transport_detail=f.transport_detail, credential_error=f.credential_error, malformed=f.malformed,
        usage=usage, response_model=f.response_model, stop_reason=f.stop_reason,
    )


def _transport(f: _Facts, kind: Transport, detail: str) -> None:
    f.transport_error, f.transport_detail = kind, detail


def _transport_kind(exc: httpx.TransportError) -> Transport:
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(chain):
            return Transport.TLS
        if isinstance(chain, ConnectionResetError | BrokenPipeError):
            return Transport.RESET
        chain = chain.__cause__ or chain.__context__
    if isinstance(exc, httpx.ConnectError):
        return Transport.CONNECT
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return Transport.RESET if "reset" in str(exc).lower() else Transport.PROTOCOL
    return Transport.PROTOCOL


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    low = text.lower()
    if "header" in low and any(word in low for word in ("illegal", "invalid", "forbidden")):
        # an HTTP library may quote the offending header value, which may be the API key or token
        text = "a request header value is not valid HTTP (check the API key or token for stray characters)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _json(body: bytes | None) -> Any:
    """The parsed body, or None when it is not JSON (orjson: a fifth of json's CPU on a stream's events;
    nesting deeper than 1,024 and integers beyond 64 bits fail or turn to floats, both malformed here)."""
    if not body:
        return None
    try:
        return orjson.loads(body)
    except ValueError:  # orjson.JSONDecodeError
        return None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _int(v: Any) -> int:
    return v if _is_int(v) else 0


def _opt_int(v: Any) -> int | None:
    return v if _is_int(v) else None
