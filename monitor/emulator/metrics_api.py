"""Azure Monitor's metrics API on ARM for the emulator as one Foundry resource, computed from its log.

``GET /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.CognitiveServices/accounts/{a}/providers/
Microsoft.Insights/metrics?timespan=&interval=&metricnames=&aggregation=&$filter=&top=&api-version=``
answers what Azure's REST API (2018-01-01 .. 2024-02-01) answers: one entry per metric with its time
series split by the dimensions the filter names with ``eq '*'``. Every figure is counted from the log of
what the emulator served (canaries, clients and background traffic), by deployment, status and grain.

Auth is a bearer token the emulator's identity endpoint issued for https://management.azure.com.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .state import ARM_AUDIENCES, Emulator, LogEntry

PATH = ("/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.CognitiveServices/"
        "accounts/{account}/providers/Microsoft.Insights/metrics")
API_VERSIONS = ("2018-01-01", "2019-07-01", "2021-05-01", "2023-10-01", "2024-02-01")
_REQUEST_DIMS = ("ApiName", "OperationName", "Region", "StreamType", "ModelDeploymentName", "ModelName",
                 "ModelVersion", "StatusCode")
_USAGE_DIMS = ("ApiName", "Region", "ModelDeploymentName", "ModelName", "ModelVersion")
_LATENCY_DIMS = _REQUEST_DIMS[:-1]


@dataclass(frozen=True)
class _Metric:
    display: str
    unit: str
    dims: tuple[str, ...]
    value: Callable[[LogEntry], float | None]  # one request's contribution (None: none)
    average: bool = False  # Average over requests (else Total)


def _tokens(attr: str) -> Callable[[LogEntry], float | None]:
    def value(e: LogEntry) -> float | None:
        v = getattr(e, attr)
        return None if v is None else float(v)
    return value


def _ms(e: LogEntry, end: float | None) -> float | None:
    return None if end is None else (end - e.t_arrival) * 1000.0


METRICS: dict[str, _Metric] = {
    "ModelRequests": _Metric("Model Requests", "Count", _REQUEST_DIMS, lambda e: 1.0),
    "ModelAvailabilityRate": _Metric("Model Availability Rate", "Percent", _LATENCY_DIMS,
                                     lambda e: 0.0 if (e.status or 0) >= 500 else 100.0, average=True),
    "InputTokens": _Metric("Input Tokens", "Count", _USAGE_DIMS, _tokens("input_tokens")),
    "OutputTokens": _Metric("Output Tokens", "Count", _USAGE_DIMS, _tokens("output_tokens")),
    "TotalTokens": _Metric("Total Tokens", "Count", _USAGE_DIMS, lambda e: None
                           if e.input_tokens is None and e.output_tokens is None
                           else float((e.input_tokens or 0) + (e.output_tokens or 0))),
    "cacheReadInputTokens": _Metric("Cache Read Input Tokens", "Count", _USAGE_DIMS,
                                    _tokens("cache_read_tokens")),
    "ephemeral5mInputTokens": _Metric("Ephemeral 5m Input Tokens", "Count", _USAGE_DIMS,
                                      _tokens("cache_write_tokens")),
    "ephemeral1hInputTokens": _Metric("Ephemeral 1h Input Tokens", "Count", _USAGE_DIMS, lambda e: None),
    "NormalizedTimeToFirstToken": _Metric("Normalized Time to First Byte", "MilliSeconds", _LATENCY_DIMS,
                                          lambda e: _ms(e, e.t_first_token), average=True),
    "TimeToLastByte": _Metric("Time to Last Byte", "MilliSeconds", _LATENCY_DIMS,
                              lambda e: _ms(e, e.t_last_byte) if e.status == 200 else None, average=True),
}

_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_CLAUSE = re.compile(r"^\s*(\w+)\s+eq\s+'([^']*)'\s*$", re.I)


class _Bad(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def metrics(emu: Emulator, request: Request) -> Response:
    authz = request.headers.get("authorization", "")
    scheme, _, token = authz.partition(" ")
    if scheme.lower() != "bearer" or not emu.token_valid(token.strip(), ARM_AUDIENCES):
        return _error(401, "InvalidAuthenticationToken", "The access token is invalid, expired, or not for "
                      "https://management.azure.com.")
    if request.query_params.get("api-version") not in API_VERSIONS:
        return _error(400, "InvalidApiVersionParameter",
                      f"The api-version '{request.query_params.get('api-version')}' is invalid.")
    azure = emu.scenario.azure
    p = request.path_params
    rid = (f"/subscriptions/{p['subscription']}/resourceGroups/{p['group']}/providers/"
           f"Microsoft.CognitiveServices/accounts/{p['account']}")
    if p["account"].lower() != azure.account.lower():
        return _error(404, "ResourceNotFound", f"The Resource 'Microsoft.CognitiveServices/accounts/"
                      f"{p['account']}' under resource group '{p['group']}' was not found.")
    if azure.forbidden:
        return _error(403, "AuthorizationFailed", "The client does not have authorization to perform action "
                      f"'microsoft.insights/metrics/read' over scope '{rid}/providers/Microsoft.Insights'.")
    if emu.take_throttle():
        return _error(429, "TooManyRequests", "Too many requests; retry after the given seconds.",
                      {"retry-after": f"{azure.retry_after:g}"})
    try:
        body = answer(emu, rid, dict(request.query_params))
    except _Bad as exc:
        return _error(exc.status, exc.code, exc.message)
    return JSONResponse(body)


def answer(emu: Emulator, rid: str, q: dict[str, str]) -> dict[str, Any]:
    start, end = _timespan(q.get("timespan"))
    step = _duration(q.get("interval") or "PT1M")
    names = [n.strip() for n in (q.get("metricnames") or "ModelRequests").split(",") if n.strip()]
    aggs = {a.strip().lower() for a in (q.get("aggregation") or "").split(",") if a.strip()}
    top = int(q.get("top") or 10)
    split, fixed = _filter(q.get("$filter") or q.get("filter") or "")
    for name in names:
        if name not in METRICS:
            raise _Bad(400, "BadRequest", f"Failed to find metric configuration for provider: "
                       f"Microsoft.CognitiveServices, resource Type: accounts, metric: {name}, Valid "
                       f"metrics: {','.join(METRICS)}")
        wrong = [d for d in [*split, *fixed] if d not in {x.lower() for x in METRICS[name].dims}]
        if wrong:
            raise _Bad(400, "BadRequest", f"Metric: {name} does not support requested dimension "
                       f"combination: {','.join(wrong)}")
    models = {d.name: d.model for d in emu.current().deployments}
    region = emu.scenario.azure.region
    served = [e for e in emu.entries() if e.deployment and e.status is not None
              and e.path == "/anthropic/v1/messages" and start <= e.t_arrival < end]
    return {
        "cost": len(served), "timespan": f"{_iso(start)}/{_iso(end)}", "interval": _fmt(step),
        "namespace": "Microsoft.CognitiveServices/accounts", "resourceregion": region,
        "value": [_one(rid, n, served, start, step, aggs, split, fixed, top, models, region) for n in names],
    }


def _dims(e: LogEntry, models: dict[str, str], region: str) -> dict[str, str]:
    return {"apiname": "messages", "operationname": "ChatCompletions", "region": region,
            "streamtype": "Streaming" if e.stream else "Non-Streaming",
            "modeldeploymentname": e.deployment or "", "modelname": models.get(e.deployment or "", ""),
            "modelversion": "", "statuscode": str(e.status)}


def _one(rid: str, name: str, served: Iterable[LogEntry], start: float, step: float, aggs: set[str],
         split: list[str], fixed: dict[str, str], top: int, models: dict[str, str],
         region: str) -> dict[str, Any]:
    m = METRICS[name]
    groups: dict[tuple[str, ...], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in served:
        dims = _dims(e, models, region)
        if any(dims[d] != v for d, v in fixed.items()):
            continue
        v = m.value(e)
        if v is None:
            continue
        groups[tuple(dims[d] for d in split)][int((e.t_arrival - start) // step)].append(v)
    wanted = aggs or {"average" if m.average else "total"}
    series = []
    for key, grains in sorted(groups.items())[:top]:
        data = []
        for k, values in sorted(grains.items()):
            point: dict[str, Any] = {"timeStamp": _iso(start + k * step)}
            if "total" in wanted:
                point["total"] = sum(values)
            if "average" in wanted:
                point["average"] = sum(values) / len(values)
            if "count" in wanted:
                point["count"] = float(len(values))
            if "minimum" in wanted:
                point["minimum"] = min(values)
            if "maximum" in wanted:
                point["maximum"] = max(values)
            data.append(point)
        series.append({"metadatavalues": [{"name": {"value": d, "localizedValue": d}, "value": v}
                                          for d, v in zip(split, key, strict=True)], "data": data})
    return {"id": f"{rid}/providers/Microsoft.Insights/metrics/{name}", "type": "Microsoft.Insights/metrics",
            "name": {"value": name, "localizedValue": m.display}, "displayDescription": m.display,
            "unit": m.unit, "errorCode": "Success", "timeseries": series}


def _filter(text: str) -> tuple[list[str], dict[str, str]]:
    """`A eq '*' and B eq 'x'` -> (["a"], {"b": "x"}) with lower-case dimension names."""
    split: list[str] = []
    fixed: dict[str, str] = {}
    if not text.strip():
        return split, fixed
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.I):
        m = _CLAUSE.match(clause)
        if m is None:
            raise _Bad(400, "BadRequest", f"The $filter clause '{clause}' is not supported by the emulator "
                       "(use: Dimension eq 'value' [and ...])")
        if m.group(2) == "*":
            split.append(m.group(1).lower())
        else:
            fixed[m.group(1).lower()] = m.group(2)
    return split, fixed


def _timespan(text: str | None) -> tuple[float, float]:
    if not text or "/" not in text:
        end = datetime.now(UTC)
        return (end - timedelta(hours=1)).timestamp(), end.timestamp()
    a, b = text.split("/", 1)
    try:
        return _parse(a), _parse(b)
    except ValueError:
        raise _Bad(400, "BadRequest", f"Invalid timespan '{text}'") from None


def _parse(text: str) -> float:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _duration(text: str) -> float:
    m = _DURATION.match(text.strip().upper())
    if m is None or not any(m.groups()):
        raise _Bad(400, "BadRequest", f"Invalid interval '{text}'")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return float(d * 86400 + h * 3600 + mi * 60 + s)


def _fmt(seconds: float) -> str:
    s = int(seconds)
    if s % 86400 == 0:
        return f"P{s // 86400}D"
    h, rest = divmod(s, 3600)
    mi, sec = divmod(rest, 60)
    return "PT" + (f"{h}H" if h else "") + (f"{mi}M" if mi else "") + (f"{sec}S" if sec else "")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
