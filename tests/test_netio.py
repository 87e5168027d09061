"""The asyncio sockets under httpx (monitor/canary/netio.py), through the transport the daemon builds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme

from monitor.canary import probe
from monitor.canary.auth import ApiKeyAuth
from monitor.canary.classify import classify
from monitor.canary.fleet import build_transport
from monitor.canary.netio import AsyncioBackend
from monitor.canary.results import FailureKind
from monitor.config.secrets import Secret
from monitor.emulator.runner import EmulatorServer

from .loopback import http_response, raw_server, read_request

KEY = "netio-test-key"
OK_BODY = (b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],'
           b'"stop_reason":"max_tokens","usage":{"input_tokens":8,"output_tokens":1}}')


def canary(url: str, *, stream: bool = True) -> probe.Request:
    return probe.Request.build("res", "healthy", url, prompt="hi", max_tokens=1, stream=stream, timeout=5.0)


def test_the_daemons_transport_runs_on_asyncio_sockets() -> None:
    transport = build_transport("https://r.services.ai.azure.com/anthropic/v1/messages")
    # httpx takes no backend argument: if an httpx upgrade moved the pool, this says so instead of
    # silently falling back to anyio
    assert isinstance(transport._pool._network_backend, AsyncioBackend)


async def test_streamed_canaries_over_tls_are_ok_and_share_one_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    pem = str(tmp_path / "server.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # as an operator trusts a private CA
    scenario = {"api_key": KEY, "deployments": [{"name": "healthy"}]}
    with EmulatorServer(scenario=scenario, tls=(pem, pem)) as emu:
        req = canary(emu.base_url + "v1/messages")
        async with build_transport(req.url) as transport:
            outcomes = [await probe.run(req, transport, ApiKeyAuth(Secret(KEY))) for _ in range(3)]
            connections = len(transport._pool.connections)
    assert [classify(o).kind for o in outcomes] == [FailureKind.OK] * 3
    assert all(o.timings.ttft_s is not None and o.usage is not None for o in outcomes)
    assert connections == 1


async def test_a_keepalive_connection_the_server_closed_is_not_reused() -> None:
    connections: list[int] = []
    closed = asyncio.Event()

    async def answer_once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        await read_request(reader)
        writer.write(http_response(200, OK_BODY))  # keep-alive: nothing says the connection ends
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()

    async with raw_server(answer_once_then_close) as port:
        req = canary(f"http://127.0.0.1:{port}/anthropic/v1/messages", stream=False)
        async with build_transport(req.url) as transport:
            first = await probe.run(req, transport, ApiKeyAuth(Secret(KEY)))
            await closed.wait()
            for _ in range(3):  # one pass of the event loop's selector delivers the server's FIN
                await asyncio.sleep(0)
            second = await probe.run(req, transport, ApiKeyAuth(Secret(KEY)))
    assert (classify(first).kind, classify(second).kind) == (FailureKind.OK, FailureKind.OK)
    assert connections == [1, 2]
