"""Azure Resource Manager, read through ``azure-mgmt-cognitiveservices``: every Cognitive Services account of
the configured subscriptions, its deployments, the model catalogue and the quota of each location they use.

One ``Snapshot`` per read, made of frozen values (nothing of the SDK leaks out). A read that cannot list
the accounts or deployments raises ``ArmError`` (403, 429, network, no token) with a plain-words reason, so
the caller keeps its last fleet; the catalogue and quota are extras: their failure is noted, not raised.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.config import Discovery
from monitor.errors import MonitorError

from .snapshot import (
    ArmDeployment,
    CatalogModel,
    Quota,
    RateLimit,
    Snapshot,
    from_json,
    loc_key,
    to_json,
)

__all__ = ["ArmDeployment", "ArmError", "ArmReader", "CatalogModel", "Quota", "RateLimit", "Snapshot",
           "arm_credential", "from_json", "to_json"]

ARM_SCOPE = "https://management.azure.com/.default"
CONCURRENCY = 8  # ARM calls in flight at once (ARM throttles reads per principal)
RETRIES = 1  # azure-core's own retries per call: a refresh that fails is tried again at the next one


class ArmError(MonitorError):
    """A refresh could not read the control plane; ``reason`` is one of forbidden, throttled, network,
    credential, failed. The message never carries a token."""

    def __init__(self, message: str, *, reason: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


# --- reading ---------------------------------------------------------------------------------------------


@dataclass
class ArmReader:
    """Reads the control plane of ``discovery.subscriptions`` with ``credential`` (management audience)."""

    discovery: Discovery
    credential: Any  # an azure-identity async credential (AsyncTokenCredential)
    clock: Any = field(default=lambda: datetime.now(UTC))
    _clients: dict[str, Any] = field(default_factory=dict)

    def _client(self, subscription: str) -> Any:
        client = self._clients.get(subscription)
        if client is None:
            from azure.mgmt.cognitiveservices.aio import CognitiveServicesManagementClient

            extra: dict[str, Any] = {}
            if self.discovery.ca_file:
                extra["connection_verify"] = self.discovery.ca_file
            client = CognitiveServicesManagementClient(
                self.credential, subscription, base_url=self.discovery.arm_endpoint.rstrip("/"),
                credential_scopes=[ARM_SCOPE], retry_total=RETRIES, logging_enable=False, **extra)
            self._clients[subscription] = client
        return client

    async def snapshot(self) -> Snapshot:
        """Everything at once; raises ArmError when the accounts or deployments cannot be listed."""
        gate = asyncio.Semaphore(CONCURRENCY)
        taken_at = self.clock()
        accounts: list[tuple[str, Any]] = []
        for sub in self.discovery.subscriptions:
            accounts += [(sub, a) for a in await _guard(self._accounts(sub), f"subscription {sub}")]
        lists = await asyncio.gather(*(self._deployments(sub, a, gate) for sub, a in accounts))
        deployments = tuple(d for found in lists for d in found)
        places = sorted({(d.subscription, loc_key(d.location)) for d in deployments})
        notes: list[str] = []
        extras = await asyncio.gather(*(self._extras(sub, loc, gate, notes) for sub, loc in places))
        catalog: dict[tuple[str, str, str], CatalogModel] = {}
        quotas: list[Quota] = []
        for models, usage in extras:
            for m in models:
                catalog.setdefault((loc_key(m.location), m.name, m.version), m)
            quotas += usage
        return Snapshot(taken_at, deployments, tuple(catalog.values()), tuple(quotas), tuple(notes))

    async def _accounts(self, sub: str) -> list[Any]:
        client = self._client(sub)
        if self.discovery.resource_groups:
            out = []
            for rg in self.discovery.resource_groups:
                out += [a async for a in client.accounts.list_by_resource_group(rg)]
            return out
        return [a async for a in client.accounts.list()]

    async def _deployments(self, sub: str, account: Any, gate: asyncio.Semaphore) -> list[ArmDeployment]:
        rg = _resource_group(account.id)
        async with gate:
            found = await _guard(_collect(self._client(sub).deployments.list(rg, account.name)),
                                 f"account {account.name}")
        props = account.properties
        return [_deployment(sub, rg, account, props.custom_sub_domain_name if props else None, d)
                for d in found]

    async def _extras(self, sub: str, loc: str, gate: asyncio.Semaphore,
                      notes: list[str]) -> tuple[list[CatalogModel], list[Quota]]:
        client = self._client(sub)
        models: list[CatalogModel | None] = []
        usage: list[Quota] = []
        async with gate:
            try:
                models = [_catalog(loc, m) for m in await _collect(client.models.list(loc))]
            except Exception as exc:  # noqa: BLE001 - the catalogue is an extra: say what is missing
                notes.append(f"model catalogue of {loc} ({sub}): {_why(exc)}")
            try:
                usage = [_quota(sub, loc, u) for u in await _collect(client.usages.list(loc))]
            except Exception as exc:  # noqa: BLE001 - as above
                notes.append(f"quota of {loc} ({sub}): {_why(exc)}")
        return [m for m in models if m is not None], usage

    async def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()
        with contextlib.suppress(Exception):
            await self.credential.close()


async def _collect(pages: Any) -> list[Any]:
    return [item async for item in pages]


async def _guard(work: Any, what: str) -> list[Any]:
    """Await ``work``; any failure becomes an ArmError that says what to do about it."""
    try:
        return list(await work)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a refresh is one ArmError
        raise _arm_error(exc, what) from None


def _arm_error(exc: Exception, what: str) -> ArmError:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "status_code", None)
    if isinstance(exc, HttpResponseError) and status == 403:
        return ArmError(f"ARM refused to list {what} (403): the monitor's identity needs the Reader role on "
                        "the subscription or resource group; new role assignments take a few minutes",
                        reason="forbidden", status=403)
    if isinstance(exc, HttpResponseError) and status == 429:
        after = _retry_after(exc)
        wait = f" (retry-after {after:g}s)" if after is not None else ""
        return ArmError(f"ARM throttled the monitor listing {what} (429){wait}; the last known fleet keeps "
                        "running and the next refresh tries again", reason="throttled", status=429,
                        retry_after=after)
    if isinstance(exc, ClientAuthenticationError) and status is None:
        return ArmError(f"no token for Azure Resource Manager: {_why(exc)}; check the managed identity or "
                        "the AZURE_* variables", reason="credential")
    if isinstance(exc, HttpResponseError) and status is not None:
        return ArmError(f"ARM answered {status} listing {what}: {_why(exc)}", reason="failed", status=status)
    if isinstance(exc, ServiceRequestError):
        return ArmError(f"cannot reach Azure Resource Manager listing {what}: {_why(exc)}", reason="network")
    return ArmError(f"cannot list {what}: {_why(exc)}", reason="credential"
                    if "credential" in type(exc).__name__.lower() else "failed")


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return float(str(headers.get("retry-after")))
    except (TypeError, ValueError):
        return None


def _why(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _resource_group(resource_id: str) -> str:
    parts = resource_id.split("/")
    lower = [p.lower() for p in parts]
    return parts[lower.index("resourcegroups") + 1]


def _deployment(sub: str, rg: str, account: Any, subdomain: str | None, d: Any) -> ArmDeployment:
    props = d.properties
    model = props.model if props else None
    extra: Mapping[str, Any] = (getattr(props, "additional_properties", None) or {}) if props else {}
    limits = tuple(RateLimit(r.key or "", float(r.renewal_period or 60), float(r.count or 0))
                   for r in (props.rate_limits or [] if props else []))
    return ArmDeployment(
        subscription=sub, resource_group=rg, account=account.name, location=account.location or "",
        subdomain=subdomain, account_tags=dict(account.tags or {}), name=d.name,
        model_format=(model.format or "") if model else "", model_name=(model.name or "") if model else "",
        model_version=(model.version or "") if model else "",
        sku=d.sku.name if d.sku else "", capacity=d.sku.capacity if d.sku else None,
        current_capacity=props.current_capacity if props else None,
        provisioning_state=str(props.provisioning_state or "") if props else "",
        state=str(extra["deploymentState"]) if extra.get("deploymentState") else None,
        rate_limits=limits)


def _catalog(loc: str, m: Any) -> CatalogModel | None:
    model = m.model
    if model is None or not model.name:
        return None
    retirement = None
    inference = model.deprecation.inference if model.deprecation else None
    if inference:
        with contextlib.suppress(ValueError):
            retirement = datetime.fromisoformat(str(inference).replace("Z", "+00:00")).date()
    return CatalogModel(loc, model.name, model.version or "", model.lifecycle_status, retirement)


def _quota(sub: str, loc: str, u: Any) -> Quota:
    name = u.name.value if u.name else ""
    return Quota(sub, loc, name or "", float(u.current_value or 0), float(u.limit or 0), u.unit or "")


def arm_credential(d: Discovery) -> Any:
    """The monitor's identity for ARM (and for the discovered deployments' canaries)."""
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    extra: dict[str, Any] = {"connection_verify": d.ca_file} if d.ca_file else {}
    if d.credential == "managed_identity" or d.client_id:
        return ManagedIdentityCredential(client_id=d.client_id, **extra)
    return DefaultAzureCredential(**extra)
