"""The Grafana dashboards in grafana/: valid dashboard JSON wired to the provisioned data sources, every
KQL panel query parses and binds against the Log Analytics schemas, and every PromQL expression returns
data from a real Prometheus scraping a real daemon that runs against the emulator."""

from __future__ import annotations

import copy
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from monitor.emulator.runner import EmulatorServer

from .kql.checker import available, check, format_errors, grafana_to_kql
from .loopback import free_port
from .test_daemon import scenario
from .test_daemon_process import ready, wait_for
from .test_telemetry_process import EXPECTED, daemon_config, prometheus_binary, query, run_daemon, stop

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = {
    "prometheus": GRAFANA / "dashboards" / "foundry-monitor-prometheus.json",
    "azure": GRAFANA / "dashboards" / "foundry-monitor-azure.json",
}
UIDS = {"prometheus": "foundry-monitor-prometheus", "azure": "foundry-monitor-azure"}
PROMETHEUS_DS = {"uid": "foundry-monitor-prometheus", "type": "prometheus"}
AZURE_DS = {"uid": "foundry-monitor-azure", "type": "grafana-azure-monitor-datasource"}
# Grafana's own variables and (Azure Monitor) macros; anything else after a $ must be a dashboard variable
BUILT_INS = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms", "__from",
             "__to", "__all", "__timeFilter", "__timeFrom", "__timeTo", "__contains", "__escapeMulti",
             "__dashboard", "__org", "__user", "__name"}
KQL_JOIN_SIDES = {"left", "right"}  # $left / $right in KQL join conditions are not Grafana variables
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
# what each dashboard variable filters, as a Prometheus label
VARIABLE_LABELS = {"resource": "foundry_monitor_resource", "deployment": "gen_ai_request_model",
                   "location": "foundry_monitor_location"}
# what Grafana's range variables become when the expressions are sent to the test's Prometheus
TEST_RANGE = "1m"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARDS[name].read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels nested in (collapsed) rows included."""
    stack = list(reversed(dashboard.get("panels", [])))
    while stack:
        panel = stack.pop()
        yield panel
        stack.extend(reversed(panel.get("panels", [])))


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of every data source in grafana/provisioning/datasources/*.yaml."""
    out: dict[str, str] = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yaml")):
        for ds in yaml.safe_load(path.read_text(encoding="utf-8")).get("datasources", []):
            out[ds["uid"]] = ds["type"]
    return out


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def variables_used(node: Any) -> set[str]:
    used = set()
    for text in strings(node):
        for match in VARIABLE.finditer(text):
            used.add(next(g for g in match.groups() if g))
    return used


