"""What a control-plane snapshot means for the monitor: which deployments to probe (and how), the merged
config, the inventory table, drift between two snapshots, retirement warnings and the quota hint.

Pure functions of frozen values: no I/O here (``arm`` reads, the daemon acts).

Precedence when discovered and hand-listed deployments meet: a hand-listed deployment wins. A discovered
deployment is dropped when a hand-listed resource points at the same endpoint (``resource`` equal to the
account's custom subdomain, or the same ``base_url``) and lists a deployment of the same name. Discovered
resources are named after their account; an account whose name a hand-listed resource already uses is
named ``{account}@{first 8 characters of its subscription}``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from monitor.config import Config, Deployment, Discovery, Override, Resource

from .arm import ArmDeployment, Snapshot

CLAUDE_FORMAT = "Anthropic"
RETIREMENT_DAYS = (90, 30, 7)  # warnings, each once per deployment and model version
QUOTA_BUSY = 0.9  # a subscription quota this full is the likely cause of a throttled deployment
_OVERRIDE_KEYS = tuple(k for k in Override.model_fields if k != "match")


def endpoint(d: ArmDeployment, discovery: Discovery) -> str:
    sub = d.subdomain or d.account
    if discovery.endpoint:
        return discovery.endpoint.replace("{subdomain}", sub).rstrip("/") + "/"
    return f"https://{sub}.services.ai.azure.com/anthropic/"


def selected(snapshot: Snapshot, discovery: Discovery) -> list[ArmDeployment]:
    """The Claude deployments the discovery section asks for (tags, include/exclude patterns)."""
    out = []
    for d in snapshot.deployments:
        if d.model_format != CLAUDE_FORMAT:
            continue
        if any(d.account_tags.get(k) != v for k, v in discovery.tags.items()):
            continue
        if not any(fnmatch.fnmatchcase(d.name, p) for p in discovery.include):
            continue
        if any(fnmatch.fnmatchcase(d.name, p) for p in discovery.exclude):
            continue
        out.append(d)
    return out


def _override(name: str, discovery: Discovery) -> dict[str, Any]:
    for o in discovery.overrides:
        if fnmatch.fnmatchcase(name, o.match):
            return {k: getattr(o, k) for k in _OVERRIDE_KEYS if getattr(o, k) is not None}
    return {}


def _hand_listed(cfg: Config) -> set[tuple[str, str]]:
    """(endpoint, deployment) of every hand-listed deployment."""
    return {(res.endpoint, dep.name) for res in cfg.resources for dep in res.deployments}


def resources(cfg: Config, deployments: Iterable[ArmDeployment]) -> list[Resource]:
    """One config Resource per discovered account holding its probeable Claude deployments, with the
    overrides applied and Entra ID auth with the monitor's credential."""
    return [res for _, res in owned(cfg, deployments)]


def owned(cfg: Config, deployments: Iterable[ArmDeployment]) -> list[tuple[tuple[str, str], Resource]]:
    """``resources`` with the (subscription, account) each Resource stands for."""
    discovery = cfg.discovery
    if discovery is None:
        return []
    taken = {r.name for r in cfg.resources}
    hand = _hand_listed(cfg)
    accounts: dict[tuple[str, str], list[ArmDeployment]] = {}
    for d in deployments:
        if d.probeable and (endpoint(d, discovery), d.name) not in hand:
            accounts.setdefault((d.subscription.lower(), d.account), []).append(d)
    auth = {"entra": {"scope": discovery.scope, "client_id": discovery.client_id}}
    out = []
    for (sub, account), deps in sorted(accounts.items()):
        name = account if account not in taken else f"{account}@{sub[:8]}"
        taken.add(name)
        first = deps[0]
        out.append(((sub, account), Resource.model_validate({
            "name": name, "base_url": endpoint(first, discovery), "location": first.location or None,
            "auth": auth, "deployments": [
                # values already validated (the override's): constructed, not parsed again from text
                Deployment.model_construct(name=d.name, model=d.model_name, **_override(d.name, discovery))
                for d in sorted(deps, key=lambda d: d.name)]})))
    return out


