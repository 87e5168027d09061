"""The offline KQL checker itself (tests/kql): Microsoft's Kusto language service, run under node, finds
real mistakes against the Log Analytics table schemas and passes valid queries, one process for many."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from .kql import checker
from .kql.checker import SCHEMAS, Diagnostic, available, check, format_errors, grafana_to_kql

_reason = available()
if _reason is not None:
    pytest.skip(_reason, allow_module_level=True)


AVAILABILITY = """\
AppAvailabilityResults
| where TimeGenerated > ago(1d)
| extend probe_kind = tostring(Properties["foundry_monitor.kind"])
| summarize runs = sum(ItemCount), failures = countif(not(Success)), p95 = percentile(DurationMs, 95)
    by probe_kind, Location, bin(TimeGenerated, 1h)
"""


def only(results: dict[str, list[Diagnostic]], name: str) -> Diagnostic:
    diagnostics = results[name]
    assert len(diagnostics) == 1, format_errors(results)
    return diagnostics[0]


def test_valid_availability_query_has_no_diagnostics() -> None:
    assert check({"availability": AVAILABILITY}) == {"availability": []}


def test_misspelt_column_is_an_unknown_column_error_that_names_it() -> None:
    text = AVAILABILITY.replace("percentile(DurationMs", "percentile(DurationMS")
    d = only(check({"typo": text}), "typo")
    assert d["severity"] == "Error"
    assert d["code"] == "KS142"
    assert "'DurationMS'" in d["message"]
    assert text[d["start"] : d["start"] + d["length"]] == "DurationMS"
    assert "DurationMS" in d["excerpt"]


def test_column_of_another_table_is_unknown() -> None:
    # AppMetrics has no Measurements column (the other App* tables do).
    results = check(
        {"metrics": "AppMetrics | project Measurements", "events": "AppEvents | project Measurements"}
    )
    assert only(results, "metrics")["code"] == "KS142"
    assert results["events"] == []


def test_unknown_table_fails() -> None:
    d = only(check({"table": "AppAvailabilityResult | count"}), "table")
    assert d["code"] == "KS204"
    assert "AppAvailabilityResult" in d["message"]


def test_type_error_fails() -> None:
    # DurationMs is real, so comparing it with a datetime is an operator type error.
    d = only(check({"types": "AppRequests | where DurationMs > ago(1h)"}), "types")
    assert d["code"] == "KS106"
    assert "real" in d["message"] and "datetime" in d["message"]


def test_syntax_error_fails() -> None:
    assert only(check({"syntax": "AppTraces | where SeverityLevel >= | count"}), "syntax")["code"] == "KS006"


def test_let_statements_prepended_to_a_query() -> None:
    lets = "let _start = datetime(2026-11-01); let _end = datetime(2026-12-01);\n"
    body = "AppEvents | where TimeGenerated between (_start .. _end) | count"
    results = check({"with_lets": lets + body, "without_lets": body})
    assert results["with_lets"] == []
    # Without the lets the same body does not bind, so the lets are what made it valid.
    assert {d["message"] for d in results["without_lets"]} >= {
        "The name '_start' does not refer to any known column, table, variable or function.",
    }


GRAFANA_PANEL = """\
AppAvailabilityResults
| where $__timeFilter(TimeGenerated)
| where tostring(Properties["foundry_monitor.deployment"]) == $deployment
| where $__contains(Location, $location)
| summarize failures = countif(Success == false) by bin(TimeGenerated, $__interval), Name
| order by TimeGenerated asc
"""


def test_grafana_panel_query_passes_after_macro_replacement() -> None:
    kql = grafana_to_kql(GRAFANA_PANEL)
    assert "$" not in kql
    assert "TimeGenerated between (datetime(2026-01-01) .. datetime(2026-01-02))" in kql
    assert '== "x"' in kql and 'Location in ("x")' in kql and "bin(TimeGenerated, 1h)" in kql
    results = check({"panel": kql, "raw": GRAFANA_PANEL})
    assert results["panel"] == [], format_errors(results)
    assert results["raw"] != []  # the unreplaced macros are not KQL


def test_grafana_variables_inside_strings_and_kql_dollar_names() -> None:
    text = (
        "AppRequests | where Name == \"$op\" and AppRoleName == '${role}' // $comment\n"
        "| where $__timeFilter() and TimeGenerated < $__timeTo()\n"
        "| join kind=inner (AppDependencies | where Target == [[target]]) on $left.Id == $right.ParentId"
    )
    kql = grafana_to_kql(text)
    assert "Name == \"x\" and AppRoleName == 'x' // $comment" in kql
    assert "TimeGenerated between (datetime(2026-01-01) .. datetime(2026-01-02))" in kql
    assert "TimeGenerated < datetime(2026-01-02)" in kql
    assert 'Target == "x"' in kql and "on $left.Id == $right.ParentId" in kql
    assert check({"q": kql}) == {"q": []}


def test_many_queries_in_one_node_process(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        runs.append(args)
        return real_run(args, **kwargs)

    monkeypatch.setattr(checker.subprocess, "run", counting_run)
    queries = {
        f"ok{i}": f"{table} | where TimeGenerated > ago({i + 1}h) | count" for i, table in enumerate(SCHEMAS)
    }
    queries["bad"] = "AzureMetrics | summarize avg(Averag) by MetricName"
    results = check(queries)
    assert len(runs) == 1 and runs[0][-1].endswith("check.js")
    assert list(results) == list(queries)
    assert {name for name, diagnostics in results.items() if diagnostics} == {"bad"}
    assert only(results, "bad")["code"] == "KS142"


def test_schemas_bind_typical_queries_of_every_table() -> None:
    queries = {
        "AppAvailabilityResults": "AppAvailabilityResults | where Success and Size > 0 "
        "| project Location, Message",
        "AppDependencies": "AppDependencies | where not(Success) and DurationMs > 100 "
        "| summarize count() by Target, DependencyType, ResultCode",
        "AppEvents": "AppEvents | extend v = todouble(Measurements['tokens']) "
        "| summarize sum(v) by AppRoleName",
        "AppMetrics": "AppMetrics | summarize total = sum(Sum), n = sum(ItemCount), hi = max(Max) by Name",
        "AppTraces": "AppTraces | where SeverityLevel >= 3 and Message has 'timeout' | project OperationId",
        "AppRequests": "AppRequests | summarize percentile(DurationMs, 95) by Url, ResultCode, Success",
        "AppExceptions": "AppExceptions | extend t = tostring(Details[0].type) "
        "| project ExceptionType, ProblemId",
        "AzureMetrics": "AzureMetrics | where MetricName == 'TotalTokens' and isnotempty(_ResourceId) "
        "| summarize sum(Total), avg(Average) by Resource, UnitName, bin(TimeGenerated, 1h)",
    }
    assert queries.keys() == SCHEMAS.keys()
    results = check(queries)
    assert results == {name: [] for name in queries}, format_errors(results)
    assert "Measurements" not in SCHEMAS["AppMetrics"]


def test_malformed_schema_is_a_runtime_error_not_a_pass() -> None:
    with pytest.raises(RuntimeError, match="unknown type for Name"):
        check({"q": "T | count"}, schemas={"T": "(TimeGenerated:datetime, Name:strng)"})
