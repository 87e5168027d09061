"""The emulator's ARM over HTTP: the REST spec's paths and JSON shapes for the state in ``arm``, the
checks ARM makes first (api-version, a bearer token of the management audience, an injected fault), and
the admin routes that change the control plane at run time."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .arm import ARM_AUDIENCE, PROVIDER, ArmAccount, ArmDeployment, ArmFault, ArmModel, ArmState, ArmUsage

_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")


# --- JSON shapes (REST spec) ---------------------------------------------------------------------------


def account_id(sub: str, a: ArmAccount) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{a.resource_group}/providers/{PROVIDER}/accounts/{a.name}"


def account_json(sub: str, a: ArmAccount) -> dict[str, Any]:
    sub_domain = a.subdomain or a.name
    return {
        "id": account_id(sub, a), "name": a.name, "type": f"{PROVIDER}/accounts", "kind": a.kind,
        "location": a.location, "tags": a.tags, "sku": {"name": "S0"}, "etag": '"0"',
        "properties": {
            "provisioningState": "Succeeded", "customSubDomainName": sub_domain,
            "endpoint": f"https://{sub_domain}.cognitiveservices.azure.com/",
            "endpoints": {"AI Foundry API": f"https://{sub_domain}.services.ai.azure.com/"},
            "publicNetworkAccess": "Enabled",
        },
    }


def deployment_json(sub: str, a: ArmAccount, d: ArmDeployment) -> dict[str, Any]:
    return {
        "id": f"{account_id(sub, a)}/deployments/{d.name}", "name": d.name,
        "type": f"{PROVIDER}/accounts/deployments", "etag": '"0"',
        "sku": {"name": d.sku, "capacity": d.capacity},
        "properties": {
            "model": {"format": d.format, "name": d.model, "version": d.version},
            "provisioningState": d.provisioning_state,
            "rateLimits": [{"key": r.key, "renewalPeriod": r.renewal_period, "count": r.count}
                           for r in d.limits()],
            "versionUpgradeOption": "NoAutoUpgrade",
            "currentCapacity": d.capacity if d.current_capacity is None else d.current_capacity,
            "deploymentState": d.state,
        },
    }


def model_json(m: ArmModel) -> dict[str, Any]:
    model: dict[str, Any] = {
        "format": m.format, "name": m.name, "version": m.version, "lifecycleStatus": m.lifecycle,
        "skus": [{"name": m.sku, "usageName": f"AIServices.{m.sku}.{m.name}"}],
        "capabilities": {"chatCompletion": "true"},
    }
    if m.retirement:
        model["deprecation"] = {"inference": f"{m.retirement}T00:00:00Z"}
    return {"kind": "AIServices", "skuName": "S0", "model": model}


def usage_json(u: ArmUsage) -> dict[str, Any]:
    return {"name": {"value": u.name, "localizedValue": u.name}, "unit": u.unit, "limit": u.limit,
            "currentValue": u.current, "quotaPeriod": "PT1M", "status": "Included"}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _account_not_found(p: Mapping[str, Any]) -> JSONResponse:
    return _error(404, "ResourceNotFound", f"The Resource '{PROVIDER}/accounts/{p['account']}' under "
                                           f"resource group '{p['rg']}' was not found.")


_FAULT_CODES = {403: "AuthorizationFailed", 429: "TooManyRequests", 500: "InternalServerError",
                503: "ServiceUnavailable"}


class ArmApi:
    """The ARM routes; ``token_audience`` gives the audience a bearer token was issued for (None: invalid)."""

    def __init__(self, state: ArmState, token_audience: Callable[[str], str | None],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.state = state
        self.token_audience = token_audience
        self.on_change = on_change  # the data plane follows the control plane

    def routes(self) -> list[Route]:
        sub = "/subscriptions/{sub}"
        acct = sub + "/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts"
        loc = sub + "/providers/Microsoft.CognitiveServices/locations/{location}"
        admin = "/_emulator/arm"
        admin_dep = admin + "/subscriptions/{sub}/accounts/{account}/deployments/{name}"
        return [
            Route(sub + f"/providers/{PROVIDER}/accounts", self.list_accounts, methods=["GET"]),
            Route(acct, self.list_accounts, methods=["GET"]),
            Route(acct + "/{account}", self.get_account, methods=["GET"]),
            Route(acct + "/{account}/deployments", self.list_deployments, methods=["GET"]),
            Route(loc + "/models", self.list_models, methods=["GET"]),
            Route(loc + "/usages", self.list_usages, methods=["GET"]),
            Route(admin_dep, self.admin_put_deployment, methods=["PUT"]),
            Route(admin_dep, self.admin_delete_deployment, methods=["DELETE"]),
            Route(admin + "/models/{location}/{name}/{version}", self.admin_put_model, methods=["PUT"]),
            Route(admin + "/fault", self.admin_put_fault, methods=["PUT"]),
            Route(admin + "/fault", self.admin_delete_fault, methods=["DELETE"]),
        ]

    def _gate(self, request: Request) -> Response | None:
        """What ARM checks before the operation: api-version, the bearer token, an injected fault."""
        self.state.calls += 1
        version = request.query_params.get("api-version")
        if not version:
            return _error(400, "MissingApiVersionParameter",
                          "The api-version query parameter (?api-version=) is required for all requests.")
        if not _API_VERSION.fullmatch(version):
            return _error(400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid.")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(401, "AuthenticationFailed",
                          "Authentication failed. The 'Authorization' header is missing.")
        audience = self.token_audience(token.strip())
        if audience is None:
            return _error(401, "ExpiredAuthenticationToken",
                          "The access token is invalid or has expired.")
        if audience != ARM_AUDIENCE:
            return _error(401, "InvalidAuthenticationTokenAudience",
                          "The access token has been obtained for wrong audience or resource "
                          f"'{audience}'. It should exactly match with one of the allowed audiences "
                          f"'{ARM_AUDIENCE}/'.")
        fault = self.state.fault
        if fault is not None:
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            code = _FAULT_CODES.get(fault.status, "Failed")
            return _error(fault.status, code, f"emulated ARM failure ({fault.status} {code}).", headers)
        return None

    async def list_accounts(self, request: Request) -> Response:
        denied = self._gate(request)
        if denied is not None:
            return denied
        sub = request.path_params["sub"]
        accounts = self.state.accounts(sub, request.path_params.get("rg"))
        return JSONResponse({"value": [account_json(sub, a) for a in accounts]})

    async def get_account(self, request: Request) -> Response:
        denied = self._gate(request)
        if denied is not None:
            return denied
        p = request.path_params
        found = self.state.account(p["sub"], p["rg"], p["account"])
        if found is None:
            return _account_not_found(p)
        return JSONResponse(account_json(p["sub"], found))

    async def list_deployments(self, request: Request) -> Response:
        denied = self._gate(request)
        if denied is not None:
            return denied
        p = request.path_params
        found = self.state.account(p["sub"], p["rg"], p["account"])
        if found is None:
            return _account_not_found(p)
        return JSONResponse({"value": [deployment_json(p["sub"], found, d) for d in found.deployments]})

    async def list_models(self, request: Request) -> Response:
        denied = self._gate(request)
        if denied is not None:
            return denied
        models = self.state.models(request.path_params["location"])
        return JSONResponse({"value": [model_json(m) for m in models]})

    async def list_usages(self, request: Request) -> Response:
        denied = self._gate(request)
        if denied is not None:
            return denied
        p = request.path_params
        return JSONResponse({"value": [usage_json(u) for u in self.state.usages(p["sub"], p["location"])]})

    # -- admin ----------------------------------------------------------------------------------------
    async def admin_put_deployment(self, request: Request) -> Response:
        data = await _object(request)
        if data is None:
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        p = request.path_params
        try:
            dep = self.state.put_deployment(p["sub"], p["account"], p["name"], data)
        except StopIteration:
            return JSONResponse({"error": "no such subscription or account"}, status_code=404)
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.on_change()
        return JSONResponse(dep.model_dump(mode="json"))

    async def admin_delete_deployment(self, request: Request) -> Response:
        p = request.path_params
        gone = self.state.remove_deployment(p["sub"], p["account"], p["name"])
        self.on_change()
        return Response(status_code=204 if gone else 404)

    async def admin_put_model(self, request: Request) -> Response:
        data = await _object(request)
        if data is None:
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        p = request.path_params
        try:
            model = self.state.put_model(p["location"], p["name"], p["version"], data)
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(model.model_dump(mode="json"))

    async def admin_put_fault(self, request: Request) -> Response:
        data = await _object(request)
        try:
            self.state.fault = ArmFault.model_validate(data)
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.state.fault.model_dump(mode="json"))

    async def admin_delete_fault(self, request: Request) -> Response:
        self.state.fault = None
        return Response(status_code=204)


async def _object(request: Request) -> dict[str, Any] | None:
    try:
        data = json.loads(await request.body())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
