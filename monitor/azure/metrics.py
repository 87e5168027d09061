"""Azure's own view of a Foundry resource: its platform metrics per deployment, read on ARM
(`{resourceId}/providers/Microsoft.Insights/metrics`) through azure-mgmt-monitor.

Three calls per resource and period, each split by deployment (`ModelDeploymentName eq '*'`):
requests by status code (Total), tokens (Total), availability and normalized TTFT (Average with its
Count, so days can be weighted). The prompt-cache metrics get a call of their own: a resource that
does not have them answers 400 for the whole call, and that must not cost the other figures.

Throttling (429) is retried a bounded number of times after `retry-after` (sleep injected); a refusal
(403: no Monitoring Reader role, 404: wrong resource ID, anything else) becomes one plain note on the
result, never an exception: a report is still built from what could be read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
NAMESPACE = "Microsoft.CognitiveServices/accounts"
DEPLOYMENT = "ModelDeploymentName"
STATUS = "StatusCode"

REQUESTS = "ModelRequests"
TOKENS = ("InputTokens", "OutputTokens")
CACHE = ("cacheReadInputTokens", "ephemeral5mInputTokens", "ephemeral1hInputTokens")
AVERAGES = ("ModelAvailabilityRate", "NormalizedTimeToFirstToken")
TOP = 1000  # series per call (Azure's default is 10: a resource with many deployments would lose some)

MAX_TRIES = 4  # a throttled call is tried this often in all
MAX_WAIT_S = 120.0  # and waited on for at most this long in all

_RESOURCE = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/[^/]+/providers/[^/]+/[^/]+/([^/]+)$", re.I)


@dataclass(frozen=True, slots=True)
class Point:
    """One metric value of one deployment (and status code, for requests) in one time grain."""

    metric: str
    deployment: str
    status: str | None  # the StatusCode dimension (ModelRequests only)
    at: float  # start of the grain, epoch seconds
    value: float  # total, or average for AVERAGES
    count: float | None = None  # AVERAGES: how many measurements the average is over


@dataclass(frozen=True, slots=True)
class ResourceMetrics:
    resource_id: str
    points: tuple[Point, ...]
    missing: tuple[str, ...] = ()  # metrics this resource does not have (absent, never 0)
    note: str | None = None  # what could not be read, and what to do about it
    grain_s: float = 3600.0  # the time grain of the points

    @property
    def read(self) -> bool:
        """Whether the request counts were read (else every figure of the resource is unknown)."""
        return not (self.note and REQUESTS in self.missing)


def account_name(resource_id: str) -> str:
    m = _RESOURCE.match(resource_id)
    return m.group(2) if m else resource_id


def grain(start: datetime, end: datetime) -> timedelta:
    """PT1H up to 31 days (so local days and the last day's hours can be cut from it), else P1D."""
    return timedelta(hours=1) if end - start <= timedelta(days=31) else timedelta(days=1)


class _Refused(Exception):
    def __init__(self, note: str, *, resource_wide: bool = True) -> None:
        super().__init__(note)
        self.note = note
        self.resource_wide = resource_wide  # every other call of this resource would get the same answer


class MetricsReader:
    """Reads platform metrics with one MonitorManagementClient per subscription (sync; run it in a
    thread from async code). ``sleep`` is what waits out a 429's retry-after."""

    def __init__(self, credential: Any, *, endpoint: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, **client_options: Any) -> None:
        self.credential = credential
        self.endpoint = (endpoint or ARM_ENDPOINT).rstrip("/")
        self.sleep = sleep
        self.options = {"retry_total": 0, **client_options}  # 429s are retried here, bounded
        self._clients: dict[str, Any] = {}
        self.waited_s = 0.0

    def _client(self, subscription: str) -> Any:
        from azure.mgmt.monitor import MonitorManagementClient

        if subscription not in self._clients:
            self._clients[subscription] = MonitorManagementClient(
                self.credential, subscription, base_url=self.endpoint, credential_scopes=[ARM_SCOPE],
                **self.options)
        return self._clients[subscription]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def read(self, resource_id: str, start: datetime, end: datetime) -> ResourceMetrics:
        m = _RESOURCE.match(resource_id)
        if m is None:
            return ResourceMetrics(resource_id, (), (REQUESTS,), f"not an Azure resource ID: {resource_id}")
        client = self._client(m.group(1))
        step = grain(start, end)
        span = f"{_iso(start)}/{_iso(end)}"
        points: list[Point] = []
        missing: list[str] = []
        notes: list[str] = []
        calls: list[tuple[tuple[str, ...], str, str, bool]] = [
            ((REQUESTS,), "Total", f"{DEPLOYMENT} eq '*' and {STATUS} eq '*'", True),
            (TOKENS, "Total", f"{DEPLOYMENT} eq '*'", True),
            (AVERAGES, "Average,Count", f"{DEPLOYMENT} eq '*'", True),
            (CACHE, "Total", f"{DEPLOYMENT} eq '*'", False),
        ]
        for i, (names, aggregation, flt, needed) in enumerate(calls):
            try:
                response = self._call(client, resource_id, span, step, names, aggregation, flt)
            except _Refused as exc:
                missing += names
                if (needed or exc.resource_wide) and exc.note not in notes:
                    notes.append(exc.note)
                if exc.resource_wide:
                    missing += [n for later in calls[i + 1:] for n in later[0]]
                    break
                continue
            got, absent = _points(response, aggregation)
            points += got
            missing += absent
            if needed and absent:  # a partial answer: used, and said
                notes.append(f"Azure returned no {', '.join(absent)} for {account_name(resource_id)}: "
                             "shown as no data.")
        return ResourceMetrics(resource_id, tuple(points), tuple(dict.fromkeys(missing)),
                               " ".join(notes) or None, step.total_seconds())

    def _call(self, client: Any, resource_id: str, span: str, step: timedelta, names: tuple[str, ...],
              aggregation: str, flt: str) -> Any:
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
        )

        name = account_name(resource_id)
        waited, tries = 0.0, 0
        while True:
            tries += 1
            try:
                return client.metrics.list(
                    resource_id.lstrip("/"), timespan=span, interval=_interval(step),
                    metricnames=",".join(names),
                    aggregation=aggregation, filter=flt, top=TOP, metricnamespace=NAMESPACE)
            except ClientAuthenticationError as exc:
                if getattr(exc, "status_code", None) == 403:
                    raise _Refused(_forbidden(name, resource_id)) from None
                raise _Refused(f"Could not sign in to Azure Resource Manager for the metrics of {name}: "
                               f"{_first_line(exc)}. Check reports.metrics.credential.") from None
            except HttpResponseError as exc:
                _release(exc)
                status = exc.status_code
                if status == 429:
                    wait = _retry_after(exc, default=min(2.0 ** tries, 30.0))
                    if tries < MAX_TRIES and waited + wait <= MAX_WAIT_S:
                        self.sleep(wait)
                        waited += wait
                        self.waited_s += wait
                        continue
                    raise _Refused(f"Azure Monitor throttled the metrics of {name} (429 Too Many Requests) "
                                   f"{tries} times ({waited:.0f}s waited); its figures are missing: run "
                                   "the report again in a few minutes.") from None
                if status == 403:
                    raise _Refused(_forbidden(name, resource_id)) from None
                if status == 404:
                    raise _Refused(f"Azure has no resource {resource_id} (404 {_code(exc)}): check "
                                   "resources[].azure_resource_id (subscription GUID, resource group and "
                                   "account name, as in the portal's JSON view).") from None
                raise _Refused(f"Azure Monitor refused the metrics {', '.join(names)} of {name} "
                               f"({status} {_code(exc)}): {_first_line(exc)}", resource_wide=False) from None
            except AzureError as exc:
                raise _Refused(f"Cannot reach Azure Resource Manager ({self.endpoint}) for the metrics of "
                               f"{name}: {type(exc).__name__}: {_first_line(exc)}") from None


