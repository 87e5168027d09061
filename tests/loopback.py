"""Tiny raw servers on 127.0.0.1 for transport faults the emulator cannot produce (TLS, closed ports)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def raw_server(handler: Handler, ssl_ctx: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Serve ``handler`` on a free loopback port; yields the port; closes every connection on exit."""
    writers: set[asyncio.StreamWriter] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError, ssl.SSLError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=ssl_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for w in list(writers):
            w.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.Event().wait()  # until the server closes the connection


def http_response(status: int, body: bytes, content_type: str = "application/json",
                  extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


def serve_http(handler: type[BaseHTTPRequestHandler], tls: tuple[str, str] | None = None,
               port: int = 0) -> ThreadingHTTPServer:
    """A threaded http.server on 127.0.0.1 (https with `tls` = (chain, key)), serving in the background.
    Stop it with shutdown() and server_close()."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return httpd
