"""Checks of a validated Config that span several keys; each problem points at the key to change."""

from __future__ import annotations

import re
from collections.abc import Iterator

from monitor.errors import ConfigProblem

from .models import Config, Deployment, Resource
from .yamlsource import Document
from .yamlsource import Path as KeyPath

_RESOURCE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")


def rules(cfg: Config, doc: Document) -> Iterator[ConfigProblem]:
    """Checks that span several keys; each problem points at the key to change."""
    yield from _email_rules(cfg, doc)
    if not cfg.resources and cfg.discovery is None:
        yield doc.problem(("resources",), "required key is missing (list resources, or add a discovery "
                                          "section)")
    if cfg.discovery is not None:
        yield from _discovery_rules(cfg, doc)
    seen_resources: dict[str, int] = {}
    said: set[KeyPath] = set()  # a bad `defaults` pair is reported once, not once per deployment
    for i, res in enumerate(cfg.resources):
        at: KeyPath = ("resources", i)
        res_name = doc.as_written((*at, "name"), res.name)  # as written: never a ${VAR}'s value
        if res.name in seen_resources:
            first = seen_resources[res.name]
            msg = f'duplicate resource name "{res_name}" (also resources[{first}])'
            yield doc.problem((*at, "name"), msg)
        seen_resources.setdefault(res.name, i)
        yield from _endpoint_rules(res, doc, at)
        if res.auth is None or (res.auth.api_key is None) == (res.auth.entra is None):
            both = res.auth is not None and res.auth.api_key is not None
            why = "set only one of" if both else "set exactly one of"
            from_env = doc.empty_vars.get((*at, "auth", "api_key"))
            env_note = f" ({from_env} is empty)" if from_env else ""
            yield doc.problem((*at, "auth"), f"{why} api_key or entra{env_note}")
        elif res.auth.api_key is not None and not res.auth.api_key.reveal().strip():
            yield doc.problem((*at, "auth", "api_key"), "must not be empty")
        seen: dict[str, int] = {}
        for j, dep in enumerate(res.deployments):
            dat: KeyPath = (*at, "deployments", j)
            if dep.name in seen:
                dep_name = doc.as_written((*dat, "name"), dep.name)
                yield doc.problem((*dat, "name"), f'duplicate deployment name "{dep_name}" in resource '
                                                  f'"{res_name}" (also deployments[{seen[dep.name]}])')
            seen.setdefault(dep.name, j)
            s = dep.settings(cfg.defaults)
            if s.interval < s.timeout:
                where = _interval_key(dep, dat, doc)
                if where not in said:
                    said.add(where)
                    yield doc.problem(where, f"interval ({s.interval:g}s) is shorter than the timeout "
                                             f"({s.timeout:g}s); a canary could overlap the next one")


def _email_rules(cfg: Config, doc: Document) -> Iterator[ConfigProblem]:
    e = cfg.email
    if e.acs is not None and (e.acs.connection_string is None) == (e.acs.endpoint is None):
        yield doc.problem(("email", "acs"), "set exactly one of connection_string or endpoint")
    if not cfg.reports.weekly.enabled:
        return
    weekly: KeyPath = ("reports", "weekly")
    if not cfg.reports.weekly.recipients:
        yield doc.problem((*weekly, "recipients"), "the weekly report is enabled but has no recipients")
    if not e.sender:
        yield doc.problem(("email", "sender"), "the weekly report is enabled: set the sender address")
    if (e.smtp is None) == (e.acs is None):
        yield doc.problem(("email",), "the weekly report is enabled: configure exactly one of smtp or acs")


def _interval_key(dep: Deployment, at: KeyPath, doc: Document) -> KeyPath:
    """The key to change when interval < timeout: the one written closest to the deployment."""
    if dep.interval is not None:
        return (*at, "interval")
    if dep.timeout is not None:
        return (*at, "timeout")
    if ("defaults", "timeout") in doc.lines and ("defaults", "interval") not in doc.lines:
        return ("defaults", "timeout")
    return ("defaults", "interval")


def _endpoint_rules(res: Resource, doc: Document, at: KeyPath) -> Iterator[ConfigProblem]:
    if res.resource is not None and res.base_url is not None:
        yield doc.problem((*at, "base_url"), "resource and base_url are mutually exclusive; keep one")
    elif res.resource is None and res.base_url is None:
        endpoint_keys = (("resource",), ("base_url",))
        names = [v for k, v in doc.empty_vars.items() if k[:2] == at and k[2:] in endpoint_keys]
        note = f" ({' and '.join(names)} {'are' if len(names) > 1 else 'is'} empty or unset)" if names else ""
        yield doc.problem(at, f"set exactly one of resource or base_url{note}")
    elif res.resource is not None and not _RESOURCE_NAME.fullmatch(res.resource):
        yield doc.problem(
            (*at, "resource"),
            "expected an Azure resource name like my-foundry (letters, digits, hyphens), "
            f'got "{doc.as_written((*at, "resource"), res.resource)}"; put a URL under base_url',
        )
    elif res.base_url is not None and not re.match(r"https?://[^/\s]+", res.base_url):
        yield doc.problem(
            (*at, "base_url"),
            "expected a URL like https://NAME.services.ai.azure.com/anthropic/, "
            f'got "{doc.as_written((*at, "base_url"), res.base_url)}"',
        )


def _discovery_rules(cfg: Config, doc: Document) -> Iterator[ConfigProblem]:
    d = cfg.discovery
    assert d is not None
    at: KeyPath = ("discovery",)
    for i, sub in enumerate(d.subscriptions):
        if not _GUID.fullmatch(sub.strip()):
            written = doc.as_written((*at, "subscriptions", i), sub)
            yield doc.problem((*at, "subscriptions", i), "expected a subscription id (a GUID like "
                              f'00000000-0000-0000-0000-000000000000), got "{written}"')
    if not re.match(r"https://[^/\s]+", d.arm_endpoint):
        written = doc.as_written((*at, "arm_endpoint"), d.arm_endpoint)
        yield doc.problem((*at, "arm_endpoint"), "expected an https URL (bearer tokens go over https only), "
                                                 f'got "{written}"')
    if d.endpoint is not None and not re.match(r"https?://[^/\s]+", d.endpoint):
        written = doc.as_written((*at, "endpoint"), d.endpoint)
        yield doc.problem((*at, "endpoint"), "expected a URL like https://{subdomain}.services.ai.azure.com/"
                                             f'anthropic/, got "{written}"')
    said: set[KeyPath] = set()
    for i, o in enumerate(d.overrides):
        interval = o.interval or cfg.defaults.interval
        timeout = o.timeout or cfg.defaults.timeout
        where: KeyPath = (*at, "overrides", i, "interval" if o.interval is not None else "timeout")
        if interval < timeout and (o.interval is not None or o.timeout is not None) and where not in said:
            said.add(where)
            yield doc.problem(where, f"interval ({interval:g}s) is shorter than the timeout ({timeout:g}s); "
                                     "a canary could overlap the next one")


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
