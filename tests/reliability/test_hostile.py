"""Hostile servers: each answer is bounded in memory (tracemalloc peak of the whole process) and in time,
and ends in the right failure class. The servers are raw asyncio servers on 127.0.0.1 (tests/loopback.py),
so they can do what no well-behaved server does: a 50 MB body, an endless or stalled event stream,
invalid UTF-8, headers dribbled a byte at a time.

Each canary runs end to end (``monitor.canary.run_canary``: probe, classify, result) through the transport
the daemon builds (``fleet.build_transport``), and its result then goes through what the daemon does with
every result: a store row and a JSON log line.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from monitor.canary import probe
from monitor.canary.auth import ApiKeyAuth
from monitor.canary.fleet import build_transport
from monitor.canary.results import CanaryResult, FailureKind
from monitor.canary.run import Target, run_canary
from monitor.config import CheckSettings
from monitor.config.secrets import Secret
from monitor.logs import canary_fields
from monitor.store.sqlite import Store, result_row
from tests.loopback import raw_server, read_request

K = FailureKind
Writer = asyncio.StreamWriter
MB = 1 << 20
HUGE = 50 * MB
MEMORY_BOUND = 4 * MB  # the probe keeps at most 1 MiB of a body (MAX_BODY_BYTES); 50 MB would show

SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"request-id: req_hostile\r\napim-request-id: apim-hostile\r\n")
MESSAGE_START = (b'event: message_start\ndata: {"type":"message_start","message":{"model":"m","id":"x",'
                 b'"usage":{"input_tokens":9,"output_tokens":1}}}\n\n')
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"OK"}}\n\n'
TAIL = (b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":1}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n')


@dataclass
class Server:
    """What a hostile server did: bytes it managed to send (to show the client stopped reading)."""

    sent: int = 0
    done: bool = False
    extra: dict[str, float] = field(default_factory=dict)


Handler = Callable[[Server, asyncio.StreamReader, Writer], Awaitable[None]]


async def send(srv: Server, writer: Writer, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    srv.sent += len(data)


async def send_until_huge(srv: Server, reader: asyncio.StreamReader, writer: Writer, head: bytes,
                          chunk: bytes) -> None:
    """Answer with `head`, then `chunk` again and again until HUGE bytes are out (or the client stops)."""
    await read_request(reader)
    await send(srv, writer, head)
    while srv.sent < HUGE:
        await send(srv, writer, chunk)
    srv.done = True


JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"


async def flood_json(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    head = JSON_HEAD + b"content-length: %d\r\n\r\n{\"pad\": \"" % HUGE
    await send_until_huge(srv, reader, writer, head, b"x" * 65536)


async def flood_chunked(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    head = JSON_HEAD + b"transfer-encoding: chunked\r\n\r\n"
    await send_until_huge(srv, reader, writer, head, b"%x\r\n%s\r\n" % (65536, b"x" * 65536))


async def flood_sse_one_event(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    """50 MB in one event that never ends (no blank line): the parser's buffer must not follow it."""
    head = SSE_HEAD + b"\r\n" + MESSAGE_START + b'event: content_block_delta\ndata: {"t":"'
    await send_until_huge(srv, reader, writer, head, b"y" * 65536)


