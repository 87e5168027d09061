"""The httpx transport under every canary: aiohttp's HTTP/1.1 client, through ``httpx-aiohttp``.

httpx stays the client API: the probe builds an ``httpx.Request``, hands it to ``handle_async_request`` and
reads an ``httpx.Response``. Under it, aiohttp's connection pool and C parser cost about 30 % less CPU
per canary than httpcore and h11 in pure Python (bench/daemon_bench.py). ``httpx_aiohttp.AiohttpTransport``
translates between the two; this subclass adds what a canary needs and the library does not do:

- errors become the httpx exceptions the probe classifies by. The library's own map turns every lost
  connection (``aiohttp.ClientConnectionError``) into ``httpx.ConnectTimeout``, so a reset or a server
  that hangs up mid-answer would be stored as a timeout. Here: a reset or hang-up is a ``ReadError`` or
  ``RemoteProtocolError`` (with the ``ConnectionResetError`` kept in the cause chain), a certificate or
  TLS failure a ``ConnectError`` whose cause is the ``ssl.SSLError``, a refused connection a
  ``ConnectError``, aiohttp's timeouts httpx's. Messages are aiohttp's own, which never quote a request
  header value (and so never an API key or token);
- the request's ``trace`` extension hears when bytes start moving, with httpcore's event names:
  ``connection.connect_tcp.started`` when a new connection starts (name resolution included, as
  httpcore's does) and ``http11.send_request_headers.started`` just before the request head is written.
  The probe starts its clock at the first of them, so pool bookkeeping is not the service's latency;
- nothing the probe did not ask for on the wire: no ``Accept-Encoding`` (aiohttp asks for gzip by default,
  and the probe reads the raw body), and no cookies kept between canaries (a load balancer's affinity
  cookie would pin every canary to one backend);
- the pool: ``max_connections`` connections, idle ones kept ``keepalive_expiry`` seconds, TLS verified
  against the environment's CA (SSL_CERT_FILE, SSL_CERT_DIR, as httpx reads them).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]

# the trace extension of the request in flight: aiohttp calls its tracing hooks within the request's task,
# with no per-request argument the library would pass on (it forwards no ``trace_request_ctx``)
_TRACE: ContextVar[Trace | None] = ContextVar("canary_trace", default=None)


async def _connect_started(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    if (trace := _TRACE.get()) is not None:
        await trace("connection.connect_tcp.started", {})


async def _head_started(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    if (trace := _TRACE.get()) is not None:
        await trace("http11.send_request_headers.started", {})


# most specific first: the first class that matches decides
_ERRORS: tuple[tuple[type[aiohttp.ClientError], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientSSLError, httpx.ConnectError),  # certificate or handshake: the cause is an ssl.SSLError
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),  # the proxy refused the CONNECT
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, unreachable, no such host (or proxy)
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # closed before or during the answer
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # the body ended early or was malformed
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # a status line or header that is not HTTP
    (aiohttp.ClientConnectionError, httpx.ReadError),  # reset (ConnectionResetError in the cause chain)
)


def _message(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):  # aiohttp's own names the SSLContext object
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error}"
    return str(exc) or type(exc).__name__


def httpx_error(exc: aiohttp.ClientError) -> httpx.TransportError:
    """The httpx exception the probe classifies ``exc`` by (raise it ``from exc``)."""
    kind = next((hx for aio, hx in _ERRORS if isinstance(exc, aio)), httpx.TransportError)
    return kind(_message(exc))


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        cause = exc.__cause__  # the library mapped it already: map aiohttp's error again, our way
        if isinstance(cause, aiohttp.ClientError):
            raise httpx_error(cause) from cause
        raise
    except aiohttp.ClientError as exc:  # one the library has no entry for
        raise httpx_error(exc) from exc
    except ValueError as exc:
        if "header" in str(exc).lower():  # aiohttp refuses a control character in a header value
            raise httpx.LocalProtocolError(str(exc)) from exc
        raise


class _Body(httpx.AsyncByteStream):
    """The library's response body, its errors mapped as the request's are."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for chunk in self._inner:
                yield chunk

    async def aclose(self) -> None:
        with _mapped():
            await self._inner.aclose()


class CanaryTransport(AiohttpTransport):
    """``AiohttpTransport`` with the canary's error map, wire-start trace and session (see the module)."""

    def __init__(self, *, limits: httpx.Limits, proxy: str | None = None) -> None:
        super().__init__(limits=limits, proxy=httpx.Proxy(proxy) if proxy else None)

    def get_client(self) -> aiohttp.ClientSession:
        """The session, made on first use (aiohttp wants a running event loop)."""
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_start.append(_connect_started)
        trace.on_request_headers_sent.append(_head_started)
        connector = aiohttp.TCPConnector(limit=self.limits.max_connections or 0,
                                         keepalive_timeout=self.limits.keepalive_expiry,
                                         ssl=self.ssl_context)
        return aiohttp.ClientSession(connector=connector, trace_configs=[trace],
                                     skip_auto_headers=("Accept-Encoding",),
                                     cookie_jar=aiohttp.DummyCookieJar())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        token = _TRACE.set(request.extensions.get("trace"))
        try:
            with _mapped():
                response = await super().handle_async_request(request)
        finally:
            _TRACE.reset(token)
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _Body(response.stream)
        return response
