"""Offline KQL checks: do the Kusto queries this project ships parse and bind against the Log Analytics
tables they read?

The work is done by Microsoft's own Kusto language service (the npm package
``@kusto/language-service-next``, version pinned in ``tests/kql/package.json``), which
``scripts/_node_tools.sh`` installs into ``tests/kql/node_modules``. ``check`` runs ``check.js`` under
node once for any number of queries; nothing touches the network.

Use::

    reason = available()
    if reason:
        pytest.skip(reason)
    errors = check({"tile": "AppMetrics | summarize sum(Sum) by bin(TimeGenerated, 1h)"})
    assert errors == {"tile": []}, format_errors(errors)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import TypedDict

KQL_DIR = Path(__file__).resolve().parent
CHECK_JS = KQL_DIR / "check.js"
PACKAGE = "@kusto/language-service-next"
PACKAGE_DIR = KQL_DIR / "node_modules" / "@kusto" / "language-service-next"
TIMEOUT_S = 120.0


class Diagnostic(TypedDict):
    """One Error-severity diagnostic of the Kusto language service."""

    severity: str  # always "Error": warnings and suggestions are dropped
    code: str  # e.g. KS142 unknown column, KS204 unknown table, KS106 operator type mismatch
    message: str
    start: int  # offset of the offending text in the query
    length: int
    excerpt: str  # the query text around it (whitespace runs collapsed to one space)


def _columns(*columns: str) -> str:
    return "(" + ", ".join(columns) + ")"


# Columns every App* table shares, in the workspace-based Application Insights schema
# (https://learn.microsoft.com/azure/azure-monitor/reference/tables/appevents and siblings).
_APP_IDENTITY = ("TimeGenerated:datetime", "Name:string", "Properties:dynamic")
_APP_CONTEXT = (
    "ItemCount:int",
    "OperationId:string",
    "OperationName:string",
    "ParentId:string",
    "SyntheticSource:string",
    "SessionId:string",
    "UserId:string",
    "UserAuthenticatedId:string",
    "UserAccountId:string",
    "AppRoleName:string",
    "AppRoleInstance:string",
    "AppVersion:string",
    "SDKVersion:string",
    "IKey:string",
    "ResourceGUID:string",
    "ClientType:string",
    "ClientOS:string",
    "ClientIP:string",
    "ClientCity:string",
    "ClientStateOrProvince:string",
    "ClientCountryOrRegion:string",
    "ClientBrowser:string",
    "ClientModel:string",
    "_ResourceId:string",
    "_SubscriptionId:string",
    "TenantId:string",
    "SourceSystem:string",
    "Type:string",
    "_BilledSize:real",
    "_IsBillable:string",
)


def _app_table(*specific: str, measurements: bool = True) -> str:
    common = (*_APP_IDENTITY, "Measurements:dynamic") if measurements else _APP_IDENTITY
    return _columns(*common, *specific, *_APP_CONTEXT)


# Table name -> "(Column:type, ...)" for the Log Analytics workspace tables the project queries.
SCHEMAS: dict[str, str] = {
    "AppAvailabilityResults": _app_table(
        "Id:string",
        "Location:string",
        "Success:bool",
        "DurationMs:real",
        "Message:string",
        "PerformanceBucket:string",
        "Size:real",
    ),
    "AppDependencies": _app_table(
        "Id:string",
        "Target:string",
        "DependencyType:string",
        "Data:string",
        "DurationMs:real",
        "Success:bool",
        "ResultCode:string",
        "PerformanceBucket:string",
        "ReferencedItemId:string",
        "ReferencedType:string",
    ),
    "AppEvents": _app_table(),
    # Pre-aggregated metrics carry no Measurements column; ItemCount (in _APP_CONTEXT) is an int.
    "AppMetrics": _app_table("Sum:real", "Min:real", "Max:real", measurements=False),
    "AppTraces": _app_table(
        "Message:string",
        "SeverityLevel:int",
        "ReferencedItemId:string",
        "ReferencedType:string",
    ),
    "AppRequests": _app_table(
        "Id:string",
        "Url:string",
        "Source:string",
        "DurationMs:real",
        "Success:bool",
        "ResultCode:string",
        "PerformanceBucket:string",
    ),
    "AppExceptions": _app_table(
        "ExceptionType:string",
        "Message:string",
        "OuterMessage:string",
        "InnermostMessage:string",
        "ProblemId:string",
        "SeverityLevel:int",
        "Details:dynamic",
    ),
    # Platform metrics that a diagnostic setting exports to the workspace.
    "AzureMetrics": _columns(
        "TimeGenerated:datetime",
        "ResourceId:string",
        "Resource:string",
        "ResourceGroup:string",
        "ResourceProvider:string",
        "SubscriptionId:string",
        "MetricName:string",
        "Total:real",
        "Count:real",
        "Maximum:real",
        "Minimum:real",
        "Average:real",
        "TimeGrain:string",
        "UnitName:string",
        "Type:string",
        "_ResourceId:string",
        "_SubscriptionId:string",
        "TenantId:string",
        "SourceSystem:string",
    ),
}


def _wanted_version() -> str:
    manifest = json.loads((KQL_DIR / "package.json").read_text(encoding="utf-8"))
    return str(manifest["dependencies"][PACKAGE])


def available() -> str | None:
    """None when node and the pinned language service are installed, else why not (for pytest.skip)."""
    if shutil.which("node") is None:
        return "node is not on PATH, so the KQL checks cannot run (install Node.js, then run scripts/test)"
    want = _wanted_version()
    try:
        have = json.loads((PACKAGE_DIR / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        have = None
    if have != want:
        found = f"version {have} is installed" if have else "it is not installed"
        return (
            f"the KQL checks need {PACKAGE}@{want} in {KQL_DIR / 'node_modules'} but {found} "
            "(scripts/test installs it with npm: bash -c 'source scripts/_venv.sh; ensure_node_tools')"
        )
    return None


def check(queries: dict[str, str], schemas: dict[str, str] | None = None) -> dict[str, list[Diagnostic]]:
    """Parse and bind every query against the tables (SCHEMAS unless given) in one node process.

    Returns query name -> its Error diagnostics; an empty list means the query is valid. Raises
    RuntimeError when node or the checker itself fails (including a malformed schema string).
    """
    if not queries:
        return {}
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH")
    payload = {
        "tables": SCHEMAS if schemas is None else schemas,
        "queries": [{"name": name, "text": text} for name, text in queries.items()],
    }
    try:
        proc = subprocess.run(
            [node, str(CHECK_JS)],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=TIMEOUT_S,
            check=False,
            cwd=KQL_DIR,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{CHECK_JS} did not finish within {TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        output = proc.stderr.strip() or proc.stdout.strip()
        raise RuntimeError(f"{CHECK_JS} failed with exit code {proc.returncode}: {output}")
    try:
        results = json.loads(proc.stdout)
    except ValueError as exc:
        raise RuntimeError(f"{CHECK_JS} printed something that is not JSON: {proc.stdout[:500]!r}") from exc
    out: dict[str, list[Diagnostic]] = {r["name"]: r["diagnostics"] for r in results}
    if out.keys() != queries.keys():
        raise RuntimeError(f"{CHECK_JS} answered for {sorted(out)} but was asked about {sorted(queries)}")
    return out


def format_errors(results: dict[str, list[Diagnostic]]) -> str:
    """The diagnostics of ``check`` as readable lines, for assertion messages."""
    return "\n".join(
        f"{name}: {d['code']} at {d['start']}: {d['message']}  [{d['excerpt']}]"
        for name, diagnostics in results.items()
        for d in diagnostics
    )


# Grafana Azure Monitor (Log Analytics) macros and template variables, replaced by fixed values.
GRAFANA_FROM = "datetime(2026-01-01)"
GRAFANA_TO = "datetime(2026-01-02)"
_MACRO = re.compile(
    r"\$__(?P<macro>timeFilter|timeFrom|timeTo|contains|escapeMulti)\b(?:\((?P<args>[^()]*)\))?"
    r"|\$__interval_ms\b|\$__interval\b"
)
_LITERAL_OR_VARIABLE = re.compile(
    r"(?P<comment>//[^\n]*)"
    r'|(?P<string>@"[^"\n]*"|@\'[^\'\n]*\'|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\')'
    r"|(?P<variable>\$\{\w+(?::[^}]*)?\}|\[\[\w+(?::[^\]]*)?\]\]|\$(?!(?:left|right)\b)[A-Za-z_]\w*)"
)
_VARIABLE_IN_STRING = re.compile(r"\$\{\w+(?::[^}]*)?\}|\[\[\w+(?::[^\]]*)?\]\]|\$[A-Za-z_]\w*")


def _macro(match: re.Match[str]) -> str:
    name = match.group("macro")
    if name is None:  # $__interval_ms or $__interval
        return "3600000" if match.group(0) == "$__interval_ms" else "1h"
    args = [a.strip() for a in (match.group("args") or "").split(",")]
    if name == "timeFilter":
        return f"{args[0] or 'TimeGenerated'} between ({GRAFANA_FROM} .. {GRAFANA_TO})"
    if name == "timeFrom":
        return GRAFANA_FROM
    if name == "timeTo":
        return GRAFANA_TO
    if name == "contains":
        return f'{args[0]} in ("x")'
    return '@"x"'  # escapeMulti


def _literal_or_variable(match: re.Match[str]) -> str:
    if match.group("comment") is not None:
        return match.group(0)
    if match.group("string") is not None:  # a variable inside a string literal becomes plain text
        return _VARIABLE_IN_STRING.sub("x", match.group(0))
    return '"x"'


def grafana_to_kql(text: str) -> str:
    """A Grafana Azure Monitor (Log Analytics) panel query as the plain KQL it stands for.

    Grafana rewrites a panel's query before sending it; this does the same with fixed values (time
    range 2026-01-01 to 2026-01-02, interval 1h, every variable the string "x") so the result can be
    checked with ``check``:

    - ``$__timeFilter(COL)`` -> ``COL between (datetime(2026-01-01) .. datetime(2026-01-02))``;
      ``$__timeFilter()`` (or no parentheses) does the same for ``TimeGenerated``.
    - ``$__timeFrom()`` / ``$__timeTo()`` -> ``datetime(2026-01-01)`` / ``datetime(2026-01-02)``.
    - ``$__interval`` -> ``1h``; ``$__interval_ms`` -> ``3600000``.
    - ``$__contains(COL, $var)`` -> ``COL in ("x")``; ``$__escapeMulti($var)`` -> ``@"x"``.
    - Any other template variable (``$name``, ``${name}``, ``${name:format}``, ``[[name]]``) -> the
      string literal ``"x"``; inside a string literal (``"$name"``, ``'$name'``) just ``x``.
      KQL's own ``$left`` and ``$right`` (join conditions) are kept, and so is ``//`` comment text.

    Grafana's own expansion differs in detail (``$__timeFilter`` becomes ``COL >= datetime(...) and
    COL <= datetime(...)``, a multi-value variable a list of quoted values) but types the same way,
    which is all a parse-and-bind check needs. Macros inside string literals are not expected.
    """
    return _LITERAL_OR_VARIABLE.sub(_literal_or_variable, _MACRO.sub(_macro, text))
