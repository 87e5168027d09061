"""The probe against transport faults: nothing listening, untrusted TLS, a hang, a drop, a flood."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest
import trustme

from monitor.canary import probe
from monitor.canary.auth import ApiKeyAuth
from monitor.canary.classify import classify
from monitor.canary.fleet import build_transport, environment_proxy
from monitor.canary.results import FailureKind
from monitor.config.secrets import Secret

from .loopback import free_port, hang, http_response, raw_server, read_request


def request(port: int, timeout: float = 2.0, scheme: str = "http", stream: bool = False) -> probe.Request:
    return probe.Request.build("res", "canary-haiku", f"{scheme}://127.0.0.1:{port}/anthropic/v1/messages",
                               prompt="hi", max_tokens=1, stream=stream, timeout=timeout)


async def run(req: probe.Request, fake_key: str) -> probe.Outcome:
    """Through the transport the daemon builds (its asyncio sockets, the environment's CA and proxy)."""
    async with build_transport(req.url) as transport:
        return await probe.run(req, transport, ApiKeyAuth(Secret(fake_key)))


async def test_a_port_nobody_listens_on_is_a_connection_error(fake_key: str) -> None:
    outcome = await run(request(free_port()), fake_key)
    assert classify(outcome).kind is FailureKind.CONNECTION_ERROR
    assert fake_key not in repr(outcome)


async def test_a_tls_server_with_an_untrusted_certificate_is_a_tls_error(fake_key: str) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with raw_server(answer, server_ctx) as port:
        outcome = await run(request(port, scheme="https"), fake_key)
    verdict = classify(outcome)
    assert verdict.kind is FailureKind.TLS_ERROR
    assert "SSL_CERT_FILE" in verdict.hint


async def test_a_hang_is_a_timeout_within_the_configured_timeout(fake_key: str) -> None:
    async with raw_server(hang) as port:
        start = time.perf_counter()
        outcome = await run(request(port, timeout=0.5), fake_key)
        elapsed = time.perf_counter() - start
    assert classify(outcome).kind is FailureKind.TIMEOUT
    assert 0.5 <= elapsed < 0.5 + 0.5


async def test_a_connection_closed_before_any_answer_is_a_connection_error(fake_key: str) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async with raw_server(drop) as port:
        outcome = await run(request(port), fake_key)
    assert classify(outcome).kind is FailureKind.CONNECTION_ERROR


async def test_a_body_larger_than_the_bound_is_malformed_and_reading_stops(fake_key: str) -> None:
    size = 50 * 1024 * 1024

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
        writer.write(head.encode())
        chunk = b" " * 65536
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    async with raw_server(flood) as port:
        outcome = await run(request(port, timeout=10), fake_key)
    assert classify(outcome).kind is FailureKind.MALFORMED_RESPONSE
    assert outcome.malformed is not None and "larger than" in outcome.malformed


@pytest.mark.parametrize(("body", "why"), [
    (b"{not json", "not a JSON object"),
    (b'{"type":"message","content":[],"model":"m"}', "no usage"),
])
async def test_a_200_with_a_broken_body_is_malformed(fake_key: str, body: bytes, why: str) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(http_response(200, body))
        await writer.drain()

    async with raw_server(answer) as port:
        outcome = await run(request(port), fake_key)
    assert classify(outcome).kind is FailureKind.MALFORMED_RESPONSE
    assert outcome.malformed is not None and why in outcome.malformed


def test_the_sse_parser_handles_events_split_across_chunks_and_crlf() -> None:
    parser = probe.SSEParser()
    stream = b"event: ping\r\ndata: {}\r\n\r\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    events = []
    for i in range(0, len(stream), 5):
        events += parser.feed(stream[i:i + 5])
    assert events == [("ping", b"{}"), ("message_stop", b'{"type":"message_stop"}')]


def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_the_canary_goes_through_the_proxy_the_environment_names(
        fake_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append((await read_request(reader)).split(b"\r\n", 1)[0].decode())
        writer.write(http_response(529, b'{"type": "error", "error": {"type": "overloaded_error", '
                                        b'"message": "Overloaded"}}'))
        await writer.drain()

    no_proxy_settings(monkeypatch)
    async with raw_server(proxy) as proxy_port:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        req = request(free_port())  # nothing listens there: only the proxy can answer
        async with build_transport(req.url) as transport:
            outcome = await probe.run(req, transport, ApiKeyAuth(Secret(fake_key)))
    assert lines == [f"POST {req.url} HTTP/1.1"]
    assert classify(outcome).kind is FailureKind.OVERLOADED


@pytest.mark.parametrize(("env", "url", "expected"), [
    ({}, "https://r.services.ai.azure.com/anthropic/v1/messages", None),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "https://r.services.ai.azure.com/anthropic/v1/messages",
     "http://proxy:3128"),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "http://127.0.0.1:8790/anthropic/v1/messages", None),
    ({"ALL_PROXY": "http://proxy:3128"}, "http://127.0.0.1:8790/anthropic/v1/messages", "http://proxy:3128"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".azure.com"},
     "https://r.services.ai.azure.com/anthropic/v1/messages", None),
])
def test_the_proxy_is_taken_from_the_environment_as_curl_reads_it(
        env: dict[str, str], url: str, expected: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_settings(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert environment_proxy(url) == expected


async def test_the_ids_and_retry_headers_are_read_whatever_their_case_repeats_or_bytes(fake_key: str) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                     b"Request-Id: req-1\r\nrequest-id: req-2\r\nAPIM-Request-Id: apim-\xe9\r\n"
                     b"Retry-After: 7\r\nretry-after-ms: 6500\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()

    async with raw_server(answer) as port:
        outcome = await run(request(port), fake_key)
    assert outcome.status_code == 429
    assert outcome.request_id == "req-1, req-2"  # as httpx's Headers.get joins a repeated name
    assert outcome.apim_request_id == "apim-\xe9"  # not UTF-8: read as Latin-1, never an error
    assert (outcome.retry_after_header, outcome.retry_after_ms_header) == ("7", "6500")
    assert classify(outcome).kind is FailureKind.RATE_LIMITED