def _release(exc: Any) -> None:
    """Give a refused call's connection back (a 404 is raised before its body is read)."""
    response = getattr(exc, "response", None)
    for target in (response, getattr(response, "internal_response", None)):
        close = getattr(target, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001, S110 - best effort: the connection is dropped either way
                pass


def _forbidden(name: str, resource_id: str) -> str:
    return (f"Azure refused the platform metrics of {name} (403): give the monitor's identity the "
            f"Monitoring Reader role on {resource_id} (or its resource group).")


def _points(response: Any, aggregation: str) -> tuple[list[Point], list[str]]:
    out: list[Point] = []
    absent: list[str] = []
    average = aggregation.startswith("Average")
    for metric in response.value or ():
        name = metric.name.value
        if (metric.error_code or "Success") != "Success":
            absent.append(name)
            continue
        for series in metric.timeseries or ():
            dims = {(md.name.value or "").lower(): md.value for md in series.metadatavalues or ()}
            deployment = dims.get(DEPLOYMENT.lower())
            if not deployment:
                continue
            for v in series.data or ():
                value = v.average if average else v.total
                if value is None:  # a grain without data: absent, not 0
                    continue
                out.append(Point(name, deployment, dims.get(STATUS.lower()), _epoch(v.time_stamp),
                                 float(value), None if v.count is None else float(v.count)))
    return out, absent


def _retry_after(exc: Any, default: float) -> float:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for key in ("retry-after-ms", "x-ms-retry-after-ms"):
        if headers.get(key):
            try:
                return max(0.0, float(headers[key]) / 1000.0)
            except ValueError:
                pass
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return default


def _code(exc: Any) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "code", None) or getattr(exc, "reason", None) or "").strip()


def _first_line(exc: Any) -> str:
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    return str(text).splitlines()[0][:240] if str(text) else type(exc).__name__


def _interval(step: timedelta) -> str:
    return "P1D" if step >= timedelta(days=1) else "PT1H"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(v: Any) -> float:
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()


def credential_for(mode: str, client_id: str | None = None) -> Any:
    """A sync azure-identity credential for ARM (managed identity, or the default chain)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if mode == "managed_identity":
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id)
