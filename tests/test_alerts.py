"""Alerting as code (deploy/azure): the Bicep parses (tree-sitter-bicep), every rule loads its own .kql
twin, every .kql binds against the Log Analytics schemas (Microsoft's Kusto language service,
tests/kql/checker.py) and puts out the columns its rule measures and splits by, and every rule is sane:
severity 0-4, an evaluation frequency no longer than its window, a description with the remediation, the
action group wired. The parameters example names only declared parameters. Nothing here needs the network;
the Bicep is read, not compiled."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

from .kql.checker import Diagnostic, available, check, format_errors

ROOT = Path(__file__).resolve().parent.parent
AZURE = ROOT / "deploy" / "azure"
BICEP = AZURE / "alerts.bicep"
KQL_DIR = AZURE / "kql"
PARAMETERS = AZURE / "alerts.parameters.example.json"
RULE_TYPE = "Microsoft.Insights/scheduledQueryRules@"
ACTION_GROUP_TYPE = "Microsoft.Insights/actionGroups@"
LONGEST_QUERY_RANGE = timedelta(days=2)  # the most a log search alert may look back
ESCAPES = {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}

PARSER = Parser(Language(tree_sitter_bicep.language()))


# --- reading Bicep with tree-sitter -------------------------------------------------------------------------


def parse(source: str) -> Node:
    return PARSER.parse(source.encode("utf-8")).root_node


def syntax_errors(root: Node) -> list[str]:
    """Every ERROR and MISSING node of the tree, as `line:column: what` (1-based)."""
    found = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            what = f"missing {node.type!r}" if node.is_missing else f"unexpected {_text(node)[:40]!r}"
            found.append(f"{node.start_point[0] + 1}:{node.start_point[1] + 1}: {what}")
        stack.extend(node.children)
    return sorted(found)


def _text(node: Node) -> str:
    return (node.text or b"").decode("utf-8")


@dataclass(frozen=True)
class Expr:
    """A Bicep expression this reader does not evaluate, kept as its source text."""

    text: str


@dataclass(frozen=True)
class ParamRef:
    name: str


@dataclass(frozen=True)
class LoadText:
    """loadTextContent('path'): the path, relative to the Bicep file."""

    path: str


@dataclass
class Param:
    name: str
    type: str
    default: Any  # Expr when the default is not a literal; absent when `has_default` is False
    has_default: bool
    decorators: dict[str, list[Any]]


class Template:
    """The declarations of a Bicep file and a small evaluator for its literals, params, vars and loops."""

    def __init__(self, source: str) -> None:
        self.root = parse(source)
        self.params: dict[str, Param] = {}
        self.vars: dict[str, Node] = {}
        self.resources: dict[str, tuple[str, Node]] = {}  # symbol -> (type@version, value node)
        decorators: dict[str, list[Any]] = {}
        for node in self.root.named_children:
            if node.type == "decorators":
                for decorator in node.named_children:
                    call = decorator.named_children[0]
                    name, args = call.named_children[0], call.named_children[1]
                    decorators[_text(name)] = [self.value(a) for a in args.named_children]
                continue
            kids = node.named_children
            if node.type == "parameter_declaration":
                name = _text(kids[0])
                default = self.value(kids[2]) if len(kids) > 2 else None
                self.params[name] = Param(name, _text(kids[1]), default, len(kids) > 2, decorators)
            elif node.type == "variable_declaration":
                self.vars[_text(kids[0])] = kids[1]
            elif node.type == "resource_declaration":
                self.resources[_text(kids[0])] = (self.value(kids[1]), kids[-1])
            decorators = {}

    def value(self, node: Node, env: dict[str, Any] | None = None) -> Any:
        env = env or {}
        kind = node.type
        if kind == "string":
            parts = []
            for child in node.named_children:
                if child.type == "escape_sequence":
                    parts.append(ESCAPES.get(_text(child), _text(child)))
                elif child.type == "interpolation":
                    inner = self.value(child.named_children[0], env)
                    plain = isinstance(inner, str | int)
                    parts.append(str(inner) if plain else "${" + _text(child)[2:-1] + "}")
                else:
                    parts.append(_text(child))
            return "".join(parts)
        if kind == "number":
            return int(_text(node))
        if kind == "boolean":
            return _text(node) == "true"
        if kind == "null":
            return None
        if kind == "array":
            return [self.value(c, env) for c in node.named_children]
        if kind == "object":
            out = {}
            for prop in node.named_children:
                if prop.type == "object_property":
                    key, val = prop.named_children[0], prop.named_children[-1]
                    label = str(self.value(key, env)) if key.type == "string" else _text(key)
                    out[label] = self.value(val, env)
            return out
        if kind == "identifier":
            name = _text(node)
            if name in env:
                return env[name]
            if name in self.vars:
                return self.value(self.vars[name])
            if name in self.params:
                return ParamRef(name)
            return Expr(name)
        if kind == "member_expression":
            obj = self.value(node.named_children[0], env)
            prop = _text(node.named_children[-1])
            if isinstance(obj, dict) and prop in obj:
                return obj[prop]
            return Expr(_text(node))
        if kind == "call_expression":
            name, args = node.named_children[0], node.named_children[1]
            if _text(name) == "loadTextContent":
                return LoadText(self.value(args.named_children[0]))
        if kind == "parenthesized_expression":
            return self.value(node.named_children[0], env)
        return Expr(_text(node))

    def instances(self, symbol: str) -> list[dict[str, Any]]:
        """A resource's body, once per loop item when it is a `[for x in collection: {...}]`."""
        body = self.resources[symbol][1]
        if body.type != "for_statement":
            return [self.value(body)]
        head, collection, obj = body.named_children[0], body.named_children[1], body.named_children[-1]
        item = _text(head.named_children[0] if head.type == "for_loop_parameters" else head)
        items = self.value(collection)
        assert isinstance(items, list), f"{symbol} loops over {_text(collection)}, not a literal array"
        return [self.value(obj, {item: each}) for each in items]

    def symbols_of_type(self, prefix: str) -> list[str]:
        return [symbol for symbol, (kind, _) in self.resources.items()
                if isinstance(kind, str) and kind.startswith(prefix)]

    def candidates(self, value: Any) -> list[Any]:
        """What a value can be at deployment: a param's allowed values (or its default), else the value."""
        if isinstance(value, ParamRef):
            param = self.params[value.name]
            if "allowed" in param.decorators:
                return list(param.decorators["allowed"][0])
            assert param.has_default, f"{value.name} has no default and no allowed values"
            return [param.default]
        return [value]


