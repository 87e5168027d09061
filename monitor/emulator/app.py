"""The emulator's HTTP surface: Foundry's ``/anthropic`` API plus ``/_emulator/`` admin and identity.

Order of checks per request, as on Foundry: path -> credentials -> unsupported API -> body -> deployment
-> token bucket -> injected fault -> latency -> answer. Responses are built in ``answers``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import struct
import time
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import answers, metrics_api, wire
from .arm_api import ArmApi
from .scenario import AzureResource, Deployment, Fault, FaultKind, Scenario
from .state import Emulator, LogEntry

_UNSUPPORTED = ("/anthropic/v1/models", "/anthropic/v1/messages/batches", "/anthropic/v1/organizations")


class Abort(Response):
    """Not a response: reset the TCP connection (SO_LINGER 0) without sending a byte."""

    def __init__(self) -> None:
        super().__init__(status_code=599)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get("emulator.transport")
        if transport is None:
            raise ConnectionAbortedError("emulated connection reset")
        if transport.is_closing():  # the client is gone already
            return
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (AttributeError, OSError):  # no socket to set: a plain close is the next best thing
            pass
        transport.abort()
        for _ in range(3):  # let the server notice the disconnect before it looks at the response
            await asyncio.sleep(0)


def build_app(emu: Emulator, stopping: asyncio.Event) -> ASGIApp:
    api = _Api(emu, stopping)
    routes = [
        Route("/anthropic/v1/messages", api.messages, methods=["POST"]),
        Route("/anthropic/v1/messages/count_tokens", api.count_tokens, methods=["POST"]),
        Route("/_emulator/scenario", api.get_scenario, methods=["GET"]),
        Route("/_emulator/scenario", api.put_scenario, methods=["PUT"]),
        Route("/_emulator/deployments/{name}", api.put_deployment, methods=["PUT"]),
        Route("/_emulator/deployments/{name}", api.delete_deployment, methods=["DELETE"]),
        Route("/_emulator/deployments/{name}/faults", api.put_faults, methods=["PUT"]),
        Route("/_emulator/log", api.get_log, methods=["GET"]),
        Route("/_emulator/log", api.delete_log, methods=["DELETE"]),
        Route("/_emulator/identity/token", api.identity_token, methods=["GET"]),
        Route("/_emulator/identity/expire", api.expire_tokens, methods=["POST"]),
        Route("/_emulator/background", api.post_background, methods=["POST"]),
        Route("/_emulator/azure", api.put_azure, methods=["PUT"]),
        Route(metrics_api.PATH, api.azure_metrics, methods=["GET"]),
        *ArmApi(emu.arm, emu.token_audience, on_change=emu.sync_arm).routes(),
        Route("/{path:path}", api.anything_else,
              methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]
    return _Recorder(Starlette(routes=routes), emu)


class _Recorder:
    """Outermost ASGI layer: one log entry per /anthropic request, with first/last byte times."""

    def __init__(self, app: ASGIApp, emu: Emulator) -> None:
        self.app = app
        self.emu = emu

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/anthropic"):
            await self.app(scope, receive, send)
            return
        entry = self.emu.begin(scope["method"], scope["path"])
        scope["emulator.entry"] = entry
        scope["emulator.transport"] = getattr(getattr(send, "__self__", None), "transport", None)

        finished = False

        def finish() -> None:
            nonlocal finished
            if not finished:
                finished = True
                if entry.outcome == "complete" and entry.t_last_byte is None:
                    entry.outcome = "disconnected"
                self.emu.finish(entry)

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                entry.t_first_byte = time.time()
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # logged just before the last write, so a client that has its answer finds it in the log
                entry.t_last_byte = time.time()
                if entry.t_first_token is None and not entry.stream and entry.status == 200:
                    entry.t_first_token = entry.t_last_byte
                finish()
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            finish()


class _Api:
    def __init__(self, emu: Emulator, stopping: asyncio.Event) -> None:
        self.emu = emu
        self.stopping = stopping

    # -- Foundry ------------------------------------------------------------------------------------
    async def messages(self, request: Request) -> Response:
        return await self._serve(request, count_only=False)

    async def count_tokens(self, request: Request) -> Response:
        return await self._serve(request, count_only=True)

    async def anything_else(self, request: Request) -> Response:
        entry = _entry(request)
        if entry is not None and request.url.path.startswith(_UNSUPPORTED):
            denied = self._authenticate(request, entry)
            if denied is not None:
                return answers.error(denied, entry)
            return answers.error(wire.api_not_supported(request.url.path), entry)
        if entry is not None:
            return answers.error(wire.resource_not_found(), entry)
        fresh = {"request-id": wire.request_id(), "apim-request-id": wire.apim_request_id()}
        return JSONResponse(wire.resource_not_found().body, status_code=404, headers=fresh)

    async def _serve(self, request: Request, *, count_only: bool) -> Response:
        entry = _entry(request)
        assert entry is not None  # noqa: S101 - _Recorder wraps every /anthropic path
        try:
            body = await _json_object(request)
        except ClientDisconnect:  # gone before its body arrived (a cancelled canary): no one to answer
            return Response(status_code=499)
        if body is not None and isinstance(body.get("model"), str):
            entry.deployment = body["model"]  # for the log only: the gateway checks credentials first
        denied = self._authenticate(request, entry)
        if denied is not None:
            return answers.error(denied, entry)
        if body is None:
            return answers.invalid_request("The request body is not a JSON object.", entry)
        model = body.get("model")
        if model is None:
            return answers.error(wire.no_model(), entry)
        if not isinstance(model, str) or not model:
            return answers.error(wire.invalid_model(model), entry)
        spec = self.emu.deployment(model)
        if spec is None:
            return answers.error(wire.deployment_not_found(model), entry)
        entry.stream = body.get("stream") is True and not count_only
        problem = _body_problem(body, count_only)
        if problem:
            return answers.invalid_request(problem, entry)
        wait = self.emu.admit(model)
        if wait is not None:
            entry.fault = "rate_limit_bucket"
            assert spec.rate_limit is not None  # noqa: S101 - admit() only refuses with a bucket
            return answers.error(wire.rate_limited(spec.rate_limit.requests_per_minute, wait), entry)
        fault = self.emu.pick_fault(model)
        entry.fault = fault.kind.value if fault else None
        if fault is not None and fault.kind in (FaultKind.HANG, FaultKind.RESET):
            if fault.kind is FaultKind.HANG:
                entry.outcome = "hang"
                await _until_gone(request, self.stopping)
            else:
                entry.outcome = "reset"
            return Abort()
        await asyncio.sleep(spec.latency.base + self.emu.jitter(spec.latency.jitter))
        if count_only:
            return answers.count(body, fault, entry, request.url.path)
        plan = answers.Plan(spec, body, fault, entry, self.emu.scenario.model_field, self.stopping)
        return await answers.reply(plan, request.url.path)

    def _authenticate(self, request: Request, entry: LogEntry) -> wire.ErrorReply | None:
        authz = request.headers.get("authorization")
        if authz is not None:
            scheme, _, token = authz.partition(" ")
            if scheme.lower() != "bearer" or not self.emu.token_valid(token.strip()):
                return wire.bad_token()
            entry.auth = "bearer"
            return None
        header, key = "x-api-key", request.headers.get("x-api-key")
        if key is None and self.emu.scenario.accept_api_key_header:
            header, key = "api-key", request.headers.get("api-key")
        if key is None or not hmac.compare_digest(key.encode(), self.emu.scenario.api_key.encode()):
            return wire.bad_key()
        entry.auth = header
        return None

    # -- admin ---------------------------------------------------------------------------------------
    async def get_scenario(self, request: Request) -> Response:
        return JSONResponse(self.emu.current().model_dump(mode="json", exclude={"api_key"}))

    async def put_scenario(self, request: Request) -> Response:
        data = await _json_object(request)
        if data is None:
            return _bad("expected a JSON object")
        data.setdefault("api_key", self.emu.scenario.api_key)
        try:
            self.emu.load(Scenario.model_validate(data))
        except ValidationError as exc:
            return _bad(str(exc))
        return await self.get_scenario(request)

    async def put_deployment(self, request: Request) -> Response:
        data = await _json_object(request)
        if data is None:
            return _bad("expected a JSON object")
        data["name"] = request.path_params["name"]
        try:
            spec = Deployment.model_validate(data)
        except ValidationError as exc:
            return _bad(str(exc))
        self.emu.put_deployment(spec)
        return JSONResponse(spec.model_dump(mode="json"))

    async def delete_deployment(self, request: Request) -> Response:
        gone = self.emu.remove_deployment(request.path_params["name"])
        return Response(status_code=204 if gone else 404)

    async def put_faults(self, request: Request) -> Response:
        try:
            data = json.loads(await request.body())
            faults = [Fault.model_validate(f) for f in data]
        except (ValueError, TypeError, ValidationError) as exc:
            return _bad(f"expected a JSON list of faults: {exc}")
        if not self.emu.set_faults(request.path_params["name"], faults):
            return _bad("no such deployment", 404)
        return JSONResponse([f.model_dump(mode="json") for f in faults])

    async def get_log(self, request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return _bad("since must be a whole number")
        return JSONResponse(self.emu.log(since))

    async def delete_log(self, request: Request) -> Response:
        self.emu.clear_log()
        return Response(status_code=204)

    async def identity_token(self, request: Request) -> Response:
        """App Service-style managed identity endpoint (what azure-identity reads from IDENTITY_ENDPOINT)."""
        given = request.headers.get("x-identity-header", "")
        if not hmac.compare_digest(given.encode(), self.emu.scenario.identity.header.encode()):
            return JSONResponse({"error": "unauthorized", "error_description": "X-IDENTITY-HEADER mismatch"},
                                status_code=401)
        resource = request.query_params.get("resource")
        if not resource:
            return JSONResponse({"error": "invalid_request", "error_description": "resource is required"},
                                status_code=400)
        token, expires_on = self.emu.issue_token(resource)
        return JSONResponse({"access_token": token, "expires_on": str(expires_on), "resource": resource,
                             "token_type": "Bearer"})

    async def expire_tokens(self, request: Request) -> Response:
        return JSONResponse({"expired": self.emu.expire_tokens()})

    # -- Azure's view: platform metrics and background traffic ------------------------------------------
    async def azure_metrics(self, request: Request) -> Response:
        return await metrics_api.metrics(self.emu, request)

    async def post_background(self, request: Request) -> Response:
        """`{"start": epoch, "end": epoch}`: log the background traffic of that window now (a compressed
        period: a day of real callers in one call)."""
        data = await _json_object(request)
        try:
            start, end = float((data or {})["start"]), float((data or {})["end"])
        except (KeyError, TypeError, ValueError):
            return _bad('expected {"start": epoch seconds, "end": epoch seconds}')
        return JSONResponse({"added": self.emu.background(start, end)})

    async def put_azure(self, request: Request) -> Response:
        """Change how the metrics API answers: `{"forbidden": true}`, `{"throttle": 2, "retry_after": 1}`."""
        data = await _json_object(request)
        allowed = {"account", "region", "forbidden", "throttle", "retry_after"}
        if data is None or not set(data) <= allowed:
            return _bad(f"expected a JSON object with keys from {sorted(allowed)}")
        try:
            AzureResource.model_validate(self.emu.scenario.azure.model_dump() | data)
        except ValidationError as exc:
            return _bad(str(exc))
        self.emu.set_azure(**data)
        return JSONResponse(self.emu.scenario.azure.model_dump(mode="json"))


def _entry(request: Request) -> LogEntry | None:
    found = request.scope.get("emulator.entry")
    return found if isinstance(found, LogEntry) else None


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        data = json.loads(await request.body())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _body_problem(body: dict[str, Any], count_only: bool) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if count_only:
        return None
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Field required"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    return None


async def _until_gone(request: Request, stopping: asyncio.Event) -> None:
    """Wait until the client disconnects or the emulator stops (the body is already read)."""
    gone = asyncio.ensure_future(request.receive())
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while not stop.done():
            await asyncio.wait({gone, stop}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                if gone.result()["type"] == "http.disconnect":
                    return
                gone = asyncio.ensure_future(request.receive())
    finally:
        gone.cancel()
        stop.cancel()


def _bad(message: str, status: int = 400) -> Response:
    return JSONResponse({"error": message}, status_code=status)