async def endless_pings(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    """A stream that never ends, as fast as the client reads: the 1 MiB stream bound ends it."""
    await send_until_huge(srv, reader, writer, SSE_HEAD + b"\r\n" + MESSAGE_START + DELTA, PING * 1000)


async def endless_slow_pings(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    """A stream that never ends at a trickle (keep-alive pings): the whole-request timeout ends it."""
    await read_request(reader)
    await send(srv, writer, SSE_HEAD + b"\r\n" + MESSAGE_START)
    while True:
        await send(srv, writer, PING)
        await asyncio.sleep(0.01)


async def stall_after_one_event(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    await read_request(reader)
    await send(srv, writer, SSE_HEAD + b"\r\n" + MESSAGE_START)
    await asyncio.Event().wait()  # until the server closes the connection


async def invalid_utf8_json(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    await read_request(reader)
    body = (b'{"type":"message","model":"m","content":[{"type":"text","text":"\xff\xfe\xc3("}],'
            b'"usage":{"input_tokens":9,"output_tokens":1}}')
    await send(srv, writer, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                            b"request-id: req_hostile\r\n\r\n%s" % (len(body), body))


async def invalid_utf8_error_body(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    await read_request(reader)
    body = b'{"error":{"code":"\xff\xfeRateLimitReached","message":"Please wait \xc3( 7 seconds"}}'
    await send(srv, writer, b"HTTP/1.1 429 Too Many\r\ncontent-type: application/json\r\n"
                            b"content-length: %d\r\n\r\n%s" % (len(body), body))


async def invalid_utf8_sse_event(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    await read_request(reader)
    bad = b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"\xff\xfe"}}\n\n'
    await send(srv, writer, SSE_HEAD + b"\r\n" + MESSAGE_START + bad + TAIL)


async def invalid_utf8_sse_names_and_headers(srv: Server, reader: asyncio.StreamReader,
                                            writer: Writer) -> None:
    """Garbage where only labels are (event names, a request-id header); the JSON itself is valid."""
    await read_request(reader)
    head = SSE_HEAD.replace(b"req_hostile", b"req_\xff\xfe\xc3(")
    stream = (MESSAGE_START + DELTA).replace(b"event: content_block_delta", b"event: \xff\xfe") + TAIL
    await send(srv, writer, head + b"\r\n" + stream)


async def slowloris_headers(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    """The status line and headers one byte every 20 ms: ~4 s in all, each byte well within any read
    timeout, the whole far beyond the canary's."""
    await read_request(reader)
    head = SSE_HEAD + b"x-padding: " + b"p" * 60 + b"\r\n\r\n"
    for i in range(len(head)):
        await send(srv, writer, head[i:i + 1])
        await asyncio.sleep(0.02)
    srv.done = True


async def slowloris_body(srv: Server, reader: asyncio.StreamReader, writer: Writer) -> None:
    """Prompt headers, then a valid stream one byte every 20 ms."""
    await read_request(reader)
    await send(srv, writer, SSE_HEAD + b"\r\n")
    stream = MESSAGE_START + DELTA + TAIL
    for i in range(len(stream)):
        await send(srv, writer, stream[i:i + 1])
        await asyncio.sleep(0.02)
    srv.done = True


TIMEOUT_S = 1.5  # the canary's timeout for the slow cases (ended by it)
FLOOD_TIMEOUT_S = 5.0  # for the floods: generous, so only the 1 MiB bound can end them (as malformed)


@dataclass(frozen=True)
class Case:
    handler: Handler
    stream: bool
    kind: FailureKind
    detail: str  # a part of the result's detail
    max_s: float  # wall time bound
    stops_reading: bool = False  # the server could not send everything: the client hung up
    timeout: float = TIMEOUT_S  # the canary's timeout


def flood(handler: Handler, stream: bool, detail: str) -> Case:
    """A flood: only the 1 MiB bound may end it (malformed), long before the generous timeout."""
    return Case(handler, stream, K.MALFORMED_RESPONSE, detail, FLOOD_TIMEOUT_S, True, FLOOD_TIMEOUT_S)


def slow(handler: Handler, detail: str, stops_reading: bool = False) -> Case:
    """A trickle or a silence: the canary's timeout ends it, on time."""
    return Case(handler, True, K.TIMEOUT, detail, TIMEOUT_S + 0.5, stops_reading)


def quick(handler: Handler, stream: bool, kind: FailureKind, detail: str) -> Case:
    return Case(handler, stream, kind, detail, 1.0)


CASES = {
    "50MB-json-body": flood(flood_json, False, "larger than"),
    "50MB-chunked-body": flood(flood_chunked, False, "larger than"),
    "50MB-json-body-to-a-stream-request": flood(flood_json, True, "larger than"),
    "50MB-sse-event-without-end": flood(flood_sse_one_event, True, "stream longer than"),
    "endless-sse-stream-fast": flood(endless_pings, True, "stream longer than"),
    "endless-sse-stream-slow": slow(endless_slow_pings, "no complete answer within"),
    "stream-stalls-after-one-event": slow(stall_after_one_event, "no complete answer within"),
    "invalid-utf8-in-json-body": quick(invalid_utf8_json, False, K.MALFORMED_RESPONSE, "not a JSON object"),
    "invalid-utf8-in-error-body": quick(invalid_utf8_error_body, False, K.RATE_LIMITED, ""),
    "invalid-utf8-in-sse-event": quick(invalid_utf8_sse_event, True, K.MALFORMED_RESPONSE, "invalid JSON"),
    "invalid-utf8-in-event-names-and-headers": quick(invalid_utf8_sse_names_and_headers, True, K.OK, ""),
    "slowloris-headers": slow(slowloris_headers, "within", stops_reading=True),
    "slowloris-body": slow(slowloris_body, "no complete answer within", stops_reading=True),
}


def target(port: int, stream: bool, timeout: float) -> Target:
    settings = CheckSettings.model_validate({"interval": "10s", "timeout": f"{timeout:g}s", "stream": stream})
    request = probe.Request.build("res", "hostile", f"http://127.0.0.1:{port}/anthropic/v1/messages",
                                  prompt="hi", max_tokens=1, stream=stream, timeout=timeout)
    return Target("res", "hostile", "claude-haiku-4-5", settings, request)


async def canary_under_tracemalloc(case: Case, fake_key: str) -> tuple[CanaryResult, Server, float, int]:
    srv = Server()

    async def handler(reader: asyncio.StreamReader, writer: Writer) -> None:
        await case.handler(srv, reader, writer)

    async with raw_server(handler) as port, build_transport(f"http://127.0.0.1:{port}/") as transport:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            canary = target(port, case.stream, case.timeout)
            result = await run_canary(canary, transport, ApiKeyAuth(Secret(fake_key)))
            elapsed = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    return result, srv, elapsed, peak


@pytest.mark.parametrize("name", list(CASES))
async def test_a_hostile_answer_is_bounded_and_classified(name: str, fake_key: str, tmp_path: Path) -> None:
    case = CASES[name]
    result, srv, elapsed, peak = await canary_under_tracemalloc(case, fake_key)
    print(f"\n{name}: {result.kind.value} in {elapsed:.2f}s, tracemalloc peak {peak / MB:.2f} MiB, "
          f"server sent {srv.sent / MB:.2f} MiB ({result.detail})")
    assert result.kind is case.kind, result
    assert case.detail in (result.detail or "")
    assert elapsed < case.max_s
    assert peak < MEMORY_BOUND
    if case.stops_reading:
        assert not srv.done, "the client read the whole hostile answer"
    # what the daemon does with every result survives it too: a store row and a JSON log line
    store = Store.open(tmp_path / "results.sqlite3")
    store.save_results([result_row(result, None)])
    (kind, detail, request_id), = store.query("SELECT kind, detail, request_id FROM results")
    store.close()
    assert (kind, detail) == (case.kind.value, result.detail)
    assert request_id == result.request_id
    line = json.dumps(canary_fields(result))
    assert fake_key not in line and fake_key not in repr(result)


async def test_garbage_event_names_and_header_bytes_do_not_spoil_an_answer(fake_key: str) -> None:
    result, *_ = await canary_under_tracemalloc(CASES["invalid-utf8-in-event-names-and-headers"], fake_key)
    assert result.kind is K.OK and result.usage is not None and result.usage.output_tokens == 1
    assert result.timings.ttft_s is not None  # the payload's own "type" wins over a garbage event name
    assert result.request_id is not None and result.request_id.startswith("req_")  # undecodable bytes kept
