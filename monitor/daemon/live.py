"""The live fleet: every ``discovery.refresh`` the daemon reads the control plane and hands back the
discovered resources to probe. Each change (a deployment added or removed, drift of its model version,
SKU, capacity, rate limits or state, a retirement warning at 90/30/7 days) is logged, kept in the store
and sent as a custom event. A refresh that fails (403, 429, network, no token) keeps the last known fleet
and says so (log, event, ``/status``). The last snapshot is kept in the store, so a restart starts from it
and drift across a restart is still seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from monitor.azure import inventory
from monitor.azure.arm import ArmError, ArmReader, Snapshot, arm_credential, from_json, to_json
from monitor.azure.inventory import Change
from monitor.azure.snapshot import STORE_KEY
from monitor.config import Config, Discovery, Resource
from monitor.logs import event
from monitor.store.sqlite import Store

from . import views

if TYPE_CHECKING:
    from .service import Telemetry

log = logging.getLogger("monitor.discovery")

EVENT_FLEET = "foundry_monitor.fleet_change"  # a discovered deployment was added or removed
EVENT_DRIFT = "foundry_monitor.drift"
EVENT_RETIREMENT = "foundry_monitor.retirement"
EVENT_FAILED = "foundry_monitor.discovery_failed"
EVENTS = {"added": EVENT_FLEET, "removed": EVENT_FLEET, "drift": EVENT_DRIFT, "retirement": EVENT_RETIREMENT}
REFRESH_TIMEOUT_S = 120.0
SOON_GAP_S = 5.0  # an early refresh (a discovered deployment answered 404) at most this often
RECENT = 50  # changes /status shows
STATE_KEY = STORE_KEY


class LiveFleet:
    def __init__(self, discovery: Discovery, store: Store, telemetry: Telemetry,
                 now: Callable[[], datetime], reader: ArmReader | None = None) -> None:
        self.discovery = discovery
        self.store = store
        self.telemetry = telemetry
        self.now = now
        self.reader = reader or ArmReader(discovery, arm_credential(discovery), clock=now)
        self.snapshot: Snapshot | None = from_json(store.get_state(STATE_KEY))
        self.owners: dict[tuple[str, str], str] = {}  # (subscription, account) -> resource name
        self.counts = {"ok": 0, "failed": 0}
        self.last_ok_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._next_at = 0.0  # loop clock: the first refresh is due at once
        self._last_try = float("-inf")

    # --- when ------------------------------------------------------------------------------------

    def due(self, t: float) -> bool:
        return t >= self._next_at

    def soon(self, t: float) -> None:
        """Refresh early (a discovered deployment answered DeploymentNotFound: it may be gone)."""
        self._next_at = min(self._next_at, max(t, self._last_try + SOON_GAP_S))

    # --- the refresh -----------------------------------------------------------------------------

    def resources(self, cfg: Config) -> list[Resource]:
        """The discovered resources of the last snapshot (restored or read), for ``cfg``'s settings."""
        if self.snapshot is None:
            return []
        found = inventory.owned(cfg, inventory.selected(self.snapshot, self.discovery))
        self.owners = {key: res.name for key, res in found}
        return [res for _, res in found]

    async def refresh(self, cfg: Config, t: float) -> list[Resource] | None:
        """Read the control plane; the resources to probe, or None when the read failed (keep the last)."""
        self._last_try = t
        self._next_at = t + self.discovery.refresh
        try:
            snap = await asyncio.wait_for(self.reader.snapshot(), REFRESH_TIMEOUT_S)
        except asyncio.CancelledError:
            self._next_at = t  # cut short (start-up gave up waiting): due again at once
            raise
        except (ArmError, TimeoutError) as exc:
            self._failed(str(exc) if isinstance(exc, ArmError) else
                         f"ARM did not answer within {REFRESH_TIMEOUT_S:g}s",
                         exc.reason if isinstance(exc, ArmError) else "timeout")
            return None
        changes = inventory.drift(self.snapshot, snap, self.discovery)
        changes += await asyncio.to_thread(self._new_retirements, snap)
        if changes:
            await asyncio.to_thread(self.store.add_inventory_events, snap.taken_at,
                                    [{"kind": c.kind, **c.fields()} for c in changes])
        await asyncio.to_thread(self.store.put_state, STATE_KEY, to_json(snap), snap.taken_at)
        for c in changes:
            self._tell(c, snap.taken_at)
        for note in snap.notes:
            event(log, logging.WARNING, f"discovery: could not read {note}", event="discovery", note=note)
        first = self.snapshot is None
        self.snapshot = snap
        self.counts["ok"] += 1
        self.last_ok_at, self.last_error, self.last_error_at = snap.taken_at, None, None
        found = self.resources(cfg)
        if first:
            event(log, logging.INFO, "discovery: first read of the control plane", event="discovery",
                  deployments=sum(len(r.deployments) for r in found), accounts=len(found))
        return found

    def _failed(self, error: str, reason: str) -> None:
        self.counts["failed"] += 1
        self.last_error, self.last_error_at = error, self.now()
        kept = sum(1 for _ in inventory.selected(self.snapshot, self.discovery)) if self.snapshot else 0
        event(log, logging.WARNING, "discovery refresh failed; the last known fleet keeps running",
              event="discovery", ok=False, reason=reason, error=error, kept=kept)
        self.telemetry.event(EVENT_FAILED, {"reason": reason, "error": error, "kept": kept},
                             self.last_error_at)

    def _new_retirements(self, snap: Snapshot) -> list[Change]:
        """Retirement warnings not sent before (one per deployment, model version and threshold)."""
        sent = {(r["account"], r["deployment"], r["field"], r["before"]) for r in self.store.query(
            "SELECT account, deployment, field, before FROM inventory_events WHERE kind = 'retirement'")}
        return [c for c in inventory.retirements(snap, self.discovery, snap.taken_at)
                if (c.account, c.deployment, c.field, c.before) not in sent]

    def _tell(self, c: Change, at: datetime) -> None:
        level = logging.WARNING if c.kind in ("drift", "retirement", "removed") else logging.INFO
        event(log, level, f"discovery: {c.describe()}", event="inventory", **c.fields())
        self.telemetry.event(EVENTS[c.kind], c.fields(), at)
        self.recent.appendleft({"at": views.iso(at), **c.fields(), "message": c.describe()})

    # --- what /status shows ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        stale = self.last_error is not None
        return {
            "subscriptions": list(self.discovery.subscriptions), "refresh_s": self.discovery.refresh,
            "last_ok_at": views.iso(self.last_ok_at),
            "snapshot_at": views.iso(self.snapshot.taken_at) if self.snapshot else None,
            "ok": not stale, "last_error": self.last_error, "last_error_at": views.iso(self.last_error_at),
            "note": "the last refresh failed: the last known fleet keeps running" if stale else None,
            "refreshes": dict(self.counts), "recent_changes": list(self.recent),
            "unread": list(self.snapshot.notes) if self.snapshot else [],
        }

    def inventory(self, throttled: set[tuple[str, str]]) -> list[dict[str, Any]]:
        """The inventory rows, with the resource each is monitored as and a quota hint when throttled."""
        if self.snapshot is None:
            return []
        by_key = {(d.subscription.lower(), d.account, d.name): d for d in self.snapshot.deployments}
        rows = inventory.rows(self.snapshot, self.discovery, self.now())
        for row in rows:
            owner = self.owners.get((row["subscription"].lower(), row["account"]))
            row["resource"] = owner if row["monitored"] else None
            d = by_key[(row["subscription"].lower(), row["account"], row["deployment"])]
            is_throttled = owner is not None and (owner, row["deployment"]) in throttled
            row["quota_hint"] = inventory.quota_hint(d, self.snapshot, is_throttled)
        return rows

    async def close(self) -> None:
        await self.reader.close()