def merged(cfg: Config, discovered: Sequence[Resource]) -> Config:
    """The config the daemon runs: the hand-listed resources, then the discovered ones."""
    if not discovered:
        return cfg
    return cfg.model_copy(update={"resources": [*cfg.resources, *discovered]})


# --- the inventory table --------------------------------------------------------------------------------


def days_left(retirement: date | None, now: datetime) -> int | None:
    return None if retirement is None else (retirement - now.date()).days


def rows(snapshot: Snapshot, discovery: Discovery | None, now: datetime) -> list[dict[str, Any]]:
    """One row per Claude deployment: what it is, its limits, when its model retires, its quota."""
    chosen = {d.key for d in selected(snapshot, discovery)} if discovery else set()
    out = []
    for d in snapshot.deployments:
        if d.model_format != CLAUDE_FORMAT:
            continue
        retirement = snapshot.retirement_of(d)
        quota = snapshot.quota_of(d)
        out.append({
            "subscription": d.subscription, "resource_group": d.resource_group, "account": d.account,
            "region": d.location, "deployment": d.name, "model": d.model_name, "version": d.model_version,
            "sku": d.sku, "capacity": d.capacity, "current_capacity": d.current_capacity,
            "rate_limits": {r.key: {"count": r.count, "renewal_period_s": r.renewal_period_s}
                            for r in d.rate_limits},
            "provisioning_state": d.provisioning_state, "state": d.state,
            "lifecycle": snapshot.lifecycle_of(d),
            "retirement": retirement.isoformat() if retirement else None,
            "days_to_retirement": days_left(retirement, now),
            "quota": None if quota is None else {"name": quota.name, "current": quota.current,
                                                 "limit": quota.limit, "unit": quota.unit},
            "monitored": d.key in chosen and d.probeable,
        })
    return sorted(out, key=lambda r: (r["account"], r["deployment"]))


