"""What a config costs, as `validate` prints it: Azure Monitor ingestion a day and a month from the
bytes bench/ingestion_bench.py measures, and the canaries' tokens a month from the pricing table."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor import cli, ingestion
from monitor import config as config_mod

CONN = "InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint=http://127.0.0.1:9/"


def fleet(n: int, *, interval: str = "60s", azure: str = "", extra: str = "") -> str:
    deps = ", ".join(f"{{name: d{i:04d}, model: claude-haiku-4-5}}" for i in range(n))
    return (f"defaults: {{interval: {interval}}}\n{azure}"
            f"resources:\n  - name: r\n    resource: r\n    auth: {{api_key: k}}\n{extra}"
            f"    deployments: [{deps}]\n")


def test_a_thousand_deployments_at_60s_by_default_cost_about_two_gb_a_day() -> None:
    est = ingestion.estimate(config_mod.loads(fleet(1000), "test", env={}))
    assert est.canaries_per_day == 1_440_000
    assert ingestion.describe(est, exporting=True) == [
        # haiku: 30 // 3 + 16 = 26 input tokens at $1 and 1 output token at $5 per million: $0.000031 a
        # canary, 1,440 a day for 30.4375 days
        "canaries: 1,440,000 a day; estimated token cost $1,358.73 a month (list prices)",
        # 1,440,000 x 1,340 B + 1,440 exports x 615 B of the daemon's own metric
        "Azure Monitor ingestion (estimated): 1.93 GB a day, 58.76 GB a month (1,340 bytes per canary, "
        "metrics 0.9 MB a day)",
        "  each failed or slow canary adds 1,590 bytes (its span); see README \"Telemetry\" for what each "
        "option costs",
    ]


def test_every_span_and_series_to_azure_costs_what_it_did_before_the_budget() -> None:
    cfg = config_mod.loads(fleet(1000, azure="telemetry: {azure: {spans: all, metrics: all}}\n"), "test",
                           env={})
    est = ingestion.estimate(cfg)
    assert est.bytes_per_canary == 1340 + 1590
    assert est.metric_bytes_per_day == (7 * 1000 * 920 + 615) * 1440
    assert round(est.gb_per_day, 1) == 13.5


def test_a_coarser_export_interval_divides_the_metric_bytes() -> None:
    every = ingestion.estimate(config_mod.loads(
        fleet(10, azure="telemetry: {azure: {metrics: all}}\n"), "test", env={}))
    coarse = ingestion.estimate(config_mod.loads(
        fleet(10, azure="telemetry: {export_interval: 5m, azure: {metrics: all}}\n"), "test", env={}))
    none = ingestion.estimate(config_mod.loads(
        fleet(10, azure="telemetry: {azure: {metrics: none, spans: none}}\n"), "test", env={}))
    assert coarse.metric_bytes_per_day == pytest.approx(every.metric_bytes_per_day / 5)
    assert none.metric_bytes_per_day == 0 and none.failure_bytes == 0


def test_a_budget_that_slows_the_canaries_slows_the_estimate_too() -> None:
    # $0.10 a month for one haiku deployment: 0.1 / 3.1e-05 USD = 3,226 canaries a month instead of 43,830
    est = ingestion.estimate(config_mod.loads(fleet(1, extra="    budget: {monthly_usd: 0.1}\n"), "test",
                                              env={}))
    assert est.tokens_usd_per_month == pytest.approx(0.1)
    assert est.canaries_per_day == pytest.approx(0.1 / 0.000031 / 30.4375)


def test_a_model_without_a_price_is_named_and_left_out_of_the_cost() -> None:
    text = fleet(1).replace("model: claude-haiku-4-5", "model: my-fine-tune")
    lines = ingestion.describe(ingestion.estimate(config_mod.loads(text, "test", env={})), exporting=True)
    assert lines[0] == ("canaries: 1,440 a day; estimated token cost $0.00 a month (list prices); no price "
                        "for 1 deployment(s): r/d0000")


def test_validate_states_the_bill_and_whether_anything_is_sent_now(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = str(tmp_path / "checks.yaml")
    (tmp_path / "checks.yaml").write_text(fleet(2))
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    assert cli.main(["validate", "--config", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "canaries: 2,880 a day; estimated token cost $2.72 a month (list prices)"
    assert out[2] == ("Azure Monitor ingestion (estimated): 4.7 MB a day, 0.14 GB a month (1,340 bytes per "
                      "canary, metrics 0.9 MB a day); nothing is sent now: no connection string "
                      "(Prometheus only)")
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", CONN)
    assert cli.main(["validate", "--config", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].endswith("metrics 0.9 MB a day)")
    assert "InstrumentationKey" not in "\n".join(out)