def iso_duration(text: str) -> timedelta:
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", text)
    assert match and text not in ("P", "PT"), f"not an ISO 8601 duration of days/hours/minutes: {text!r}"
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes)


def load_calls(root: Node) -> list[str]:
    """The argument text of every loadTextContent call anywhere in the file."""
    found = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "call_expression" and _text(node.named_children[0]) == "loadTextContent":
            found.append(_text(node.named_children[1]))
        stack.extend(node.children)
    return found


@cache
def template() -> Template:
    return Template(BICEP.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    t = template()
    return [rule for symbol in t.symbols_of_type(RULE_TYPE) for rule in t.instances(symbol)]


def rule_query(rule: dict[str, Any]) -> tuple[str, str]:
    """(file name, KQL text) of a rule's single condition."""
    criteria = rule["properties"]["criteria"]["allOf"]
    assert len(criteria) == 1, f"{rule['name']}: a log alert rule has exactly one condition"
    query = criteria[0]["query"]
    assert isinstance(query, LoadText), f"{rule['name']}: the query must be loadTextContent('kql/<rule>.kql')"
    return Path(query.path).name, (BICEP.parent / query.path).read_text(encoding="utf-8")


def kql_files() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(KQL_DIR.glob("*.kql"))}


# --- Bicep syntax -------------------------------------------------------------------------------------------


def test_the_grammar_reports_syntax_errors() -> None:
    assert syntax_errors(parse("param n int = 3\nvar x = {\n  a: n\n}\n")) == []
    assert syntax_errors(parse("resource r 'Microsoft.Insights/actionGroups@2023-01-01' = {\n  name: 'x'\n"))
    assert syntax_errors(parse("var x = {\n  a: 1,,\n}\n"))
    assert syntax_errors(parse("var s = 'it''s'\n"))  # Bicep escapes a quote as \' and the grammar knows it


def test_the_bicep_parses_without_errors() -> None:
    root = template().root
    assert root.type == "infrastructure"
    assert syntax_errors(root) == []


def test_a_broken_copy_of_the_bicep_does_not_parse() -> None:
    source = BICEP.read_text(encoding="utf-8")
    broken = source.replace("    severity: 1\n", "    severity 1\n", 1)
    assert broken != source
    assert syntax_errors(parse(broken))
    unclosed = source.replace("'Global'", "'Global", 1)
    assert syntax_errors(parse(unclosed))


def test_the_file_declares_the_action_group_and_the_rules() -> None:
    t = template()
    assert len(t.symbols_of_type(ACTION_GROUP_TYPE)) == 1
    assert t.symbols_of_type(RULE_TYPE), "no scheduledQueryRules resource"
    names = [r["name"] for r in rules()]
    assert len(names) == len(set(names)) >= 9, names


# --- each rule's KQL is its .kql twin -----------------------------------------------------------------------


