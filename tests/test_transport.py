"""The httpx transport on aiohttp (monitor/canary/transport.py), through the transport the daemon builds:
keep-alive, the errors it maps, the wire-start trace, what it puts on the wire, its pool and its close."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import struct
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import trustme
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from monitor import config as config_mod
from monitor.canary import probe
from monitor.canary.auth import ApiKeyAuth
from monitor.canary.classify import classify
from monitor.canary.fleet import KEEPALIVE_S, build_fleet, build_transport
from monitor.canary.results import FailureKind, Outcome, Transport
from monitor.canary.transport import CanaryTransport, httpx_error
from monitor.config.secrets import Secret
from monitor.emulator.runner import EmulatorServer

from .loopback import free_port, hang, http_response, raw_server, read_request

KEY = "transport-test-key"
OK_BODY = (b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],'
           b'"stop_reason":"max_tokens","usage":{"input_tokens":8,"output_tokens":1}}')
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
MESSAGE_START = b'event: message_start\ndata: {"type":"message_start","message":{"model":"m"}}\n\n'
Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter


def canary(url: str, *, stream: bool = True, timeout: float = 5.0) -> probe.Request:
    return probe.Request.build("res", "healthy", url, prompt="hi", max_tokens=1, stream=stream,
                               timeout=timeout)


def local(port: int, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{port}/anthropic/v1/messages"


async def run(req: probe.Request, key: str = KEY, head_seen: asyncio.Event | None = None) -> Outcome:
    async with build_transport(req.url) as transport:
        seen = HeadSeen(transport, head_seen) if head_seen is not None else transport
        return await probe.run(req, seen, ApiKeyAuth(Secret(key)))


class HeadSeen(httpx.AsyncBaseTransport):
    """Sets ``event`` once the response head has arrived: a server on this loop can act mid-body."""

    def __init__(self, inner: httpx.AsyncBaseTransport, event: asyncio.Event) -> None:
        self.inner, self.event = inner, event

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.event.set()
        return response


async def pipe(reader: Reader, writer: Writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@asynccontextmanager
async def relay(port: int) -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP relay to 127.0.0.1:``port`` (TLS passes through it) that counts the connections it accepts."""
    accepted: list[int] = []

    async def forward(reader: Reader, writer: Writer) -> None:
        accepted.append(len(accepted) + 1)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async with raw_server(forward) as relay_port:
        yield relay_port, accepted


def trusted_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A server certificate for 127.0.0.1 (chain and key in one PEM) from a CA the environment trusts."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # as an operator trusts a private CA
    return str(tmp_path / "server.pem")


# -- keep-alive

async def test_streamed_canaries_over_tls_are_ok_and_share_one_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = trusted_tls(tmp_path, monkeypatch)
    scenario = {"api_key": KEY, "deployments": [{"name": "healthy"}]}
    with EmulatorServer(scenario=scenario, tls=(pem, pem)) as emu:
        async with relay(emu.port) as (port, accepted):
            req = canary(local(port, "https"))
            async with build_transport(req.url) as transport:
                outcomes = [await probe.run(req, transport, ApiKeyAuth(Secret(KEY))) for _ in range(3)]
    assert [classify(o).kind for o in outcomes] == [FailureKind.OK] * 3
    assert all(o.timings.ttft_s is not None and o.usage is not None for o in outcomes)
    assert accepted == [1]


async def test_a_keepalive_connection_the_server_closed_is_not_reused() -> None:
    connections: list[int] = []
    closed = asyncio.Event()

    async def answer_once_then_close(reader: Reader, writer: Writer) -> None:
        connections.append(len(connections) + 1)
        await read_request(reader)
        writer.write(http_response(200, OK_BODY))  # keep-alive: nothing says the connection ends
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()

    async with raw_server(answer_once_then_close) as port:
        req = canary(local(port), stream=False)
        async with build_transport(req.url) as transport:
            first = await probe.run(req, transport, ApiKeyAuth(Secret(KEY)))
            await closed.wait()
            for _ in range(3):  # one pass of the event loop's selector delivers the server's FIN
                await asyncio.sleep(0)
            second = await probe.run(req, transport, ApiKeyAuth(Secret(KEY)))
    assert (classify(first).kind, classify(second).kind) == (FailureKind.OK, FailureKind.OK)
    assert connections == [1, 2]


# -- errors: each becomes the httpx exception the probe classifies by

def abort_with_reset(writer: Writer) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed server or a middlebox does."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def reset_before_answer(reader: Reader, writer: Writer, head_seen: asyncio.Event) -> None:
    await read_request(reader)
    abort_with_reset(writer)


async def reset_mid_stream(reader: Reader, writer: Writer, head_seen: asyncio.Event) -> None:
    await read_request(reader)
    writer.write(SSE_HEAD + b"%x\r\n%s\r\n" % (len(MESSAGE_START), MESSAGE_START))
    await writer.drain()
    await head_seen.wait()  # the client has the head: the reset lands mid-body
    abort_with_reset(writer)


