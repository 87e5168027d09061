"""The emulator's Azure Resource Manager: the Microsoft.CognitiveServices control plane of subscriptions
(scenario shapes and state here; the HTTP surface in ``arm_api``).

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

import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ARM_AUDIENCE = "https://management.azure.com"
PROVIDER = "Microsoft.CognitiveServices"


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