def test_every_load_text_content_points_at_a_kql_file_used_by_exactly_one_rule() -> None:
    calls = load_calls(template().root)
    paths = []
    for args in calls:
        match = re.fullmatch(r"\('(kql/[\w.-]+\.kql)'\)", args)
        assert match, f"loadTextContent{args}: expected one literal path under kql/"
        assert (BICEP.parent / match.group(1)).is_file(), f"{match.group(1)} does not exist"
        paths.append(Path(match.group(1)).name)
    used = Counter(rule_query(r)[0] for r in rules())
    assert Counter(paths) == used, "every loadTextContent must be the query of a rule"
    assert set(used) == set(kql_files()), "every .kql in deploy/azure/kql must belong to a rule"
    assert all(n == 1 for n in used.values()), f"a .kql shared by several rules: {used}"


def test_every_kql_header_says_what_it_detects_and_which_column_the_rule_measures() -> None:
    for rule in rules():
        name, text = rule_query(rule)
        header = "\n".join(line for line in text.splitlines() if line.startswith("//"))
        assert text.startswith("//") and len(header) > 80, f"{name}: no header comment"
        measure = rule["properties"]["criteria"]["allOf"][0]["metricMeasureColumn"]
        assert f"Measured column: {measure}" in header, f"{name}: the header must name {measure}"


# --- the KQL binds against the workspace schemas ------------------------------------------------------------


def _projected(rule: dict[str, Any]) -> str:
    condition = rule["properties"]["criteria"]["allOf"][0]
    columns = [condition["metricMeasureColumn"], *(d["name"] for d in condition["dimensions"])]
    return rule_query(rule)[1].rstrip() + "\n| project " + ", ".join(columns)


def _misspelt(text: str) -> str:
    broken = text.replace('Properties["foundry_monitor.kind"]', 'Propertes["foundry_monitor.kind"]', 1)
    assert broken != text
    return broken


@pytest.fixture(scope="module")
def kql_results() -> dict[str, list[Diagnostic]]:
    """All the KQL of this module checked in one node process."""
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    queries = {f"file {name}": text for name, text in kql_files().items()}
    queries |= {f"columns {r['name']}": _projected(r) for r in rules()}
    queries["misspelt deployment-down.kql"] = _misspelt((KQL_DIR / "deployment-down.kql").read_text())
    queries["unknown column in the projection"] = _projected(rules()[0]) + ", no_such_column"
    return check(queries)


def test_every_kql_file_binds_against_the_workspace_schemas(kql_results: dict[str, list[Diagnostic]]) -> None:
    files = {k: v for k, v in kql_results.items() if k.startswith("file ")}
    assert len(files) == len(kql_files())
    assert not any(files.values()), format_errors(files)


def test_every_rule_query_puts_out_its_measure_and_dimension_columns(
        kql_results: dict[str, list[Diagnostic]]) -> None:
    columns = {k: v for k, v in kql_results.items() if k.startswith("columns ")}
    assert len(columns) == len(rules())
    assert not any(columns.values()), format_errors(columns)


def test_a_misspelt_column_fails_the_check(kql_results: dict[str, list[Diagnostic]]) -> None:
    assert any(d["code"] == "KS142" for d in kql_results["misspelt deployment-down.kql"])
    assert any(d["code"] == "KS142" for d in kql_results["unknown column in the projection"])


# --- every rule is sane -------------------------------------------------------------------------------------


def test_every_rule_has_severity_windows_description_and_the_action_group() -> None:
    t = template()
    (group,) = t.symbols_of_type(ACTION_GROUP_TYPE)
    for rule in rules():
        name, props = rule["name"], rule["properties"]
        assert rule["kind"] == "LogAlert", name
        assert props["scopes"] == [ParamRef("workspaceId")], name
        assert isinstance(props["severity"], int) and 0 <= props["severity"] <= 4, name
        frequency = iso_duration(props["evaluationFrequency"])
        windows = [iso_duration(w) for w in t.candidates(props["windowSize"])]
        assert windows and all(frequency <= w for w in windows), f"{name}: evaluationFrequency > windowSize"
        override = props.get("overrideQueryTimeRange")
        if override is not None:
            ranges = [iso_duration(o) for o in t.candidates(override)]
            assert all(max(windows) <= r <= LONGEST_QUERY_RANGE for r in ranges), f"{name}: {override}"
        description = props["description"]
        assert isinstance(description, str) and "What to do" in description and len(description) < 2048, name
        assert props["displayName"], name
        assert props["autoMitigate"] is True, name
        assert Expr(f"{group}.id") in props["actions"]["actionGroups"], f"{name}: action group not wired"
        (condition,) = props["criteria"]["allOf"]
        assert condition["operator"] in {"GreaterThan", "GreaterThanOrEqual", "LessThan", "LessThanOrEqual",
                                         "Equals"}, name
        assert condition["timeAggregation"] in {"Count", "Average", "Minimum", "Maximum", "Total"}, name
        assert condition["metricMeasureColumn"], name
        periods = condition["failingPeriods"]
        assert 1 <= periods["minFailingPeriodsToAlert"] <= periods["numberOfEvaluationPeriods"], name
        for threshold in t.candidates(condition["threshold"]):
            assert isinstance(threshold, int | Expr), f"{name}: threshold {threshold!r}"
        for dimension in condition["dimensions"]:
            assert dimension["operator"] == "Include" and dimension["values"] == ["*"], name


