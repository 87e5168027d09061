"""What each canary sends to Azure Monitor (issue #18), through the real exporters to a capture server:
by default one availability record per canary, a span only for failed and slow canaries, and only the
daemon's own metrics; `telemetry.azure.spans` / `.metrics` widen or narrow it. Prometheus keeps every
series whatever goes to Azure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor import config as config_mod
from monitor.canary.results import FailureKind, Usage
from monitor.errors import ConfigError
from monitor.telemetry import OtelTelemetry, build

from .capture import CaptureServer, base_data, capture_server
from .factories import result

PER_DEPLOYMENT = {"gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk",
                  "gen_ai.client.token.usage", "foundry_monitor.canary.results",
                  "foundry_monitor.canary.cost", "foundry_monitor.deployment.state"}
NO_TRACE = "0" * 32


def config(cap: CaptureServer, azure: str = "") -> config_mod.Config:
    return config_mod.loads(
        f"telemetry:\n  connection_string: {json.dumps(cap.connection_string)}\n  offline_storage: false\n"
        f"{azure}"
        "defaults: {latency_slo: 1s}\n"
        "resources:\n  - name: res\n    base_url: https://res.services.ai.azure.com/anthropic\n"
        "    auth: {api_key: k}\n    deployments: [{name: dep}, {name: other}]\n", "test", env={})


def send_three(tel: OtelTelemetry) -> None:
    """An ok canary, an ok but slow one (2 s against a 1 s objective) and a failed one."""
    tel.record(result(usage=Usage(21, 1)), 0.0000264)
    tel.record(result(total_s=2.0, ttft_s=1.5, deployment="other"), 0.0000264)
    tel.record(result(FailureKind.OVERLOADED, status=529, request_id="req_fail"), None)
    tel.reloaded(True)


def metric_names(cap: CaptureServer) -> set[str]:
    return {m["name"] for e in cap.of_type("MetricData") for m in base_data(e)["metrics"]}


def test_by_default_every_canary_is_an_availability_record_and_only_failed_or_slow_ones_a_span(
        tmp_path: Path) -> None:
    with capture_server() as cap:
        tel = build(config(cap), tmp_path, instance_id="i", retry_total=0)
        tel.fleet(config(cap), {})
        send_three(tel)
        prometheus = tel.metrics().decode()
        tel.shutdown()
        avail = [base_data(a) for a in cap.of_type("AvailabilityData")]
        spans = [base_data(d) for d in cap.of_type("RemoteDependencyData")]
        by_kind = {a["properties"]["foundry_monitor.kind"] + a["name"]: a for a in avail}
        ok_tags = next(e["tags"] for e in cap.of_type("AvailabilityData")
                       if base_data(e)["name"] == "res/dep" and base_data(e)["success"])
        names = metric_names(cap)

    assert len(avail) == 3
    assert sorted((s["name"], s["success"]) for s in spans) == [("chat dep", False), ("chat other", True)]
    slow = next(s for s in spans if s["success"])
    assert slow["properties"]["foundry_monitor.slow"] == "True"
    # everything the alert rules, dashboard and report read is on the availability record
    ok = by_kind["okres/dep"]
    for key in ("foundry_monitor.kind", "foundry_monitor.attempt", "foundry_monitor.resource",
                "gen_ai.request.model", "foundry_monitor.model", "foundry_monitor.request_id",
                "foundry_monitor.apim_request_id", "foundry_monitor.total_s", "foundry_monitor.ttft_s",
                "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "foundry_monitor.cost_usd"):
        assert key in ok["properties"], key
    assert "foundry_monitor.status_code" not in ok["properties"]  # an ok canary is always a 200
    assert by_kind["overloadedres/dep"]["properties"]["foundry_monitor.status_code"] == "529"
    assert ok_tags["ai.operation.id"] == NO_TRACE  # no span was made for it
    # Azure gets the daemon's own metrics only; Prometheus keeps the per-deployment series
    assert names == {"foundry_monitor.config.last_reload_success", "foundry_monitor.config.reloads"}
    assert 'gen_ai_client_operation_duration_seconds_count{' in prometheus
    assert "foundry_monitor_config_reloads_total{" in prometheus


def test_spans_all_and_metrics_all_send_a_span_and_every_series_for_every_canary(tmp_path: Path) -> None:
    with capture_server() as cap:
        cfg = config(cap, "  azure: {spans: all, metrics: all}\n")
        tel = build(cfg, tmp_path, instance_id="i", retry_total=0)
        tel.fleet(cfg, {})
        send_three(tel)
        tel.shutdown()
        spans = cap.of_type("RemoteDependencyData")
        avail = cap.of_type("AvailabilityData")
        names = metric_names(cap)
    assert len(spans) == 3 and len(avail) == 3
    # each availability record belongs to its span's operation
    assert {e["tags"]["ai.operation.id"] for e in avail} == {e["tags"]["ai.operation.id"] for e in spans}
    assert PER_DEPLOYMENT <= names and "foundry_monitor.config.reloads" in names


def test_spans_none_and_metrics_none_send_availability_records_only(tmp_path: Path) -> None:
    with capture_server() as cap:
        cfg = config(cap, "  azure: {spans: none, metrics: none}\n")
        tel = build(cfg, tmp_path, instance_id="i", retry_total=0)
        tel.fleet(cfg, {})
        send_three(tel)
        prometheus = tel.metrics().decode()
        tel.shutdown()
        types = {e["data"]["baseType"] for e in cap.envelopes}
        count = len(cap.of_type("AvailabilityData"))
    assert types == {"AvailabilityData"} and count == 3
    assert "foundry_monitor_canary_results_total{" in prometheus


def test_without_an_exporter_no_span_or_record_is_made_but_prometheus_counts_every_canary() -> None:
    tel = OtelTelemetry(instance_id="i")
    tel.record(result(), 0.00002)
    tel.record(result(FailureKind.TIMEOUT, total_s=None), None)
    text = tel.metrics().decode()
    tel.shutdown()
    assert text.count("foundry_monitor_canary_results_total{") == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("telemetry:\n  azure: {spans: errors}\n",
     "test:2: telemetry.azure.spans: expected 'failures', 'all' or 'none', got \"errors\""),
    ("telemetry:\n  azure:\n    metrics: some\n",
     "test:3: telemetry.azure.metrics: expected 'daemon', 'all' or 'none', got \"some\""),
    ("telemetry:\n  azure:\n    span: all\n",
     "test:3: telemetry.azure.span: unknown key"),
])
def test_export_options_are_checked_with_their_key_and_line(text: str, expected: str) -> None:
    base = ("resources:\n  - name: res\n    resource: r\n    auth: {api_key: k}\n"
            "    deployments: [{name: dep}]\n")
    with pytest.raises(ConfigError) as err:
        config_mod.loads(text + base, "test", env={})
    assert str(err.value).startswith(expected)