def text_table(table: Sequence[dict[str, Any]]) -> str:
    head = ("account", "region", "deployment", "model", "sku", "capacity", "rate limits", "state",
            "retires in", "quota used")
    lines = [head]
    for r in table:
        limits = ", ".join(f"{v['count']:g} {k}s/min" for k, v in r["rate_limits"].items()) or "-"
        days = r["days_to_retirement"]
        quota = r["quota"]
        lines.append((
            r["account"], r["region"], r["deployment"], f"{r['model']} {r['version']}", r["sku"],
            "-" if r["capacity"] is None else str(r["capacity"]), limits,
            r["state"] or r["provisioning_state"], "-" if days is None else f"{days} d",
            "-" if quota is None else f"{quota['current']:g}/{quota['limit']:g}"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


# --- drift and retirement --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """A deployment appeared, disappeared or changed (``field`` with ``before`` and ``after``)."""

    kind: str  # added | removed | drift | retirement
    subscription: str
    account: str
    deployment: str
    field: str | None = None
    before: str | None = None
    after: str | None = None

    def describe(self) -> str:
        where = f"{self.account}/{self.deployment}"
        if self.kind == "drift":
            return f"{where}: {self.field} changed from {self.before} to {self.after}"
        if self.kind == "retirement":
            return f"{where}: model {self.before} retires on {self.after} ({self.field} days or less left)"
        return f"{where}: {self.kind}" + (f" ({self.after})" if self.after else "")

    def fields(self) -> dict[str, Any]:
        return {"change": self.kind, "subscription": self.subscription, "account": self.account,
                "deployment": self.deployment, "field": self.field, "before": self.before,
                "after": self.after}


def _facts(d: ArmDeployment) -> dict[str, str]:
    return {
        "model_version": f"{d.model_name} {d.model_version}", "sku": d.sku,
        "capacity": str(d.capacity), "rate_limits": ", ".join(r.text() for r in d.rate_limits),
        "state": f"{d.provisioning_state}/{d.state or '-'}",
    }


def drift(before: Snapshot | None, after: Snapshot, discovery: Discovery) -> list[Change]:
    """Added, removed and changed Claude deployments between two snapshots (nothing for the first)."""
    if before is None:
        return []
    old = {d.key: d for d in selected(before, discovery)}
    new = {d.key: d for d in selected(after, discovery)}
    out = []
    for key, d in new.items():
        if key not in old:
            out.append(Change("added", d.subscription, d.account, d.name,
                              after=f"{d.model_name} {d.model_version}"))
            continue
        a, b = _facts(old[key]), _facts(d)
        out += [Change("drift", d.subscription, d.account, d.name, k, a[k], b[k]) for k in a if a[k] != b[k]]
    out += [Change("removed", d.subscription, d.account, d.name) for key, d in old.items() if key not in new]
    return out


def retirements(snapshot: Snapshot, discovery: Discovery, now: datetime) -> Iterator[Change]:
    """For each deployment whose model retires within 90, 30 or 7 days: the tightest threshold crossed
    (the caller sends each (deployment, version, threshold) once)."""
    for d in selected(snapshot, discovery):
        left = days_left(snapshot.retirement_of(d), now)
        if left is None:
            continue
        crossed = [t for t in RETIREMENT_DAYS if left <= t]
        if crossed:
            when = snapshot.retirement_of(d)
            yield Change("retirement", d.subscription, d.account, d.name, str(min(crossed)),
                         f"{d.model_name} {d.model_version}", when.isoformat() if when else None)


def quota_hint(d: ArmDeployment, snapshot: Snapshot, throttled: bool) -> str | None:
    """Why a throttled deployment is throttled, as far as ARM can tell."""
    if not throttled:
        return None
    quota = snapshot.quota_of(d)
    own = ", ".join(r.text() for r in d.rate_limits) or "unknown"
    if quota is not None and quota.limit > 0 and quota.current >= QUOTA_BUSY * quota.limit:
        return (f"throttled while the subscription quota {quota.name} in {d.location} is at "
                f"{quota.current:g} of {quota.limit:g}: the quota is shared by every deployment of this "
                f"model in the subscription, so other deployments use it up; its own limits ({own}) may "
                "show headroom. Raise the subscription quota or move load.")
    return (f"throttled at its own rate limits ({own}); the subscription quota shows headroom, so raise "
            "this deployment's capacity")


def request_limit_per_min(d: ArmDeployment) -> float | None:
    """The deployment's own request limit (ARM rateLimits, key ``request``) per minute; None: not listed."""
    for r in d.rate_limits:
        if r.key == "request" and r.renewal_period_s > 0:
            return r.count * 60.0 / r.renewal_period_s
    return None


def quota_name(d: ArmDeployment, snapshot: Snapshot) -> str:
    """The subscription quota the deployment draws on (as read, or named as ARM names it)."""
    quota = snapshot.quota_of(d)
    return quota.name if quota is not None else f"AIServices.{d.sku}.{d.model_name}"


def headroom_hint(d: ArmDeployment, snapshot: Snapshot, throttled: float | None, peak_per_min: float | None,
                  grain_s: float | None, canary_throttled: int) -> str | None:
    """Why a deployment is throttled, from what real callers used against its own request limit (platform
    metrics: ``throttled`` 429s, ``peak_per_min`` over the busiest ``grain_s``); without platform metrics,
    from the canaries' 429s and the subscription's quota use (``quota_hint``). None: not throttled."""
    limit = request_limit_per_min(d)
    if throttled is None or peak_per_min is None or limit is None or limit <= 0:
        return quota_hint(d, snapshot, canary_throttled > 0 or bool(throttled))
    if not throttled:
        return None
    used = 100.0 * peak_per_min / limit
    over = "minute" if grain_s is None or grain_s <= 60 else \
        f"{grain_s / 60:g}-minute grain; shorter bursts inside it are not seen"
    tokens = [r.text() for r in d.rate_limits if r.key == "token"]
    also = f" (requests only: its token limit, {tokens[0]}, is not measured here)" if tokens else ""
    if used < 100.0 * QUOTA_BUSY:
        return (f"real callers were throttled ({throttled:,.0f} × 429) while using at most {used:.0f}% "
                f"of its own limit of {limit:g} requests/min (averaged over the busiest {over}){also}: "
                f"the shared subscription quota ({quota_name(d, snapshot)}) is the likely limit; "
                "raise it or move load")
    return (f"real callers were throttled ({throttled:,.0f} × 429) at {used:.0f}% of its own limit of "
            f"{limit:g} requests/min: raise this deployment's capacity")