def test_the_action_group_mails_every_receiver_and_adds_the_webhook_only_when_given() -> None:
    t = template()
    (group,) = t.symbols_of_type(ACTION_GROUP_TYPE)
    (body,) = t.instances(group)
    props = body["properties"]
    assert body["location"] == "Global"
    assert props["enabled"] is True
    assert "emailReceivers" in props and "emailReceivers" in t.params
    webhook = props["webhookReceivers"]
    assert isinstance(webhook, Expr) and webhook.text.startswith("empty(webhookUri) ? []"), webhook
    assert "secure" in t.params["webhookUri"].decorators and t.params["webhookUri"].default == ""


def test_the_thresholds_behind_the_rules_are_parameters_with_defaults() -> None:
    t = template()
    for rule in rules():
        condition = rule["properties"]["criteria"]["allOf"][0]
        for value in (condition["threshold"], rule["properties"]["windowSize"]):
            if isinstance(value, ParamRef):
                assert t.params[value.name].has_default, f"{rule['name']}: {value.name} needs a default"
            elif isinstance(value, Expr):  # json(param): a decimal threshold (Bicep has no float literals)
                match = re.fullmatch(r"json\((\w+)\)", value.text)
                assert match and match.group(1) in t.params, f"{rule['name']}: threshold {value.text}"
                assert float(t.params[match.group(1)].default) > 0


# --- the parameters example ---------------------------------------------------------------------------------


def test_the_parameters_example_names_only_declared_parameters() -> None:
    document = json.loads(PARAMETERS.read_text(encoding="utf-8"))
    assert document["$schema"].endswith("/deploymentParameters.json#")
    assert document["contentVersion"]
    given = document["parameters"]
    declared = template().params
    assert set(given) <= set(declared), f"not declared in alerts.bicep: {sorted(set(given) - set(declared))}"
    required = {name for name, p in declared.items() if not p.has_default}
    assert required <= set(given), f"required but missing: {sorted(required - set(given))}"
    for name, entry in given.items():
        assert set(entry) == {"value"}, name
        types = {"string": str, "int": int, "bool": bool, "array": list, "object": dict}
        expected = types[declared[name].type]
        assert isinstance(entry["value"], expected), f"{name}: expected {declared[name].type}"
        allowed = declared[name].decorators.get("allowed")
        assert allowed is None or entry["value"] in allowed[0], f"{name}: not one of {allowed}"


# --- real traffic: metric alerts on the Foundry resources' platform metrics ------------------------------

METRIC_ALERT_TYPE = "Microsoft.Insights/metricAlerts@"


def test_real_traffic_has_metric_alerts_per_deployment_for_429_5xx_and_availability() -> None:
    t = template()
    (symbol,) = t.symbols_of_type(METRIC_ALERT_TYPE)
    entries = t.value(t.vars["realTrafficRules"])
    assert [e["metricName"] for e in entries] == ["ModelRequests", "ModelRequests", "ModelAvailabilityRate"]
    assert entries[0]["statusCodes"] == ["429"] and "503" in entries[1]["statusCodes"]
    assert (entries[2]["operator"], entries[2]["timeAggregation"]) == ("LessThan", "Average")
    for e in entries:
        assert "What to do" in e["description"] and len(e["description"]) < 1024, e["name"]
        assert 0 <= e["severity"] <= 4
        assert isinstance(e["threshold"], ParamRef) and t.params[e["threshold"].name].has_default
    assert t.params["foundryResourceIds"].default == []  # opt-in: no resource ids, no metric alerts
    body = _text(t.resources[symbol][1])
    for needed in ("'ModelDeploymentName'", "'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'",
                   "actionGroup.id", "targetResourceType: 'Microsoft.CognitiveServices/accounts'"):
        assert needed in body, needed
    windows = [iso_duration(w) for w in t.candidates(ParamRef("realTrafficWindow"))]
    assert all(timedelta(minutes=5) <= w for w in windows)  # evaluated every 5 minutes
