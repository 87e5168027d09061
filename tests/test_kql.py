"""Every KQL query the project ships parses and binds against the Log Analytics schemas (Microsoft's
Kusto language service under Node): the report queries as the Log Analytics source sends them, and the
examples in README. A misspelt column fails here, not in a user's workspace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.reports.build import period_for
from monitor.reports.loganalytics import QUERIES, bind

from .kql.checker import available, check, format_errors
from .report_seed import NOW

reason = available()
if reason is not None:
    pytest.skip(reason, allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent


def readme_queries() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```kusto\n(.*?)```", text, re.S)
    queries: dict[str, str] = {}
    for b, block in enumerate(blocks):
        for q, part in enumerate(re.split(r"\n\s*\n", block.strip())):
            queries[f"README block {b} query {q}"] = part
    return queries


def test_every_report_query_binds_against_the_workspace_schemas() -> None:
    period = period_for(NOW, 30, "Europe/Berlin")
    results = check({name: bind(name, period) for name in QUERIES})
    assert set(results) == set(QUERIES)
    assert not any(results.values()), format_errors(results)


def test_the_readme_kql_examples_bind_too() -> None:
    queries = readme_queries()
    assert len(queries) >= 4
    results = check(queries)
    assert not any(results.values()), format_errors(results)


def test_a_misspelt_property_column_in_a_report_query_would_fail() -> None:
    period = period_for(NOW, 30, "UTC")
    broken = bind("hours", period).replace("TimeGenerated", "TimeGenerted", 1)
    results = check({"broken": broken})
    assert any(d["code"] == "KS142" for d in results["broken"])
