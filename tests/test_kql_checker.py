"""The offline KQL checker itself (tests/kql): Microsoft's Kusto language service, run under node, finds
real mistakes against the Log Analytics table schemas and passes valid queries, one process for many.

Starting node with the language service takes a second or two, so the queries below are checked
together, once per module (which is itself the many-queries-in-one-process case), and each test reads
the verdict on its own queries."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

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


GRAFANA_PANEL = """\
AppAvailabilityResults
| where $__timeFilter(TimeGenerated)
| where tostring(Properties["foundry_monitor.deployment"]) == $deployment
| where $__contains(Location, $location)
| summarize failures = countif(Success == false) by bin(TimeGenerated, $__interval), Name
| order by TimeGenerated asc
"""

GRAFANA_STRINGS_AND_JOIN = (
    "AppRequests | where Name == \"$op\" and AppRoleName == '${role}' // $comment\n"
    "| where $__timeFilter() and TimeGenerated < $__timeTo()\n"
    "| join kind=inner (AppDependencies | where Target == [[target]]) on $left.Id == $right.ParentId"
)

LETS = "let _start = datetime(2026-11-01); let _end = datetime(2026-12-01);\n"
LET_BODY = "AppEvents | where TimeGenerated between (_start .. _end) | count"

# One query per table, using the columns (and their types) that table is documented to have.
PER_TABLE = {
    "AppAvailabilityResults": "AppAvailabilityResults | where Success and Size > 0 "
    "| project Location, Message",
    "AppDependencies": "AppDependencies | where not(Success) and DurationMs > 100 "
    "| summarize count() by Target, DependencyType, ResultCode",
    "AppEvents": "AppEvents | extend v = todouble(Measurements['tokens']) | summarize sum(v) by AppRoleName",
    "AppMetrics": "AppMetrics | summarize total = sum(Sum), n = sum(ItemCount), hi = max(Max) by Name",
    "AppTraces": "AppTraces | where SeverityLevel >= 3 and Message has 'timeout' | project OperationId",
    "AppRequests": "AppRequests | summarize percentile(DurationMs, 95) by Url, ResultCode, Success",
    "AppExceptions": "AppExceptions | extend t = tostring(Details[0].type) "
    "| project ExceptionType, ProblemId",
    "AzureMetrics": "AzureMetrics | where MetricName == 'TotalTokens' and isnotempty(_ResourceId) "
    "| summarize sum(Total), avg(Average) by Resource, UnitName, bin(TimeGenerated, 1h)",
}

QUERIES: dict[str, str] = {
    "availability": AVAILABILITY,
    "typo": AVAILABILITY.replace("percentile(DurationMs", "percentile(DurationMS"),
    "metrics_measurements": "AppMetrics | project Measurements",  # AppMetrics alone has no Measurements
    "events_measurements": "AppEvents | project Measurements",
    "unknown_table": "AppAvailabilityResult | count",
    "type_error": "AppRequests | where DurationMs > ago(1h)",  # real compared with datetime
    "syntax_error": "AppTraces | where SeverityLevel >= | count",
    "with_lets": LETS + LET_BODY,
    "without_lets": LET_BODY,
    "grafana_panel": grafana_to_kql(GRAFANA_PANEL),
    "grafana_panel_raw": GRAFANA_PANEL,
    "grafana_strings_and_join": grafana_to_kql(GRAFANA_STRINGS_AND_JOIN),
    **{f"table_{name}": text for name, text in PER_TABLE.items()},
}


@pytest.fixture(scope="module")
def checked() -> Iterator[tuple[dict[str, list[Diagnostic]], list[list[str]]]]:
    """check(QUERIES) once for the module, and the commands it ran (the checker calls subprocess.run)."""
    runs: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        runs.append(args)
        return real_run(args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess, "run", counting_run)
        results = check(QUERIES)
    yield results, runs


@pytest.fixture
def results(checked: tuple[dict[str, list[Diagnostic]], list[list[str]]]) -> dict[str, list[Diagnostic]]:
    return checked[0]


def only(results: dict[str, list[Diagnostic]], name: str) -> Diagnostic:
    diagnostics = results[name]
    assert len(diagnostics) == 1, format_errors({name: diagnostics})
    return diagnostics[0]


def test_valid_availability_query_has_no_diagnostics(results: dict[str, list[Diagnostic]]) -> None:
    assert results["availability"] == [], format_errors(results)


def test_misspelt_column_is_an_unknown_column_error_that_names_it(
    results: dict[str, list[Diagnostic]],
) -> None:
    d = only(results, "typo")
    assert d["severity"] == "Error"
    assert d["code"] == "KS142"
    assert "'DurationMS'" in d["message"]
    assert QUERIES["typo"][d["start"] : d["start"] + d["length"]] == "DurationMS"
    assert "percentile(DurationMS, 95)" in d["excerpt"]


def test_column_of_another_table_is_unknown(results: dict[str, list[Diagnostic]]) -> None:
    assert only(results, "metrics_measurements")["code"] == "KS142"
    assert results["events_measurements"] == []


def test_unknown_table_fails(results: dict[str, list[Diagnostic]]) -> None:
    d = only(results, "unknown_table")
    assert d["code"] == "KS204"
    assert "'AppAvailabilityResult'" in d["message"]


def test_type_error_fails(results: dict[str, list[Diagnostic]]) -> None:
    d = only(results, "type_error")
    assert d["code"] == "KS106"
    assert "real" in d["message"] and "datetime" in d["message"]


def test_syntax_error_fails(results: dict[str, list[Diagnostic]]) -> None:
    assert only(results, "syntax_error")["code"] == "KS006"


def test_let_statements_prepended_to_a_query(results: dict[str, list[Diagnostic]]) -> None:
    assert results["with_lets"] == [], format_errors(results)
    # Without the lets the same body does not bind, so the lets are what made it valid.
    assert {d["message"] for d in results["without_lets"]} >= {
        "The name '_start' does not refer to any known column, table, variable or function.",
    }


def test_grafana_panel_query_passes_after_macro_replacement(results: dict[str, list[Diagnostic]]) -> None:
    kql = QUERIES["grafana_panel"]
    assert "$" not in kql
    assert "| where TimeGenerated between (datetime(2026-01-01) .. datetime(2026-01-02))\n" in kql
    assert ' == "x"\n' in kql and '| where Location in ("x")\n' in kql and "bin(TimeGenerated, 1h)" in kql
    assert results["grafana_panel"] == [], format_errors(results)
    assert results["grafana_panel_raw"] != []  # unreplaced, the macros are not KQL


def test_grafana_variables_inside_strings_and_kql_dollar_names(results: dict[str, list[Diagnostic]]) -> None:
    kql = QUERIES["grafana_strings_and_join"]
    assert "Name == \"x\" and AppRoleName == 'x' // $comment\n" in kql
    assert "| where TimeGenerated between (datetime(2026-01-01) .. datetime(2026-01-02))" in kql
    assert "and TimeGenerated < datetime(2026-01-02)\n" in kql
    assert 'Target == "x")' in kql and "on $left.Id == $right.ParentId" in kql
    assert results["grafana_strings_and_join"] == [], format_errors(results)


def test_many_queries_in_one_node_process(
    checked: tuple[dict[str, list[Diagnostic]], list[list[str]]],
) -> None:
    results, runs = checked
    assert len(runs) == 1 and runs[0][-1].endswith("check.js"), runs
    assert list(results) == list(QUERIES)
    failing = {name for name, diagnostics in results.items() if diagnostics}
    assert failing == {
        "typo",
        "metrics_measurements",
        "unknown_table",
        "type_error",
        "syntax_error",
        "without_lets",
        "grafana_panel_raw",
    }, format_errors(results)


def test_schemas_bind_typical_queries_of_every_table(results: dict[str, list[Diagnostic]]) -> None:
    assert PER_TABLE.keys() == SCHEMAS.keys()
    per_table = {name: results[f"table_{name}"] for name in PER_TABLE}
    assert per_table == {name: [] for name in PER_TABLE}, format_errors(per_table)
    assert "Measurements" not in SCHEMAS["AppMetrics"]


def test_malformed_schema_is_a_runtime_error_not_a_pass() -> None:
    with pytest.raises(RuntimeError, match="unknown type for Name"):
        check({"q": "T | count"}, schemas={"T": "(TimeGenerated:datetime, Name:strng)"})
