"""`foundry-monitor report` as users run it: from the local store, and from Log Analytics with a
managed identity (the emulator's token endpoint) over TLS to the query API fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.emulator.runner import EmulatorServer
from monitor.store.sqlite import Store

from .certs import make_certs
from .fake_log_analytics import fake_log_analytics
from .report_seed import seed
from .test_reports import CONFIG, fill
from .test_telemetry_process import IDENTITY_VARS

KEY = "sk-report-cli-secret-91ab"


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    drop = {*IDENTITY_VARS, "FOUNDRY_MONITOR_WORKSPACE_ID"}
    full = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run([sys.executable, "-m", "monitor", "report", *args], capture_output=True, text=True,
                          timeout=60, env=full | (env or {}))


def write_config(tmp: Path, extra: str = "") -> Path:
    text = CONFIG.format(tz="UTC").replace("api_key: k", f"api_key: {KEY}")
    path = tmp / "checks.yaml"
    path.write_text(f"data_dir: {json.dumps(str(tmp / 'data'))}\n{extra}{text}")
    return path


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from datetime import UTC, datetime

    tmp = tmp_path_factory.mktemp("cli")
    history = seed(datetime.now(UTC), days=10)
    store = Store.open(tmp / "data" / "results.sqlite3")
    fill(store, history)
    store.close()
    return tmp, history


def test_the_local_report_in_every_format(seeded: tuple[Path, Any]) -> None:
    tmp, _ = seeded
    cfg = write_config(tmp)
    out = run(["--config", str(cfg), "--days", "7", "--format", "json"])
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["source"] == "local" and report["days"] == 7 and report["overall"]["canaries"] > 2000
    html = tmp / "report.html"
    out = run(["--config", str(cfg), "--format", "html", "--output", str(html)])
    assert out.returncode == 0 and "report written to" in out.stderr
    assert html.read_text().startswith("<!doctype html>")
    text = run(["--config", str(cfg)])
    assert text.returncode == 0 and "availability" in text.stdout
    for o in (out, text):
        assert KEY not in o.stdout + o.stderr


def test_the_log_analytics_report_uses_a_managed_identity_over_tls(seeded: tuple[Path, Any],
                                                                   tmp_path: Path) -> None:
    _, history = seeded
    certs = make_certs(tmp_path)
    with EmulatorServer() as emu, fake_log_analytics(history, certs.server) as la:
        extra = (f"reports: {{workspace_id: ws-cli, credential: managed_identity, endpoint: '{la.endpoint}', "
                 "timezone: UTC}\n")
        cfg = write_config(tmp_path, extra)
        cfg.write_text(cfg.read_text().replace("reports: {timezone: UTC, slo_target: 99.5}\n", ""))
        out = run(["--config", str(cfg), "--format", "json"],
                  env={**emu.identity_env(), "REQUESTS_CA_BUNDLE": certs.ca})
        requests = list(la.requests)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["source"] == "log-analytics"
    requested = {u["resource"]: u["requests"] for u in report["real_usage"]}
    assert requested == {"res-a": 125000.0, "res-b": 40000.0}
    assert requests and all(r["path"] == "/v1/workspaces/ws-cli/query" for r in requests)
    assert all(r["authorization"].startswith("Bearer ") for r in requests)


@pytest.mark.parametrize(("args", "extra", "message"), [
    (["--source", "log-analytics"], "", "needs reports.workspace_id"),
    (["--timezone", "Mars/Olympus"], "", 'unknown time zone "Mars/Olympus"'),
    (["--days", "0"], "", "--days must be between 1 and 400"),
    ([], "store: {path: /nonexistent/dir/results.sqlite3}\n", "no results store at /nonexistent/dir"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, args: list[str], extra: str,
                                                message: str) -> None:
    cfg = write_config(tmp_path, extra)
    out = run(["--config", str(cfg), *args])
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and KEY not in out.stderr
