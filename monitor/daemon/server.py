"""The daemon's HTTP endpoints: / (status page) /healthz /readyz /status /metrics /debug/{deployment}.

Everything served comes from a StatusSource (the daemon); nothing here reads config or secrets.
An optional bearer token guards /, /status and /debug (/healthz, /readyz and /metrics stay open for
probes and scrapers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Iterator
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from monitor.config.secrets import Secret

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatusSource(Protocol):
    def alive(self) -> bool: ...

    def ready(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    def debug(self, deployment: str) -> dict[str, Any] | None: ...

    def metrics(self) -> bytes: ...

    def page(self) -> str: ...


def build_app(source: StatusSource, *, debug_endpoints: bool = True,
              token: Secret | None = None) -> Starlette:
    def authorised(request: Request) -> bool:
        if not token:
            return True
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        # the scheme is case-insensitive (RFC 9110, 11.1); the token is compared in constant time
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(),
                                                                   token.reveal().encode())

    def denied() -> Response:
        return JSONResponse({"error": "unauthorised: send Authorization: Bearer <server.bearer_token>"},
                            status_code=401, headers={"www-authenticate": "Bearer"})

    async def healthz(request: Request) -> Response:
        ok = source.alive()
        return JSONResponse({"status": "ok" if ok else "stopped"}, status_code=200 if ok else 503)

    async def readyz(request: Request) -> Response:
        ok = source.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def status(request: Request) -> Response:
        return JSONResponse(source.status()) if authorised(request) else denied()

    async def page(request: Request) -> Response:
        if not authorised(request):
            return denied()
        return HTMLResponse(await asyncio.to_thread(source.page))

    async def metrics(request: Request) -> Response:
        return Response(source.metrics(), media_type=PROMETHEUS_CONTENT_TYPE)

    async def debug(request: Request) -> Response:
        if not authorised(request):
            return denied()
        found = source.debug(request.path_params["deployment"])
        if found is None:
            return JSONResponse({"error": "no such deployment"}, status_code=404)
        return JSONResponse(found)

    routes = [Route("/", page), Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/status", status), Route("/metrics", metrics)]
    if debug_endpoints:
        routes.append(Route("/debug/{deployment:path}", debug))

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found\n", status_code=404)

    return Starlette(routes=routes, exception_handlers={404: not_found})


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: the daemon owns SIGTERM, SIGINT and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(app: Starlette, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off", server_header=False)
    return _Server(config)


def bound_port(server: uvicorn.Server) -> int | None:
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return None
