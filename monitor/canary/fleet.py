"""The clients of a fleet of canaries: the targets of a config (or one shard of it), and per resource one
httpx transport (connection pool, `transport.CanaryTransport`) and one credential."""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from monitor.config import Config, Resource

from . import probe
from .auth import ApiKeyAuth, AuthProvider, EntraAuth, entra_credential
from .run import Target
from .transport import CanaryTransport

KEEPALIVE_S = 60.0
POOL_PER_RESOURCE = 64


@dataclass
class Fleet:
    """Everything needed to probe: one httpx transport (connection pool) and one credential per resource."""

    targets: list[Target]
    transports: dict[str, httpx.AsyncBaseTransport] = field(default_factory=dict)
    auths: dict[str, AuthProvider] = field(default_factory=dict)
    closed: bool = False
    by_key: dict[tuple[str, str], Target] = field(init=False)  # the targets by (resource, deployment)

    def __post_init__(self) -> None:
        self.by_key = {t.key: t for t in self.targets}

    async def aclose(self) -> None:
        self.closed = True
        for transport in self.transports.values():
            await transport.aclose()
        for auth in self.auths.values():
            await auth.close()


def in_shard(resource: str, deployment: str, shard: tuple[int, int] | None) -> bool:
    """Stable share of deployments for replica i of n: the same on every host and every run."""
    if shard is None:
        return True
    digest = hashlib.sha256(f"{resource}/{deployment}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard[1] == shard[0]


def build_targets(cfg: Config, only: set[str] | None = None,
                  shard: tuple[int, int] | None = None) -> list[Target]:
    targets = []
    names: dict[str, tuple[str, ...]] = {}  # per resource, shared by its targets (not one copy each)
    for res, dep, s in cfg.targets():
        if (only is not None and dep.name not in only) or not in_shard(res.name, dep.name, shard):
            continue
        req = probe.Request.build(res.name, dep.name, res.messages_url, prompt=s.prompt,
                                  max_tokens=s.max_tokens, stream=s.stream, timeout=s.timeout)
        budget = dep.budget.monthly_usd if dep.budget and dep.budget.monthly_usd else None
        if budget is None and res.budget and res.budget.monthly_usd:
            budget = res.budget.monthly_usd / len(res.deployments)  # a resource budget is shared evenly
        if res.name not in names:
            names[res.name] = tuple(d.name for d in res.deployments)
        targets.append(Target(res.name, dep.name, dep.model_id, s, req, budget, names[res.name]))
    return targets


def build_auth(res: Resource) -> AuthProvider:
    assert res.auth is not None  # config validation guarantees it
    if res.auth.entra is not None:
        return EntraAuth(entra_credential(res.auth.entra.client_id), res.auth.entra.scope)
    assert res.auth.api_key is not None
    return ApiKeyAuth(res.auth.api_key, res.api_key_header)


def build_transport(url: str, pool: int = POOL_PER_RESOURCE) -> CanaryTransport:
    """The connection pool for one resource: httpx's transport interface on aiohttp (`transport`), used
    without an ``httpx.AsyncClient``: the client's cookie, redirect, auth and header-merging layers do
    nothing for a canary and cost a quarter of its CPU (bench/daemon_bench.py). What the client would take
    from the environment is kept: the proxy (HTTPS_PROXY, ALL_PROXY, NO_PROXY) here, and SSL_CERT_FILE /
    SSL_CERT_DIR in the transport."""
    # keep idle connections a minute (httpx's default is 5 s): with intervals of a few seconds or more,
    # every canary would otherwise pay a new TCP + TLS handshake and report it as Foundry's latency
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=KEEPALIVE_S)
    return CanaryTransport(limits=limits, proxy=environment_proxy(url))


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (as curl and httpx read it), or None."""
    target = httpx.URL(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass(target.host):
        return None
    return proxies.get(target.scheme) or proxies.get("all")


Clients = tuple[httpx.AsyncBaseTransport, AuthProvider]


def build_fleet(cfg: Config, only: set[str] | None = None, shard: tuple[int, int] | None = None,
                max_concurrency: int = POOL_PER_RESOURCE,
                reuse: Callable[[Resource], Clients | None] | None = None) -> Fleet:
    """A connection pool per resource as large as the canaries that may be in flight at once: a canary
    waiting for a pooled connection would spend its timeout queueing and be stored as a timeout.
    ``reuse`` may hand over a resource's clients from the fleet this one replaces (a new transport costs
    tens of milliseconds for its TLS context, a new credential a token request)."""
    fleet = Fleet(build_targets(cfg, only, shard))
    used = {t.resource for t in fleet.targets}
    for res in cfg.resources:
        if res.name in used:
            kept = reuse(res) if reuse is not None else None
            if kept is not None:
                fleet.transports[res.name], fleet.auths[res.name] = kept
                continue
            fleet.transports[res.name] = build_transport(res.messages_url,
                                                         max(POOL_PER_RESOURCE, max_concurrency))
            fleet.auths[res.name] = build_auth(res)
    return fleet