async def hang_up_before_answer(reader: Reader, writer: Writer, head_seen: asyncio.Event) -> None:
    await read_request(reader)
    writer.close()


async def hang_up_mid_body(reader: Reader, writer: Writer, head_seen: asyncio.Event) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\"")
    await writer.drain()
    writer.close()


async def hang_up_mid_stream(reader: Reader, writer: Writer, head_seen: asyncio.Event) -> None:
    await read_request(reader)
    writer.write(SSE_HEAD + b"%x\r\n%s\r\n" % (len(MESSAGE_START), MESSAGE_START))
    await writer.drain()
    writer.close()


async def not_http(reader: Reader, writer: Writer, head_seen: asyncio.Event) -> None:
    await read_request(reader)
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await writer.drain()


@pytest.mark.parametrize(("handler", "stream", "kind"), [
    pytest.param(reset_before_answer, False, Transport.RESET, id="reset-before-the-answer"),
    pytest.param(reset_mid_stream, True, Transport.RESET, id="reset-mid-stream"),
    pytest.param(hang_up_before_answer, False, Transport.PROTOCOL, id="hang-up-before-the-answer"),
    pytest.param(hang_up_mid_body, False, Transport.PROTOCOL, id="hang-up-mid-body"),
    pytest.param(hang_up_mid_stream, True, Transport.PROTOCOL, id="hang-up-mid-stream"),
    pytest.param(not_http, False, Transport.PROTOCOL, id="an-answer-that-is-not-http"),
])
async def test_a_lost_connection_is_a_connection_error_never_a_timeout(
        handler: Callable[[Reader, Writer, asyncio.Event], Awaitable[None]], stream: bool, kind: Transport,
        fake_key: str) -> None:
    head_seen = asyncio.Event()

    async def serve(reader: Reader, writer: Writer) -> None:
        await handler(reader, writer, head_seen)

    async with raw_server(serve) as port:
        outcome = await run(canary(local(port), stream=stream), fake_key, head_seen)
    assert (outcome.transport_error, classify(outcome).kind) == (kind, FailureKind.CONNECTION_ERROR), outcome
    assert fake_key not in repr(outcome)


async def test_a_port_nobody_listens_on_is_a_connect_error(fake_key: str) -> None:
    outcome = await run(canary(local(free_port())), fake_key)
    assert outcome.transport_error is Transport.CONNECT
    assert outcome.transport_detail is not None and "SSLContext" not in outcome.transport_detail


async def test_an_untrusted_certificate_is_a_tls_error_and_the_key_is_not_in_it(fake_key: str) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_ctx)
    async with raw_server(hang, server_ctx) as port:
        outcome = await run(canary(local(port, "https")), fake_key)
    assert outcome.transport_error is Transport.TLS
    assert "CERTIFICATE_VERIFY_FAILED" in (outcome.transport_detail or "")
    assert fake_key not in repr(outcome)


async def test_an_api_key_with_a_line_break_is_refused_before_sending_and_not_quoted(fake_key: str) -> None:
    got: list[bytes] = []

    async def record(reader: Reader, writer: Writer) -> None:
        got.append(await reader.read())

    injected = f"{fake_key}\r\nx-injected: 1"
    async with raw_server(record) as port:
        outcome = await run(canary(local(port)), injected)
    assert classify(outcome).kind is FailureKind.CONNECTION_ERROR
    assert "API key" in (outcome.transport_detail or "")
    assert fake_key not in repr(outcome) and not any(b"x-injected" in g for g in got)


def request_info() -> aiohttp.RequestInfo:
    url = URL("http://127.0.0.1/anthropic/v1/messages")
    return aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)


