"""Telemetry through the real exporters: Azure Monitor envelopes at a capture server on 127.0.0.1,
Prometheus exposition, an ingestion outage with offline storage, Entra auth for ingestion."""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor import config as config_mod
from monitor.canary.results import FailureKind, Usage
from monitor.daemon.health import State, Transition
from monitor.emulator.runner import EmulatorServer
from monitor.errors import MonitorError
from monitor.logs import event
from monitor.telemetry import Exporters, OtelTelemetry, azure_exporters, build

from .capture import CaptureServer, base_data, capture_server
from .certs import make_certs
from .factories import result

CFG = config_mod.loads(
    "resources:\n  - name: res\n    base_url: https://res.services.ai.azure.com/anthropic\n"
    "    auth: {api_key: k}\n    deployments: [{name: dep}, {name: other}]\n", "test", env={})
SECRET = "sk-telemetry-secret-7f3c"  # a recognisable value that must never become an attribute


def telemetry_to(cap: CaptureServer, tmp: Path | None = None, **options: Any) -> OtelTelemetry:
    exporters = Exporters()
    exporters.add("azure-monitor", *azure_exporters(cap.connection_string, config_mod.Telemetry(), tmp,
                                                     **options))
    tel = OtelTelemetry(exporters, instance_id="instance-1", location="westeurope")
    tel.fleet(CFG, {})
    return tel


def transition(new: State, previous: State = State.HEALTHY) -> Transition:
    return Transition(("res", "dep"), previous, new, datetime.now(UTC), None, 42.0, FailureKind.RATE_LIMITED,
                      "back off", "req_t", "apim_t", "429")


def test_one_canary_of_each_outcome_lands_as_the_four_envelope_types() -> None:
    with capture_server() as cap:
        tel = telemetry_to(cap)
        tel.record(result(usage=Usage(21, 1)), 0.0000264)
        tel.record(result(FailureKind.OVERLOADED, status=529, request_id="req_fail",
                          apim_request_id="apim_fail"), None)
        tel.transition(transition(State.THROTTLED))
        tel.shutdown()
        deps, avail = cap.of_type("RemoteDependencyData"), cap.of_type("AvailabilityData")
        events, metrics = cap.of_type("EventData"), cap.of_type("MetricData")

    assert len(deps) == 2 and len(avail) == 2 and len(events) == 1
    by_success = {base_data(d)["success"]: base_data(d) for d in deps}
    ok_span, failed_span = by_success[True], by_success[False]
    assert failed_span["name"] == "chat dep" and ok_span["name"] == "chat dep"
    props = failed_span["properties"]
    assert props["foundry_monitor.request_id"] == "req_fail"
    assert props["foundry_monitor.apim_request_id"] == "apim_fail"
    assert props["foundry_monitor.kind"] == "overloaded" and props["foundry_monitor.status_code"] == "529"
    assert ok_span["properties"]["gen_ai.usage.input_tokens"] == "21"
    assert ok_span["type"] == "GenAI | anthropic"
    assert failed_span["duration"] == "0.00:00:00.200"

    a_fail = next(base_data(a) for a in avail if not base_data(a)["success"])
    assert a_fail["name"] == "res/dep" and a_fail["runLocation"] == "test"
    assert a_fail["message"].startswith("overloaded: ")
    assert a_fail["properties"]["foundry_monitor.request_id"] == "req_fail"
    # the availability record hangs off its span: one operation per canary in Application Insights
    span_ops = {d["tags"]["ai.operation.id"] for d in deps}
    assert {a["tags"]["ai.operation.id"] for a in avail} == span_ops and len(span_ops) == 2
    canary_ids = {base_data(d)["properties"]["foundry_monitor.canary_id"] for d in deps}
    assert {base_data(a)["id"] for a in avail} == canary_ids

    ev = base_data(events[0])
    assert ev["name"] == "foundry_monitor.state_change"
    assert ev["properties"]["foundry_monitor.state.to"] == "throttled"
    assert ev["properties"]["foundry_monitor.request_id"] == "req_t"

    names = {m["name"] for e in metrics for m in base_data(e)["metrics"]}
    assert {"gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk",
            "gen_ai.client.token.usage", "foundry_monitor.canary.results", "foundry_monitor.canary.cost",
            "foundry_monitor.deployment.state"} <= names
    assert "_OTELRESOURCE_" not in names
    roles = {e["tags"]["ai.cloud.role"] for e in cap.envelopes}
    instances = {e["tags"]["ai.cloud.roleInstance"] for e in cap.envelopes}
    assert roles == {"foundry-monitor"} and instances == {"instance-1"}
    assert all(r["path"].endswith("/v2.1/track") for r in cap.requests)


