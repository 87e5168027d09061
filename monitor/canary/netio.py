"""The network under httpx: httpcore's backend seam implemented on asyncio's own transports.

httpcore reaches sockets through anyio by default. Per read and write that adds a cancel scope with its
own timer, a checkpoint, a pause/resume of reading and, for every pooled connection it considers, a
poll() syscall to see whether the server has closed it. For a canary that is a large share of its CPU
(bench/daemon_bench.py; the same overhead is measured in encode/httpx#3215). This backend keeps what
httpcore needs and nothing else:

- a protocol that buffers what arrives (bounded: reading pauses above HIGH_WATER bytes), so a read
  returns at once when data is there and "is the idle connection readable?" is answered from state;
- writes handed to the transport, waiting only when it asks for back-pressure;
- one ``asyncio.timeout`` per operation, TLS by ``loop.start_tls``;
- errors mapped to the same httpcore exceptions as its anyio backend, so httpx maps them on as before.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any, cast

import httpcore
from httpcore._backends.base import SOCKET_OPTION, AsyncNetworkBackend, AsyncNetworkStream

HIGH_WATER = 256 * 1024  # buffered bytes at which reading pauses (a canary answer is a few KiB)
LOW_WATER = 64 * 1024


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _Protocol(asyncio.Protocol):
    """Buffers what the transport delivers and wakes the one reader or writer waiting on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: Exception | None = None
        self.paused_reading = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    # --- transport callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a read/write transport by construction (uvloop's is not an asyncio.Transport subclass)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # HTTP/1.1 has no use for a half-closed connection: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        self.resume_writing()  # a writer waiting for room finds the error instead

    def pause_writing(self) -> None:
        self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- used by the stream ----------------------------------------------------------------------

    async def wait_readable(self) -> None:
        """Until data, EOF or an error arrives (the caller has checked that none has yet)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, max_bytes: int) -> bytes:
        if len(self.buffer) <= max_bytes:  # the usual case: hand over everything, one copy
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(self.buffer[:max_bytes])
            del self.buffer[:max_bytes]
        if self.paused_reading and len(self.buffer) < LOW_WATER and self.transport is not None:
            self.paused_reading = False
            self.transport.resume_reading()
        return data

    async def drained(self) -> None:
        if self._drain is not None:
            await asyncio.shield(self._drain)
        if self.error is not None:
            raise self.error


class AsyncioStream(AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        p = self._protocol
        if not p.buffer and not p.eof:
            try:
                async with asyncio.timeout(timeout):
                    await p.wait_readable()
            except TimeoutError:
                raise httpcore.ReadTimeout("no data within the read timeout") from None
        if p.buffer:
            return p.take(max_bytes)
        if p.error is not None:
            raise httpcore.ReadError(_why(p.error)) from p.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        p = self._protocol
        if p.error is not None or self._transport.is_closing():
            raise httpcore.WriteError(_why(p.error) if p.error else "the connection is closed")
        try:
            self._transport.write(buffer)
            async with asyncio.timeout(timeout):
                await p.drained()
        except TimeoutError:
            raise httpcore.WriteTimeout("could not write within the write timeout") from None
        except OSError as exc:
            raise httpcore.WriteError(_why(exc)) from exc

    async def aclose(self) -> None:
        self._transport.close()
        await asyncio.sleep(0)  # let the transport run its close before the socket is dropped for good
        self._transport.abort()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        protocol = _Protocol()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, protocol, ssl_context,
                                                 server_hostname=server_hostname)
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout("TLS handshake did not finish within the connect timeout") from None
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(_why(exc)) from exc
        if transport is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("connection closed during the TLS handshake")
        protocol.connection_made(transport)  # start_tls does not call it: the protocol is handed over
        return AsyncioStream(transport, protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # an idle keep-alive connection with anything to read (data, EOF, an error) is unusable
            p = self._protocol
            return bool(p.buffer) or p.eof or p.error is not None or self._transport.is_closing()
        return None


class AsyncioBackend(AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[SOCKET_OPTION] | None = None) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port, local_addr=(local_address, 0) if local_address else None)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} in time") from None
        except OSError as exc:
            raise httpcore.ConnectError(_why(exc)) from exc
        sock: socket.socket = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[SOCKET_OPTION] | None = None,
                                  ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by foundry-monitor")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