def problems(dashboard: dict[str, Any], datasources: dict[str, str]) -> list[str]:
    """What would make Grafana reject the dashboard or show broken panels; empty when all is well."""
    found: list[str] = []
    if not isinstance(dashboard.get("schemaVersion"), int):
        found.append("no schemaVersion")
    if not dashboard.get("uid") or not dashboard.get("title"):
        found.append("no uid or title")
    defined = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}

    def resolves(where: str, ref: Any) -> None:
        if ref is None:
            return
        if not isinstance(ref, dict) or "uid" not in ref:
            found.append(f"{where}: datasource {ref!r} is not a {{type, uid}} reference")
            return
        uid = str(ref["uid"])
        reference = VARIABLE.fullmatch(uid)
        if reference:
            variable = defined.get(next(g for g in reference.groups() if g))
            if variable is None or variable.get("type") != "datasource":
                found.append(f"{where}: datasource uid {uid} is not a data source variable")
        elif uid not in datasources:
            found.append(f"{where}: datasource uid {uid!r} is not provisioned ({sorted(datasources)})")
        elif ref.get("type") not in (None, datasources[uid]):
            found.append(f"{where}: datasource {uid} has type {ref.get('type')}, "
                         f"provisioned as {datasources[uid]}")

    ids: dict[int, str] = {}
    for panel in panels(dashboard):
        title = panel.get("title", "?")
        pid = panel.get("id")
        if not isinstance(pid, int):
            found.append(f"panel {title!r} has no numeric id")
        elif pid in ids:
            found.append(f"panel id {pid} is used by {ids[pid]!r} and {title!r}")
        else:
            ids[pid] = title
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["x"] + grid["w"] > 24:
            found.append(f"panel {title!r}: bad gridPos {grid}")
        if panel.get("type") == "row":
            continue
        resolves(f"panel {title!r}", panel.get("datasource"))
        targets = panel.get("targets", [])
        if not targets:
            found.append(f"panel {title!r} has no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            found.append(f"panel {title!r}: refIds {refs} are not unique")
        for t in targets:
            resolves(f"panel {title!r} query {t.get('refId')}", t.get("datasource", panel.get("datasource")))
    for name, variable in defined.items():
        resolves(f"variable {name}", variable.get("datasource"))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("builtIn") != 1:
            resolves(f"annotation {annotation.get('name')}", annotation.get("datasource"))
    for name in sorted(variables_used(dashboard) - set(defined) - KQL_JOIN_SIDES):
        if not name.startswith("__"):
            found.append(f"${name} is used but templating.list does not define it")
        elif name not in BUILT_INS:
            found.append(f"${name} is not a Grafana built-in variable or macro")
    return found


def promql(dashboard: dict[str, Any]) -> dict[str, str]:
    """'panel title / refId' -> expression, for every panel query."""
    return {f"{p['title']} / {t['refId']}": t["expr"] for p in panels(dashboard) for t in p.get("targets", [])
            if "expr" in t}


def kql(dashboard: dict[str, Any]) -> dict[str, str]:
    """'panel title / refId' (or 'variable NAME') -> Log Analytics query, panels and variables."""
    out = {f"{p['title']} / {t['refId']}": t["azureLogAnalytics"]["query"] for p in panels(dashboard)
           for t in p.get("targets", []) if "azureLogAnalytics" in t}
    for v in dashboard["templating"]["list"]:
        if isinstance(v.get("query"), dict) and "azureLogAnalytics" in v["query"]:
            out[f"variable {v['name']}"] = v["query"]["azureLogAnalytics"]["query"]
    return out


_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_METRIC = re.compile(r"\b(?:gen_ai|foundry_monitor)_\w+")


def selectors(expr: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(metric, matchers) of every `metric{...}` selector, and the metric names used without braces."""
    found = [(m.group(1), m.group(2)) for m in _SELECTOR.finditer(expr)]
    bare = _METRIC.findall(_GROUPING.sub("", _SELECTOR.sub("", expr)))
    return found, bare


def concrete(expr: str) -> str:
    """The expression as the test sends it: every dashboard variable `.*` (what "All" sends, allValue),
    every range variable a fixed small range."""
    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name in VARIABLE_LABELS:
            return ".*"
        if name in ("__rate_interval", "__interval", "__range"):
            return TEST_RANGE
        raise AssertionError(f"no test value for ${name} in {expr}")
    return VARIABLE.sub(value, expr)


def prometheus_error(port: int, expr: str) -> str:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=3)
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    count = len(body.get("data", {}).get("result", []))
    return str(body.get("error") or f"HTTP {r.status_code}, {count} series")


# --- structure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_the_dashboard_is_valid_grafana_json_wired_to_provisioned_data_sources(name: str) -> None:
    dashboard = load(name)
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] == UIDS[name]  # stable: links and provisioning keep pointing at it
    assert problems(dashboard, provisioned_datasources()) == []
    titles = [p["title"] for p in panels(dashboard) if p["type"] != "row"]
    assert len(titles) == len(set(titles)), "two panels share a title"
    assert {"resource", "deployment", "location"} <= {v["name"] for v in dashboard["templating"]["list"]}


def test_the_checks_catch_a_duplicate_panel_id_an_unknown_uid_and_an_undefined_variable() -> None:
    dashboard = load("prometheus")
    broken = copy.deepcopy(dashboard)
    rows = [p for p in broken["panels"] if p["type"] == "row"]
    last = broken["panels"].pop()  # nest the last panel in a collapsed row, with a used id
    rows[0].update(collapsed=True, panels=[{**last, "id": broken["panels"][1]["id"]}])
    broken["panels"][2]["datasource"] = {"type": "prometheus", "uid": "somewhere-else"}
    broken["panels"][3]["targets"][0]["expr"] += ' + on() vector($region)'
    found = "\n".join(problems(broken, provisioned_datasources()))
    assert f"panel id {broken['panels'][1]['id']} is used by" in found
    assert "'somewhere-else' is not provisioned" in found
    assert "$region is used but templating.list does not define it" in found


def test_provisioning_files_define_exactly_the_uids_the_dashboards_use() -> None:
    datasources = provisioned_datasources()
    assert datasources == {PROMETHEUS_DS["uid"]: PROMETHEUS_DS["type"], AZURE_DS["uid"]: AZURE_DS["type"]}
    text = (GRAFANA / "provisioning" / "datasources" / "foundry-monitor.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    assert config["apiVersion"] == 1
    by_uid = {ds["uid"]: ds for ds in config["datasources"]}
    assert by_uid[PROMETHEUS_DS["uid"]]["url"] == "http://prometheus:9090"
    azure = by_uid[AZURE_DS["uid"]]
    env_reference = re.compile(r"\$\{?[A-Z_][A-Z0-9_]*\}?")
    assert env_reference.fullmatch(azure["jsonData"]["azureAuthType"]), "auth type comes from the environment"
    for key in ("tenantId", "clientId", "subscriptionId"):  # no real ids or secrets in the repository
        assert env_reference.fullmatch(azure["jsonData"][key]), key
    assert env_reference.fullmatch(azure["secureJsonData"]["clientSecret"])
    assert "msi" in text and "clientsecret" in text  # both ways are documented where they are set

    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "foundry-monitor.yaml").read_text())
    [files] = provider["providers"]
    assert files["type"] == "file" and files["options"]["path"].startswith("/var/lib/grafana/dashboards")
    docs = (ROOT / "docs" / "grafana.md").read_text(encoding="utf-8")
    assert files["options"]["path"] in docs and "/etc/grafana/provisioning" in docs


def test_the_docs_describe_every_panel_and_variable() -> None:
    docs = (ROOT / "docs" / "grafana.md").read_text(encoding="utf-8")
    for name in DASHBOARDS:
        dashboard = load(name)
        missing = [p["title"] for p in panels(dashboard) if p["type"] != "row" and p["title"] not in docs]
        assert not missing, f"docs/grafana.md does not describe these {name} panels: {missing}"
        for variable in dashboard["templating"]["list"]:
            assert f"`{variable['name']}`" in docs, variable["name"]


# --- Prometheus dashboard: static ------------------------------------------------------------------------


def test_every_promql_expression_filters_by_the_dashboard_variables() -> None:
    exprs = promql(load("prometheus"))
    assert exprs
    for name, expr in exprs.items():
        found, bare = selectors(expr)
        assert found and not bare, f"{name}: every metric needs a {{...}} selector: {expr}"
        for metric, matchers in found:
            assert 'foundry_monitor_location=~"$location"' in matchers, f"{name}: {metric} ignores $location"


def test_the_prometheus_dashboard_shows_every_metric_the_daemon_exports() -> None:
    text = "\n".join(promql(load("prometheus")).values())
    families = {re.sub(r"(_bucket|_count|_sum)$", "", q.split("{")[0]) for q in EXPECTED} - {"target_info"}
    assert families, EXPECTED
    missing = sorted(f for f in families if f not in text)
    assert not missing, f"no panel shows {missing}"


def test_the_azure_dashboard_queries_the_workspace_variable_and_filters_by_the_variables() -> None:
    dashboard = load("azure")
    for panel in panels(dashboard):
        for t in panel.get("targets", []):
            assert t["queryType"] == "Azure Log Analytics"
            assert t["azureLogAnalytics"]["resources"] == ["$workspace"], panel["title"]
            text = t["azureLogAnalytics"]["query"]
            assert re.search(r"\$__timeFilter\(TimeGenerated\)|\$__timeTo\(\)", text), panel["title"]
            assert "$__contains(" in text and "$location)" in text, panel["title"]
            if "AppMetrics" not in text:  # the daemon's own metrics carry no deployment
                assert "$resource)" in text and "$deployment)" in text, panel["title"]
    for v in dashboard["templating"]["list"]:
        if v["name"] in VARIABLE_LABELS:  # `all` makes $__contains expand to 1 == 1
            assert v["includeAll"] and v["allValue"] == "all" and v["multi"], v["name"]


# --- Azure dashboard: KQL --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kql_queries() -> dict[str, str]:
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    queries = {name: grafana_to_kql(text) for name, text in kql(load("azure")).items()}
    assert len(queries) >= 10
    return queries


def test_every_kql_query_of_the_azure_dashboard_binds_against_the_workspace_schemas(
        kql_queries: dict[str, str]) -> None:
    results = check(kql_queries)
    assert not any(results.values()), format_errors(results)


def test_a_misspelt_column_in_any_kql_query_fails(kql_queries: dict[str, str]) -> None:
    broken = {name: text.replace("TimeGenerated", "TimeGenerted") for name, text in kql_queries.items()}
    broken["Properties"] = next(iter(kql_queries.values())).replace("Properties[", "Propertes[", 1)
    results = check(broken)
    quiet = [name for name, diagnostics in results.items()
             if not any(d["code"] == "KS142" for d in diagnostics)]
    assert not quiet, f"a misspelt column went unnoticed in {quiet}"


# --- Prometheus dashboard: against a real Prometheus -----------------------------------------------------


@pytest.mark.timeout(90)
def test_every_promql_expression_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    binary = prometheus_binary()
    dashboard = load("prometheus")
    exprs = {name: concrete(expr) for name, expr in promql(dashboard).items()}
    label_queries = {}  # variable -> (series selector, label)
    for v in dashboard["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["query"])
        assert m and v["definition"] == v["query"], v["query"]
        label_queries[v["name"]] = (concrete(m.group(1)), m.group(2))
    metrics = sorted({metric for expr in exprs.values() for metric, _ in selectors(expr)[0]})
    with EmulatorServer(scenario=scenario(["healthy"])) as emu:
        cfg = daemon_config(emu, tmp_path, ["healthy", "retired"], entra=True)
        port, prom_port = free_port(), free_port()
        prom_config = tmp_path / "prometheus.yml"
        prom_config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n  - job_name: foundry-monitor\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
        promtool = shutil.which("promtool")
        if promtool:
            checked = subprocess.run([promtool, "check", "config", str(prom_config)], capture_output=True,
                                     text=True, timeout=30, check=False)
            assert checked.returncode == 0, checked.stdout + checked.stderr
        prom_cmd = [binary, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"]
        with run_daemon(cfg, port, emu.identity_env(), tmp_path / "daemon.log") as proc, \
                (tmp_path / "prometheus.log").open("wb") as prom_log:
            prom = subprocess.Popen(prom_cmd, stdout=prom_log, stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: ready(port), 20)
                proc.send_signal(signal.SIGHUP)  # a reload, so the reload metrics have series
                deadline = time.monotonic() + 60
                missing = list(exprs)
                while missing and time.monotonic() < deadline:
                    missing = [name for name in missing if not query(prom_port, exprs[name])]
                    if missing:
                        time.sleep(0.5)  # Prometheus scrapes every second; the loop is bounded
                errors = {name: prometheus_error(prom_port, exprs[name]) for name in missing}
                states = availability = None
                while time.monotonic() < deadline:  # the values a person would see, once they settle
                    states = values(query(prom_port, exprs["State now / A"]))
                    availability = values(query(
                        prom_port, exprs["Availability of scheduled canaries (time range) / A"]))
                    if states == {"emu/healthy": 1, "emu/retired": 4, "entra/healthy": 1} and \
                            availability == {"emu/healthy": 1, "emu/retired": 0, "entra/healthy": 1}:
                        break
                    time.sleep(0.5)
                series_labels = {metric: set().union(*(s["metric"] for s in query(prom_port, metric)))
                                 for metric in metrics}
                variable_values = {name: label_values(prom_port, *q) for name, q in label_queries.items()}
                misspelt = query(prom_port,
                                 exprs["State now / A"].replace("deployment_state", "deployment_stat"))
            finally:
                prom.terminate()
                prom.wait(10)
            stop(proc)
    assert not missing, "no series from Prometheus for:\n" + "\n".join(
        f"- {name}: {errors[name]}\n  {exprs[name]}" for name in missing)
    assert states == {"emu/healthy": 1, "emu/retired": 4, "entra/healthy": 1}, states
    assert availability == {"emu/healthy": 1, "emu/retired": 0, "entra/healthy": 1}, availability
    assert misspelt == [], "a wrong metric name must return nothing"
    assert variable_values == {"location": {"lab-1"}, "resource": {"emu", "entra"},
                               "deployment": {"healthy", "retired"}}
    # a selector must filter by each variable whose label its metric carries ("All" is `.*`, which also
    # matches a missing label, but one chosen deployment would otherwise not narrow the panel)
    originals = promql(dashboard)
    for name, expr in originals.items():
        for metric, matchers in selectors(expr)[0]:
            assert series_labels[metric], f"{metric} has no series"
            for variable, label in VARIABLE_LABELS.items():
                if label in series_labels[metric]:
                    assert f'{label}=~"${variable}"' in matchers, f"{name}: {metric} ignores ${variable}"


def values(series: list[dict[str, Any]]) -> dict[str, float]:
    """resource/deployment -> value of an instant vector, for the expressions grouped that way."""
    return {f"{s['metric'].get('foundry_monitor_resource')}/{s['metric'].get('gen_ai_request_model')}":
            float(s["value"][1]) for s in series}


def label_values(port: int, selector: str, label: str) -> set[str]:
    """What Grafana's label_values(selector, label) lists."""
    r = httpx.get(f"http://127.0.0.1:{port}/api/v1/label/{label}/values", params={"match[]": selector},
                  timeout=3)
    return set(r.json()["data"])
