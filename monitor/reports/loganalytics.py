"""The report source on Log Analytics: the KQL in `kql/*.kql` through azure-monitor-query.

Each query file is bound to the period by prepending `let` statements (`_start`, `_end`, `_tz`, and
the shared `canaries` table from `_canaries.kql`), so the files themselves stay plain, checkable KQL.
A partial answer is used and said so in the report's notes; throttling and errors become one clear
MonitorError naming the query.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from monitor.errors import MonitorError
from monitor.store.rollup import HOUR_S

from .source import Hists, HourRow, KindRow, Period, SourceData, TransitionRow, UsageRow

QUERIES = ("hours", "kinds", "hists", "transitions", "usage")
SUMMARY_QUERIES = ("hours", "hists")  # what the previous period is read for: the comparison
HISTORY_DAYS = 400  # how far back transitions.kql looks for the state a period began in
WORKSPACE_ENV = "FOUNDRY_MONITOR_WORKSPACE_ID"
LOGS_AUDIENCE = "https://api.loganalytics.io"


def kql_text(name: str) -> str:
    return resources.files("monitor.reports").joinpath("kql", f"{name}.kql").read_text(encoding="utf-8")


def bind(name: str, period: Period) -> str:
    """The runnable query: parameters and the shared canaries table, then the file's own text."""
    canaries = _strip_comments(kql_text("_canaries")).strip()
    return (f"let _start = datetime({_kql_time(period.start)});\n"
            f"let _end = datetime({_kql_time(period.end)});\n"
            f"let _tz = {json.dumps(period.timezone)};\n"
            f"let canaries = {canaries};\n"
            f"{kql_text(name)}")


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def _kql_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LogAnalyticsSource:
    name = "log-analytics"

    def __init__(self, workspace_id: str, credential: Any, *, endpoint: str | None = None,
                 **client_options: Any) -> None:
        from azure.monitor.query import LogsQueryClient

        self.workspace_id = workspace_id
        options: dict[str, Any] = {"audience": LOGS_AUDIENCE, "retry_total": 2, **client_options}
        if endpoint:
            options["endpoint"] = endpoint
        self.client = LogsQueryClient(credential, **options)

    def fetch(self, period: Period, *, summary_only: bool = False) -> SourceData:
        notes: list[str] = []
        names = SUMMARY_QUERIES if summary_only else QUERIES
        tables = {name: self._run(name, period, notes) if name in names else [] for name in QUERIES}
        return SourceData(
            hours=[HourRow(_hour(r["hour"]), r["resource"], r["deployment"], r["model"] or "",
                           int(r["canaries"]), int(r["ok"]), int(r["rechecks"]), int(r["input_tokens"]),
                           int(r["output_tokens"]), float(r["cost_usd"]), float(r["tps_sum"]),
                           int(r["tps_n"]))
                   for r in tables["hours"]],
            kinds=[KindRow(r["day"], r["resource"], r["deployment"], r["outcome"], int(r["count"]),
                           r["request_id"] or None, r["apim_request_id"] or None, _epoch(r["example_at"]))
                   for r in tables["kinds"]],
            hists=_hists(tables["hists"]),
            transitions=[TransitionRow(r["resource"], r["deployment"], _epoch(r["at"]), r["from_state"],
                                       r["to_state"], r["cause"] or None, r["hint"] or None,
                                       r["request_id"] or None, r["apim_request_id"] or None)
                         for r in tables["transitions"]],
            usage=None if summary_only else [UsageRow(r["resource"], _num(r["requests"]),
                                                      _num(r["input_tokens"]), _num(r["output_tokens"]))
                                             for r in tables["usage"]],
            notes=tuple(notes))

    def _run(self, name: str, period: Period, notes: list[str]) -> list[dict[str, Any]]:
        from azure.core.exceptions import AzureError, HttpResponseError
        from azure.monitor.query import LogsQueryStatus

        start = period.start - timedelta(days=HISTORY_DAYS) if name == "transitions" else period.start
        try:
            result = self.client.query_workspace(self.workspace_id, bind(name, period),
                                                 timespan=(start, period.end))
        except HttpResponseError as exc:
            if exc.status_code == 429:
                raise MonitorError(f"Log Analytics throttled the {name} query (429 Too Many Requests); "
                                   "wait a minute and run the report again") from None
            raise MonitorError(f"Log Analytics refused the {name} query ({exc.status_code}): "
                               f"{_message(exc)}") from None
        except AzureError as exc:
            raise MonitorError(f"cannot reach Log Analytics for the {name} query: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        if result.status == LogsQueryStatus.PARTIAL:
            err = result.partial_error
            notes.append(f"Partial results from Log Analytics for {name}: "
                         f"{getattr(err, 'code', '')} {getattr(err, 'message', '')}".strip())
            tables = result.partial_data
        else:
            tables = result.tables
        if not tables:
            return []
        table = tables[0]
        columns: list[str] = list(table.columns)
        return [dict(zip(columns, list(row), strict=True)) for row in table.rows]


def _hists(rows: list[dict[str, Any]]) -> Hists:
    out: Hists = {}
    for r in rows:
        hist = out.setdefault((r["day"], r["resource"], r["deployment"], r["metric"]), {})
        hist[int(r["bucket"])] = hist.get(int(r["bucket"]), 0) + int(r["count"])
    return out


def _message(exc: Any) -> str:
    model = getattr(exc, "model", None)
    text = getattr(model, "message", None) or getattr(exc, "message", None) or str(exc)
    return str(text).splitlines()[0][:300]


def _epoch(v: Any) -> float:
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    if isinstance(v, str) and v:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    return 0.0


def _hour(v: Any) -> int:
    return int(_epoch(v) // HOUR_S)


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def credential_for(mode: str, client_id: str | None = None) -> Any:
    """A sync azure-identity credential for the query API (managed identity, or the default chain)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if mode == "managed_identity":
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id)