def test_the_daemons_own_warnings_become_traces_but_canary_lines_do_not() -> None:
    logger = logging.getLogger("monitor.telemetry-test")
    logger.setLevel(logging.INFO)
    with capture_server() as cap:
        tel = telemetry_to(cap)
        tel.capture_logs(logger)
        event(logger, logging.ERROR, "reload failed; the previous config keeps running", event="reload",
              ok=False, error="checks.yaml:3: bad")
        event(logger, logging.WARNING, "canary", event="canary", deployment="dep", kind="overloaded")
        event(logger, logging.INFO, "config reloaded", event="reload", ok=True)  # below WARNING
        tel.shutdown()
        messages = [base_data(m) for m in cap.of_type("MessageData")]
    assert [m["message"] for m in messages] == ["reload failed; the previous config keeps running"]
    assert messages[0]["severityLevel"] == 3
    assert messages[0]["properties"]["foundry_monitor.error"] == "checks.yaml:3: bad"
    assert not logger.handlers  # shutdown detached the bridge


def test_prometheus_exposition_uses_semconv_names_and_buckets() -> None:
    tel = OtelTelemetry(instance_id="i")
    tel.fleet(CFG, {("res", "other"): State.HEALTHY})
    tel.record(result(total_s=0.3, ttft_s=0.15, usage=Usage(20, 1)), 0.00002)
    tel.record(result(FailureKind.RATE_LIMITED, status=429), None)
    tel.transition(transition(State.DOWN))
    tel.reloaded(False)
    text = tel.metrics().decode()
    tel.shutdown()

    for family in ("gen_ai_client_operation_duration_seconds",
                   "gen_ai_client_operation_time_to_first_chunk_seconds", "gen_ai_client_token_usage"):
        assert f"# TYPE {family} histogram" in text
    assert re.search(r'gen_ai_client_operation_duration_seconds_bucket\{[^}]*error_type="",[^}]*le="0.32"'
                     r'[^}]*\} 1.0', text)
    assert re.search(r'gen_ai_client_operation_duration_seconds_bucket\{[^}]*le="0.16"[^}]*\} 0.0', text)
    # token usage: sum and count, one +Inf bucket (a canary's tokens are fixed by its prompt)
    assert re.search(r'gen_ai_client_token_usage_sum\{[^}]*gen_ai_token_type="input"[^}]*\} \d', text)
    token_buckets = r'gen_ai_client_token_usage_bucket\{[^}]*gen_ai_token_type="input"[^}]*le="([^"]+)"'
    assert re.findall(token_buckets, text) == ["+Inf"]
    assert re.search(r'foundry_monitor_canary_results_total\{[^}]*error_type="rate_limited"[^}]*'
                     r'foundry_monitor_kind="rate_limited"[^}]*\} 1.0', text)
    assert re.search(r'foundry_monitor_deployment_state\{[^}]*gen_ai_request_model="dep"[^}]*\} 4.0', text)
    assert re.search(r'foundry_monitor_deployment_state\{[^}]*gen_ai_request_model="other"[^}]*\} 1.0', text)
    assert re.search(r'foundry_monitor_config_reloads_total\{[^}]*foundry_monitor_result="failed"[^}]*\} 1.0',
                     text)
    assert re.search(r"foundry_monitor_config_last_reload_success\{[^}]*\} 0.0", text)
    assert "foundry_monitor_canary_cost_total" in text


ALLOWED_METRIC_ATTRIBUTES = {
    "gen_ai.provider.name", "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model",
    "server.address", "server.port", "error.type", "gen_ai.token.type", "foundry_monitor.resource",
    "foundry_monitor.location", "foundry_monitor.kind", "foundry_monitor.recheck", "foundry_monitor.state",
    "foundry_monitor.result",
}


def test_metric_attributes_are_bounded_and_never_carry_ids_messages_or_secrets() -> None:
    with capture_server() as cap:
        tel = telemetry_to(cap)
        for i, kind in enumerate(FailureKind):
            tel.record(result(kind, request_id=f"req_{i}", apim_request_id=f"apim_{i}",
                              detail=f"server said {SECRET}"), 0.001)
        tel.reloaded(True)
        prom = tel.metrics().decode()
        tel.shutdown()
        metrics = cap.of_type("MetricData")
    keys = {k for e in metrics for k in base_data(e).get("properties", {})}
    assert keys <= ALLOWED_METRIC_ATTRIBUTES, keys - ALLOWED_METRIC_ATTRIBUTES
    values = " ".join(str(v) for e in metrics for v in base_data(e).get("properties", {}).values())
    for text in (values, prom):
        assert SECRET not in text and "req_3" not in text and "apim_3" not in text
        assert "server said" not in text and "hint for" not in text


