"""The emulator's Azure Resource Manager: the Microsoft.CognitiveServices control plane of subscriptions.

Same paths, ``api-version`` query parameter and JSON shapes as the REST spec (2025-06-01 / 2025-09-01), so
the real ``azure-mgmt-cognitiveservices`` client works against it; bearer tokens must be for the
management audience (https://management.azure.com). Serve it over https (the emulator's ``tls``): azure-core
sends no bearer token over plain http.

A scenario's ``arm`` section::

    arm:
      subscriptions:
        - id: 00000000-0000-0000-0000-000000000001
          accounts:
            - {name: team-a, resource_group: rg-a, location: eastus2, tags: {env: prod},
               deployments: [{name: haiku, model: claude-haiku-4-5, version: "20251001", capacity: 100}]}
      models:   # the catalogue per location: lifecycle and retirement date of each model version
        - {location: eastus2, name: claude-haiku-4-5, version: "20251001", retirement: "2027-10-15"}
      usages:   # quota per subscription and location
        - {subscription: 00000000-..., location: eastus2, name: AIServices.GlobalStandard.claude-haiku-4-5,
           limit: 2000, current: 150}

Admin (the emulator's own port): ``PUT|DELETE /_emulator/arm/subscriptions/{sub}/accounts/{account}/
deployments/{name}`` (PUT merges the given fields into the deployment, or adds it), ``PUT /_emulator/arm/
models/{location}/{name}/{version}`` (lifecycle, retirement), ``PUT|DELETE /_emulator/arm/fault``
(``{"status": 403|429|500, "retry_after": 1}``: every ARM call answers so until deleted).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ARM_AUDIENCE = "https://management.azure.com"
PROVIDER = "Microsoft.CognitiveServices"
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Model):
    key: str
    renewal_period: float = 60
    count: float


class ArmDeployment(_Model):
    name: str = Field(min_length=1)
    model: str = "claude-haiku-4-5"
    version: str = "20251001"
    format: str = "Anthropic"
    sku: str = "GlobalStandard"
    capacity: int = Field(default=100, ge=0)
    current_capacity: int | None = None  # None: same as capacity
    state: str = "Running"  # deploymentState
    provisioning_state: str = "Succeeded"
    rate_limits: tuple[RateLimit, ...] | None = None  # None: derived from capacity (requests, tokens)

    def limits(self) -> tuple[RateLimit, ...]:
        if self.rate_limits is not None:
            return self.rate_limits
        return (RateLimit(key="request", count=self.capacity),
                RateLimit(key="token", count=self.capacity * 1000))


class ArmAccount(_Model):
    name: str = Field(min_length=2)
    resource_group: str = "rg-foundry"
    location: str = "eastus2"
    kind: str = "AIServices"
    subdomain: str | None = None  # customSubDomainName; None: the account's name
    tags: dict[str, str] = Field(default_factory=dict)
    deployments: tuple[ArmDeployment, ...] = ()


class ArmSubscription(_Model):
    id: str = Field(min_length=1)
    accounts: tuple[ArmAccount, ...] = ()


class ArmModel(_Model):
    location: str
    name: str
    version: str
    format: str = "Anthropic"
    lifecycle: str = "GenerallyAvailable"
    retirement: str | None = None  # the inference deprecation date, YYYY-MM-DD
    sku: str = "GlobalStandard"


class ArmUsage(_Model):
    subscription: str
    location: str
    name: str
    limit: float
    current: float = 0
    unit: str = "Count"


class Arm(_Model):
    subscriptions: tuple[ArmSubscription, ...] = ()
    models: tuple[ArmModel, ...] = ()
    usages: tuple[ArmUsage, ...] = ()


class ArmFault(_Model):
    status: int = Field(ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)


class ArmState:
    """The control plane's mutable state (admin calls change it while clients read it)."""

    def __init__(self, arm: Arm) -> None:
        self._lock = threading.Lock()
        self.arm = arm
        self.fault: ArmFault | None = None
        self.calls = 0  # ARM requests answered (tests: a refresh happened)

    def load(self, arm: Arm) -> None:
        with self._lock:
            self.arm, self.fault = arm, None

    def accounts(self, sub: str, rg: str | None = None) -> list[ArmAccount]:
        with self._lock:
            found = next((s for s in self.arm.subscriptions if s.id.lower() == sub.lower()), None)
        if found is None:
            return []
        return [a for a in found.accounts if rg is None or a.resource_group.lower() == rg.lower()]

    def account(self, sub: str, rg: str, name: str) -> ArmAccount | None:
        return next((a for a in self.accounts(sub, rg) if a.name.lower() == name.lower()), None)

    def put_deployment(self, sub: str, account: str, name: str, fields: dict[str, Any]) -> ArmDeployment:
        """Add a deployment, or change the given fields of an existing one."""
        with self._lock:
            subs = list(self.arm.subscriptions)
            i = next(i for i, s in enumerate(subs) if s.id.lower() == sub.lower())
            accts = list(subs[i].accounts)
            j = next(j for j, a in enumerate(accts) if a.name.lower() == account.lower())
            deps = {d.name: d for d in accts[j].deployments}
            old = deps.get(name)
            base = old.model_dump() if old else {}
            dep = ArmDeployment.model_validate({**base, **fields, "name": name})
            deps[name] = dep
            accts[j] = accts[j].model_copy(update={"deployments": tuple(deps.values())})
            subs[i] = subs[i].model_copy(update={"accounts": tuple(accts)})
            self.arm = self.arm.model_copy(update={"subscriptions": tuple(subs)})
            return dep

    def remove_deployment(self, sub: str, account: str, name: str) -> bool:
        with self._lock:
            subs = list(self.arm.subscriptions)
            for i, s in enumerate(subs):
                if s.id.lower() != sub.lower():
                    continue
                accts = list(s.accounts)
                for j, a in enumerate(accts):
                    if a.name.lower() == account.lower() and any(d.name == name for d in a.deployments):
                        kept = tuple(d for d in a.deployments if d.name != name)
                        accts[j] = a.model_copy(update={"deployments": kept})
                        subs[i] = s.model_copy(update={"accounts": tuple(accts)})
                        self.arm = self.arm.model_copy(update={"subscriptions": tuple(subs)})
                        return True
        return False

    def put_model(self, location: str, name: str, version: str, fields: dict[str, Any]) -> ArmModel:
        with self._lock:
            models = list(self.arm.models)
            at = next((i for i, m in enumerate(models) if (m.location.lower(), m.name, m.version)
                       == (location.lower(), name, version)), None)
            base = models[at].model_dump() if at is not None else {}
            model = ArmModel.model_validate({**base, **fields, "location": location, "name": name,
                                             "version": version})
            if at is None:
                models.append(model)
            else:
                models[at] = model
            self.arm = self.arm.model_copy(update={"models": tuple(models)})
            return model

    def models(self, location: str) -> list[ArmModel]:
        with self._lock:
            return [m for m in self.arm.models if _loc(m.location) == _loc(location)]

    def usages(self, sub: str, location: str) -> list[ArmUsage]:
        with self._lock:
            return [u for u in self.arm.usages
                    if u.subscription.lower() == sub.lower() and _loc(u.location) == _loc(location)]

    def deployed(self) -> list[ArmDeployment]:
        with self._lock:
            return [d for s in self.arm.subscriptions for a in s.accounts for d in a.deployments]


def _loc(location: str) -> str:
    return location.replace(" ", "").lower()


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
            return _error(404, "ResourceNotFound", f"The Resource '{PROVIDER}/accounts/{p['account']}' under "
                                                   f"resource group '{p['rg']}' was not found.")
        return JSONResponse(account_json(p["sub"], found))

    async def list_deployments(self, request: Request) -> Response:
        denied = self._gate(request)
        if denied is not None:
            return denied
        p = request.path_params
        found = self.state.account(p["sub"], p["rg"], p["account"])
        if found is None:
            return _error(404, "ResourceNotFound", f"The Resource '{PROVIDER}/accounts/{p['account']}' under "
                                                   f"resource group '{p['rg']}' was not found.")
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
    import json

    try:
        data = json.loads(await request.body())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
