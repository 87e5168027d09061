"""What the control plane says, as frozen values: deployments with their account, the model catalogue and
the quota of one read (a ``Snapshot``), and its JSON form (the daemon keeps the last one in its store)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RateLimit:
    key: str  # request | token
    renewal_period_s: float
    count: float

    def text(self) -> str:
        per = "min" if self.renewal_period_s == 60 else f"{self.renewal_period_s:g}s"
        return f"{self.count:g} {self.key}s/{per}"


@dataclass(frozen=True, slots=True)
class ArmDeployment:
    """One deployment as ARM describes it, with the account it belongs to."""

    subscription: str
    resource_group: str
    account: str
    location: str
    subdomain: str | None
    account_tags: Mapping[str, str]
    name: str
    model_format: str
    model_name: str
    model_version: str
    sku: str
    capacity: int | None
    current_capacity: int | None
    provisioning_state: str
    state: str | None  # deploymentState (newer API versions); None when ARM does not say
    rate_limits: tuple[RateLimit, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        """(subscription, account, deployment): unique across the fleet, stable across refreshes."""
        return self.subscription.lower(), self.account, self.name

    @property
    def probeable(self) -> bool:
        """Provisioned and running: a canary can expect an answer."""
        return self.provisioning_state == "Succeeded" and self.state in (None, "Running")


@dataclass(frozen=True, slots=True)
class CatalogModel:
    location: str
    name: str
    version: str
    lifecycle: str | None
    retirement: date | None  # the inference deprecation date


@dataclass(frozen=True, slots=True)
class Quota:
    subscription: str
    location: str
    name: str  # e.g. AIServices.GlobalStandard.claude-haiku-4-5
    current: float
    limit: float
    unit: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    deployments: tuple[ArmDeployment, ...]
    catalog: tuple[CatalogModel, ...] = ()
    quotas: tuple[Quota, ...] = ()
    notes: tuple[str, ...] = ()  # what could not be read (catalogue, quota), in words

    def retirement_of(self, d: ArmDeployment) -> date | None:
        loc = loc_key(d.location)
        for m in self.catalog:
            if loc_key(m.location) == loc and m.name == d.model_name and m.version == d.model_version:
                return m.retirement
        return None

    def lifecycle_of(self, d: ArmDeployment) -> str | None:
        loc = loc_key(d.location)
        return next((m.lifecycle for m in self.catalog if loc_key(m.location) == loc
                     and m.name == d.model_name and m.version == d.model_version), None)

    def quota_of(self, d: ArmDeployment) -> Quota | None:
        """The subscription quota this deployment draws on: `AIServices.{sku}.{model}` in its location."""
        loc, want = loc_key(d.location), f"{d.sku}.{d.model_name}".lower()
        for q in self.quotas:
            if q.subscription.lower() == d.subscription.lower() and loc_key(q.location) == loc \
                    and q.name.lower().endswith(want):
                return q
        return None


def loc_key(location: str) -> str:
    """A location as ARM compares them (East US 2 = eastus2)."""
    return location.replace(" ", "").lower()


# --- kept across restarts ------------------------------------------------------------------------------

STORE_KEY = "inventory"  # the store's state row holding the last snapshot (the daemon writes, reports read)


def to_json(s: Snapshot) -> dict[str, Any]:
    """The snapshot as plain JSON (the daemon keeps the last one in its store)."""
    return {
        "taken_at": s.taken_at.isoformat(),
        "deployments": [{**{k: getattr(d, k) for k in ArmDeployment.__slots__ if k != "rate_limits"},
                         "account_tags": dict(d.account_tags),
                         "rate_limits": [[r.key, r.renewal_period_s, r.count] for r in d.rate_limits]}
                        for d in s.deployments],
        "catalog": [[m.location, m.name, m.version, m.lifecycle, m.retirement.isoformat() if m.retirement
                     else None] for m in s.catalog],
        "quotas": [[q.subscription, q.location, q.name, q.current, q.limit, q.unit] for q in s.quotas],
        "notes": list(s.notes),
    }


def from_json(data: Any) -> Snapshot | None:
    """A snapshot written by ``to_json``; None for anything else (an older or damaged record)."""
    try:
        return Snapshot(
            taken_at=datetime.fromisoformat(data["taken_at"]),
            deployments=tuple(
                ArmDeployment(**{**d, "rate_limits": tuple(RateLimit(*r) for r in d["rate_limits"])})
                for d in data["deployments"]),
            catalog=tuple(CatalogModel(loc, n, v, lc, date.fromisoformat(r) if r else None)
                          for loc, n, v, lc, r in data["catalog"]),
            quotas=tuple(Quota(*q) for q in data["quotas"]),
            notes=tuple(data["notes"]))
    except (KeyError, TypeError, ValueError):
        return None
