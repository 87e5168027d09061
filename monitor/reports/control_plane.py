"""The control plane in a report (with `discovery`): the period's changes the daemon kept in its store
(retirement warnings, drift with before and after, deployments added or removed), the inventory as ARM
last described it (the daemon's last snapshot, kept in the store), and each deployment's headroom: what
its own request limit allows against what real callers used (Azure's view, platform metrics), or whether
the canaries were throttled where there are no platform metrics.

Only the local store holds these: a report from Log Analytics reads them from the local store when there
is one here, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.azure import inventory
from monitor.azure.snapshot import STORE_KEY, ArmDeployment, Snapshot, from_json
from monitor.canary.results import FailureKind
from monitor.config import Config
from monitor.store.sqlite import Store

from .model import AzureView, ControlPlane, ControlPlaneChange, DeploymentReport, Headroom, InventoryRow

ORDER = {"retirement": 0, "drift": 1, "added": 2, "removed": 2}


def describe(kind: str, subscription: str, account: str, deployment: str, field: str | None,
             before: str | None, after: str | None) -> str:
    """A change in words (the same words the daemon logs)."""
    return inventory.Change(kind, subscription, account, deployment, field, before, after).describe()


def _in_order(store: Store, start: datetime, end: datetime) -> list[Any]:
    """The store's inventory_events in [start, end): retirement warnings first, then drift, then
    deployments added or removed, each group in time order."""
    return sorted(store.inventory_events(start, end), key=lambda r: (ORDER.get(r["kind"], 3), r["at"]))


def _describe(r: Any) -> str:
    return describe(r["kind"], r["subscription"], r["account"], r["deployment"], r["field"], r["before"],
                    r["after"])


def changes(store: Store, start: datetime, end: datetime, timezone: str) -> list[ControlPlaneChange]:
    tz = ZoneInfo(timezone)
    return [ControlPlaneChange(
        at=datetime.fromtimestamp(r["at"], tz).isoformat(timespec="seconds"), kind=r["kind"],
        subscription=r["subscription"], account=r["account"], deployment=r["deployment"], field=r["field"],
        before=r["before"], after=r["after"], text=_describe(r)) for r in _in_order(store, start, end)]


def change_lines(store: Store, start: datetime, end: datetime) -> tuple[str, ...]:
    """The changes in words, each after its date in ``start``'s zone (the weekly email's lines)."""
    return tuple(f"{datetime.fromtimestamp(r['at'], start.tzinfo).date().isoformat()} {_describe(r)}"
                 for r in _in_order(store, start, end))


def section(cfg: Config, store: Store | None, source: str, now: datetime, start: datetime, end: datetime,
            deployments: Sequence[DeploymentReport],
            azure_view: Sequence[AzureView] | None) -> ControlPlane | None:
    """The report's control-plane section; None without a discovery section."""
    if cfg.discovery is None:
        return None
    tz = cfg.reports.timezone
    if store is None:
        return ControlPlane(
            source="none", changes=[], inventory_at=None, inventory=None, headroom=[],
            notes=["Control-plane changes and the inventory are kept in the daemon's local store, which is "
                   "not here: run the report where the daemon's data_dir is."])
    notes = []
    if source != "local":
        notes.append(f"Control-plane changes and the inventory are read from the local store (source "
                     f"{source} does not hold them).")
    snap = from_json(store.get_state(STORE_KEY))
    rows = None
    headroom: list[Headroom] = []
    if snap is None:
        notes.append("No inventory yet: the daemon has not read Azure Resource Manager with this store.")
    else:
        rows = [_row(r) for r in inventory.rows(snap, cfg.discovery, now)]
        headroom = _headroom(cfg, snap, deployments, azure_view)
        notes += [f"Could not read {n} at the last ARM read." for n in snap.notes]
    return ControlPlane(
        source="local store, as the daemon read ARM", changes=changes(store, start, end, tz),
        inventory_at=None if snap is None else snap.taken_at.astimezone(ZoneInfo(tz)).isoformat(
            timespec="seconds"),
        inventory=rows, headroom=headroom, notes=notes)


def _row(r: dict[str, object]) -> InventoryRow:
    limits = r["rate_limits"]
    assert isinstance(limits, dict)
    quota = r["quota"]
    return InventoryRow(
        subscription=str(r["subscription"]), account=str(r["account"]), region=str(r["region"]),
        deployment=str(r["deployment"]), model=str(r["model"]), version=str(r["version"]), sku=str(r["sku"]),
        capacity=r["capacity"],
        rate_limits=", ".join(f"{v['count']:g} {k}s/min" if v["renewal_period_s"] == 60 else
                              f"{v['count']:g} {k}s/{v['renewal_period_s']:g}s" for k, v in limits.items()),
        state=str(r["state"] or r["provisioning_state"]),
        retirement=r["retirement"],
        days_to_retirement=r["days_to_retirement"],
        quota=None if not isinstance(quota, dict) else
        f"{quota['name']} {quota['current']:g}/{quota['limit']:g}",
        monitored=bool(r["monitored"]))


def _arm_of(cfg: Config, snap: Snapshot) -> dict[tuple[str, str], ArmDeployment]:
    """(report resource, deployment) -> the ARM deployment it is: discovered resources by the names the
    daemon gives them, hand-listed ones by their azure_resource_id."""
    assert cfg.discovery is not None
    by_account = {(d.subscription.lower(), d.account.lower(), d.name): d for d in snap.deployments}
    out: dict[tuple[str, str], ArmDeployment] = {}
    for res in cfg.resources:
        if res.azure_resource_id:
            parts = res.azure_resource_id.split("/")
            sub, account = parts[2].lower(), parts[-1].lower()
            for dep in res.deployments:
                d = by_account.get((sub, account, dep.name))
                if d is not None:
                    out[(res.name, dep.name)] = d
    for (sub, account), res in inventory.owned(cfg, inventory.selected(snap, cfg.discovery)):
        for dep in res.deployments:
            d = by_account.get((sub, account.lower(), dep.name))
            if d is not None:
                out.setdefault((res.name, dep.name), d)
    return out


def _headroom(cfg: Config, snap: Snapshot, deployments: Sequence[DeploymentReport],
              azure_view: Sequence[AzureView] | None) -> list[Headroom]:
    arm = _arm_of(cfg, snap)
    views = {(v.resource, v.deployment): v for v in azure_view or ()}
    canary = {(d.resource, d.deployment): sum(f.count for f in d.failures
                                              if f.kind == FailureKind.RATE_LIMITED) for d in deployments}
    out = []
    for key in sorted(set(views) | set(canary)):
        d = arm.get(key)
        if d is None:
            continue
        v = views.get(key)
        limit = inventory.request_limit_per_min(d)
        peak = v.peak_requests_per_min if v else None
        throttled = v.throttled if v else None
        grain = v.grain_s if v else None
        out.append(Headroom(
            resource=key[0], deployment=key[1], limit_requests_per_min=limit, peak_requests_per_min=peak,
            peak_pct_of_limit=None if peak is None or not limit else round(100.0 * peak / limit, 1),
            grain_s=grain, throttled=throttled, canary_throttled=canary.get(key, 0),
            quota=inventory.quota_name(d, snap),
            hint=inventory.headroom_hint(d, snap, throttled, peak, grain, canary.get(key, 0))))
    return out