@pytest.mark.timeout(90)
def test_ingestion_outage_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    """503 for a while, then connection refused, then back: every canary's availability record and span
    arrive exactly once (offline storage under the data directory, re-sent after a later success).
    Time is compressed: each flush stands for one 5 s export of the batch processors, so 36 failed
    exports in each phase are three minutes of 503 and three of a dead endpoint."""
    cap = CaptureServer().start()
    storage = tmp_path / "telemetry"
    tel = telemetry_to(cap, storage, storage_min_retry_interval=1)
    sent: list[str] = []

    def canary(n: int) -> None:
        for _ in range(n):
            rid = f"req_{len(sent)}"
            sent.append(rid)
            tel.record(result(request_id=rid), None)
        tel.flush(5)

    try:
        canary(3)  # healthy
        cap.status = 503
        for _ in range(36):
            canary(2)
        cap.stop()  # down: connection refused
        for _ in range(36):
            canary(2)
        assert any(storage.rglob("*.blob*")), "nothing was kept while ingestion was down"
        cap.start()
        cap.status = 200

        def all_arrived(c: CaptureServer) -> bool:
            return {base_data(a)["properties"]["foundry_monitor.request_id"]
                    for a in c.of_type("AvailabilityData")} >= set(sent)

        for _ in range(200):  # later successful exports drain the stored batches, 10 a time (bounded)
            if all_arrived(cap):
                break
            canary(1)
            cap.wait_for(all_arrived, 0.5)
        tel.shutdown()
    finally:
        cap.stop()
    avail = Counter(base_data(a)["properties"]["foundry_monitor.request_id"]
                    for a in cap.of_type("AvailabilityData"))
    spans = Counter(base_data(d)["properties"]["foundry_monitor.request_id"]
                    for d in cap.of_type("RemoteDependencyData"))
    assert set(avail) == set(sent) and set(spans) == set(sent)
    assert max(avail.values()) == 1 and max(spans.values()) == 1
    assert any(r["status"] == 503 for r in cap.requests)


def test_entra_ingestion_sends_a_managed_identity_token_over_tls(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    certs = make_certs(tmp_path)
    with EmulatorServer() as emu, capture_server(tls=certs.server) as cap:
        for name, value in emu.identity_env().items():
            monkeypatch.setenv(name, value)
        cfg = config_mod.loads(
            f"telemetry: {{connection_string: '{cap.connection_string}', credential: managed_identity}}\n"
            f"resources:\n  - name: res\n    base_url: {emu.base_url}/anthropic\n"
            "    auth: {api_key: k}\n    deployments: [{name: dep}]\n", "test", env={})
        tel = build(cfg, tmp_path, instance_id="i", connection_verify=certs.ca)
        tel.record(result(), None)
        tel.shutdown()
        assert cap.of_type("AvailabilityData")
        auth = {r["headers"].get("Authorization", "") for r in cap.requests}
    assert auth and all(a.startswith("Bearer ") and len(a) > 20 for a in auth)


def test_a_bad_connection_string_is_a_clear_error_without_the_key(tmp_path: Path) -> None:
    cfg = config_mod.loads(
        f"telemetry: {{connection_string: 'InstrumentationKey={SECRET};IngestionEndpoint=http://127.0.0.1:9/'}}\n"
        "resources:\n  - name: res\n    resource: res\n    auth: {api_key: k}\n"
        "    deployments: [{name: dep}]\n", "test", env={})
    with pytest.raises(MonitorError) as err:
        build(cfg, tmp_path, instance_id="i")
    assert "telemetry.connection_string" in str(err.value)
    assert SECRET not in str(err.value)


def test_otlp_export_follows_the_standard_endpoint_variable(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with capture_server() as otlp:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{otlp.port}")
        monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
        tel = build(CFG, tmp_path, instance_id="i")
        assert tel.exporter_names == ["prometheus", "otlp"]
        tel.record(result(), None)
        tel.shutdown()
        paths = {r["path"] for r in otlp.requests if r["bytes"] > 0}
    assert {"/v1/traces", "/v1/metrics", "/v1/logs"} <= paths


def test_telemetry_debug_prints_spans_and_records_to_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    tel = build(CFG, tmp_path, instance_id="i", debug=True)
    tel.record(result(request_id="req_console"), None)
    tel.shutdown()
    err = capsys.readouterr().err
    assert tel.exporter_names == ["prometheus", "console"]
    assert '"name": "chat dep"' in err and "req_console" in err and "gen_ai.client.operation.duration" in err


def test_control_plane_changes_land_as_custom_events_with_before_and_after() -> None:
    with capture_server() as cap:
        tel = telemetry_to(cap)
        tel.event("foundry_monitor.drift", {"change": "drift", "account": "team-a", "deployment": "haiku",
                                            "field": "capacity", "before": "50", "after": "80",
                                            "subscription": None}, datetime.now(UTC))
        tel.shutdown()
        (event_envelope,) = cap.of_type("EventData")
    ev = base_data(event_envelope)
    assert ev["name"] == "foundry_monitor.drift"
    props = ev["properties"]
    assert (props["foundry_monitor.field"], props["foundry_monitor.before"], props["foundry_monitor.after"]) \
        == ("capacity", "50", "80")
    assert props["foundry_monitor.location"] == "westeurope" and "foundry_monitor.subscription" not in props
