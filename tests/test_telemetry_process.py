"""`foundry-monitor run` with telemetry, as a real process: all four Application Insights envelope
types reach a capture server, `/metrics` serves semconv histograms, and a real Prometheus (Debian's
package, installed by the test command) scrapes them with the expected labels."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.emulator.runner import EmulatorServer

from .capture import capture_server
from .daemon_helpers import config_text, monitor_process
from .loopback import free_port
from .test_daemon import scenario
from .test_daemon_process import ready, wait_for

IDENTITY_VARS = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_USERNAME", "MSI_ENDPOINT", "MSI_SECRET", "APPLICATIONINSIGHTS_CONNECTION_STRING",
                 "OTEL_EXPORTER_OTLP_ENDPOINT")


@contextmanager
def run_daemon(config: Path, port: int, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    full = {k: v for k, v in os.environ.items() if k not in IDENTITY_VARS} | env
    args = ["run", "--config", str(config), "--port", str(port), "--log-format", "json",
            "--location", "lab-1"]
    with log.open("wb") as out, monitor_process(args, stdout=out, env=full) as proc:
        yield proc


def stop(proc: subprocess.Popen[bytes]) -> float:
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    proc.wait(15)
    return time.monotonic() - t0


def daemon_config(emu: EmulatorServer, tmp: Path, deployments: list[str], telemetry: str = "",
                  entra: bool = False) -> Path:
    extra = ""
    if entra:
        extra = (f"  - name: entra\n    base_url: {emu.base_url}\n    auth: {{entra: {{}}}}\n"
                 "    deployments:\n      - {name: healthy, model: claude-haiku-4-5}\n")
    text = config_text(emu.base_url, emu.api_key, deployments, tmp / "data", extra_resources=extra)
    path = tmp / "checks.yaml"
    path.write_text(telemetry + text)
    return path


@pytest.mark.timeout(90)
def test_one_run_produces_all_four_envelope_types_and_semconv_histograms(tmp_path: Path) -> None:
    with EmulatorServer(scenario=scenario(["healthy"])) as emu, capture_server() as cap:
        telemetry = f"telemetry: {{connection_string: {json.dumps(cap.connection_string)}}}\n"
        cfg = daemon_config(emu, tmp_path, ["healthy", "retired"], telemetry=telemetry)
        port = free_port()
        with run_daemon(cfg, port, {}, tmp_path / "daemon.log") as proc:
            wait_for(lambda: ready(port), 20)
            wanted = {"RemoteDependencyData", "AvailabilityData", "EventData"}
            assert cap.wait_for(lambda c: all(c.of_type(t) for t in wanted), 30), \
                f"got {sorted({e['data']['baseType'] for e in cap.envelopes})}"
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            took = stop(proc)
        assert proc.returncode == 0 and took < 15
        assert cap.of_type("MetricData"), "metrics were not flushed at shutdown"
        envelopes = json.dumps(cap.envelopes)
        log = (tmp_path / "daemon.log").read_text()
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    for family in ("gen_ai_client_operation_duration_seconds",
                   "gen_ai_client_operation_time_to_first_chunk_seconds", "gen_ai_client_token_usage"):
        assert f"# TYPE {family} histogram" in text and f"{family}_bucket{{" in text
    assert 'foundry_monitor_location="lab-1"' in text
    assert 'foundry_monitor_kind="deployment_not_found"' in text
    run_locations = {e["data"]["baseData"]["runLocation"] for e in cap.of_type("AvailabilityData")}
    assert run_locations == {"lab-1"}
    assert emu.api_key not in envelopes and emu.api_key not in log and emu.api_key not in text
    assert '"telemetry: prometheus, azure-monitor"' in log


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("Debian's prometheus is not installed and this machine could not install it "
                    "(scripts/test installs it when run as root with apt-get)")
    return found


def query(port: int, promql: str) -> list[dict[str, Any]]:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql}, timeout=3)
    except httpx.HTTPError:
        return []
    result: list[dict[str, Any]] = r.json().get("data", {}).get("result", []) if r.status_code == 200 else []
    return result


EXPECTED = {  # PromQL -> labels every returned series must carry
    'gen_ai_client_operation_duration_seconds_bucket{le="+Inf"}':
        {"gen_ai_provider_name": "anthropic", "gen_ai_operation_name": "chat",
         "foundry_monitor_location": "lab-1"},
    "gen_ai_client_operation_time_to_first_chunk_seconds_count": {"gen_ai_provider_name": "anthropic"},
    'gen_ai_client_token_usage_count{gen_ai_token_type="output"}': {"gen_ai_operation_name": "chat"},
    'foundry_monitor_canary_results_total{foundry_monitor_kind="deployment_not_found"}':
        {"error_type": "deployment_not_found", "gen_ai_request_model": "retired"},
    'foundry_monitor_canary_results_total{foundry_monitor_kind="ok"}': {"foundry_monitor_recheck": "false"},
    "foundry_monitor_canary_cost_total": {"gen_ai_request_model": "healthy"},
    "foundry_monitor_deployment_state": {"foundry_monitor_location": "lab-1"},
    "foundry_monitor_entra_token_duration_seconds_count": {"foundry_monitor_resource": "entra"},
    'foundry_monitor_config_reloads_total{foundry_monitor_result="ok"}': {},
    "foundry_monitor_config_last_reload_success": {},
    "target_info": {"service_name": "foundry-monitor"},
}


@pytest.mark.timeout(120)
def test_a_real_prometheus_scrapes_every_metric_with_its_labels(tmp_path: Path) -> None:
    binary = prometheus_binary()
    with EmulatorServer(scenario=scenario(["healthy"])) as emu:
        cfg = daemon_config(emu, tmp_path, ["healthy", "retired"], entra=True)
        port, prom_port = free_port(), free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n  - job_name: foundry-monitor\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
        prom_cmd = [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn"]
        with run_daemon(cfg, port, emu.identity_env(), tmp_path / "daemon.log") as proc, \
                (tmp_path / "prometheus.log").open("wb") as prom_log:
            prom = subprocess.Popen(prom_cmd, stdout=prom_log, stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: ready(port), 20)
                proc.send_signal(signal.SIGHUP)  # a reload, so the reload counter has a series
                missing: list[str] = list(EXPECTED)
                deadline = time.monotonic() + 60
                while missing and time.monotonic() < deadline:
                    missing = [q for q in missing if not query(prom_port, q)]
                    if missing:
                        time.sleep(0.5)  # Prometheus's own scrape cadence; the loop is bounded
                assert not missing, f"no series from Prometheus for: {missing}"
                series = {q: query(prom_port, q) for q in EXPECTED}
            finally:
                prom.terminate()
                prom.wait(10)
            stop(proc)
    for promql, labels in EXPECTED.items():
        for s in series[promql]:
            metric = s["metric"]
            assert metric["job"] == "foundry-monitor"
            for k, v in labels.items():
                assert metric.get(k) == v, (promql, metric)
    states = {s["metric"]["gen_ai_request_model"] + "/" + s["metric"]["foundry_monitor_resource"]:
              float(s["value"][1]) for s in series["foundry_monitor_deployment_state"]}
    assert set(states) == {"healthy/emu", "retired/emu", "healthy/entra"}