@pytest.mark.parametrize(("error", "expected"), [
    # the library maps all of these to ConnectTimeout (any ClientConnectionError) or passes them through
    (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
    (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
    (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
    (aiohttp.ClientConnectionResetError("Cannot write to closing transport"), httpx.ReadError),
    (aiohttp.ClientPayloadError("Response payload is not completed"), httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError(request_info(), (), status=400, message="Invalid status line"),
     httpx.RemoteProtocolError),
    (aiohttp.ClientHttpProxyError(request_info(), (), status=407, message="Proxy Authentication Required"),
     httpx.ProxyError),
])
def test_each_aiohttp_error_becomes_the_httpx_exception_the_probe_expects(
        error: aiohttp.ClientError, expected: type[httpx.TransportError]) -> None:
    assert type(httpx_error(error)) is expected


# -- the proxy the environment names

@asynccontextmanager
async def connect_proxy(answer: bytes | None = None) -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP proxy that tunnels CONNECT (or answers it with ``answer``); yields its port and the heads."""
    heads: list[bytes] = []

    async def tunnel(reader: Reader, writer: Writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head.split(b"\r\n", 1)[0])
        if answer is not None:
            writer.write(answer)
            await writer.drain()
            return
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async with raw_server(tunnel) as port:
        yield port, heads


def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_an_https_canary_tunnels_through_the_proxy_the_environment_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = trusted_tls(tmp_path, monkeypatch)
    no_proxy_settings(monkeypatch)
    scenario = {"api_key": KEY, "deployments": [{"name": "healthy"}]}
    with EmulatorServer(scenario=scenario, tls=(pem, pem)) as emu:
        async with connect_proxy() as (proxy_port, heads):
            monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
            outcome = await run(canary(emu.base_url + "v1/messages"))
    assert classify(outcome).kind is FailureKind.OK
    assert heads == [f"CONNECT 127.0.0.1:{emu.port} HTTP/1.1".encode()]


async def test_a_proxy_that_refuses_the_tunnel_is_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_settings(monkeypatch)
    async with connect_proxy(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n") as (proxy_port, heads):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
        outcome = await run(canary(local(free_port(), "https")))
    assert classify(outcome).kind is FailureKind.CONNECTION_ERROR
    assert outcome.transport_detail is not None and "ProxyError" in outcome.transport_detail
    assert len(heads) == 1


async def test_a_proxy_nobody_listens_on_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_settings(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    outcome = await run(canary(local(free_port(), "https")))
    assert outcome.transport_error is Transport.CONNECT


# -- the trace extension: when bytes start moving

async def test_the_trace_hears_the_connect_then_each_request_head() -> None:
    async def keep_answering(reader: Reader, writer: Writer) -> None:
        while True:
            await read_request(reader)
            writer.write(http_response(200, OK_BODY))
            await writer.drain()

    events: list[list[str]] = []

    async def send(transport: CanaryTransport, url: str) -> None:
        heard: list[str] = []

        async def trace(event: str, info: dict[str, Any]) -> None:
            heard.append(event)

        request = httpx.Request("POST", url, content=b"{}", extensions={"trace": trace})
        response = await transport.handle_async_request(request)
        await response.aread()
        await response.aclose()
        events.append(heard)

    async with raw_server(keep_answering) as port, build_transport(local(port)) as transport:
        await send(transport, local(port))
        await send(transport, local(port))
    assert events == [["connection.connect_tcp.started", "http11.send_request_headers.started"],
                      ["http11.send_request_headers.started"]]


# -- the wire: what the probe asked for and nothing else

async def test_the_request_carries_no_accept_encoding_and_no_cookie_from_an_earlier_answer() -> None:
    heads: list[bytes] = []

    async def set_cookie(reader: Reader, writer: Writer) -> None:
        while True:
            heads.append((await read_request(reader)).split(b"\r\n\r\n")[0].lower())
            writer.write(http_response(200, OK_BODY, extra="set-cookie: ARRAffinity=backend-7; Path=/\r\n"))
            await writer.drain()

    async with raw_server(set_cookie) as port, build_transport(local(port)) as transport:
        req = canary(local(port), stream=False)
        outcomes = [await probe.run(req, transport, ApiKeyAuth(Secret(KEY))) for _ in range(2)]
    assert [classify(o).kind for o in outcomes] == [FailureKind.OK] * 2
    names = [{line.split(b":")[0] for line in head.split(b"\r\n")[1:]} for head in heads]
    assert names[0] == names[1] == {b"host", b"content-length", b"content-type", b"accept",
                                    b"anthropic-version", b"user-agent", b"x-api-key"}


# -- the pool and its close

async def test_the_pool_holds_max_concurrency_connections_kept_alive_a_minute() -> None:
    cfg = config_mod.loads("resources:\n  - name: r\n    base_url: http://127.0.0.1:9/anthropic/\n"
                           "    auth: {api_key: k}\n    deployments:\n      - {name: d}\n", env={})
    fleet = build_fleet(cfg, max_concurrency=100)
    transport = fleet.transports["r"]
    assert isinstance(transport, CanaryTransport)
    session = transport.get_client()
    try:
        assert session.connector is not None and session.connector.limit == 100
        assert transport.limits.keepalive_expiry == KEEPALIVE_S
    finally:
        await session.close()
        await fleet.aclose()


async def test_a_closed_fleet_leaves_no_unclosed_session_or_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = trusted_tls(tmp_path, monkeypatch)
    scenario = {"api_key": KEY, "deployments": [{"name": "healthy"}]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with EmulatorServer(scenario=scenario, tls=(pem, pem)) as emu:
            req = canary(emu.base_url + "v1/messages")
            transport = build_transport(req.url)
            outcome = await probe.run(req, transport, ApiKeyAuth(Secret(KEY)))
            await transport.aclose()  # a keep-alive TLS connection is open until here
        del transport
        gc.collect()
    assert classify(outcome).kind is FailureKind.OK
    assert [str(w.message) for w in caught] == []
