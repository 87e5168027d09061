"""The control plane in the report (`report`, every format): the period's changes the daemon kept in its
store, the inventory of its last ARM read with days to retirement, and quota headroom: a deployment
throttled while its own request limit shows headroom points at the shared subscription quota."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor import config as config_mod
from monitor.azure.snapshot import STORE_KEY, to_json
from monitor.canary.results import FailureKind
from monitor.reports import control_plane
from monitor.reports.build import build_report, period_for
from monitor.reports.local import LocalSource
from monitor.reports.model import AzureView, Percentiles, Report
from monitor.reports.render import render
from monitor.store.sqlite import Store, result_row

from .factories import result
from .report_seed import NOW
from .test_inventory import SUB, dep, snap

ACCOUNT_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/team-a"
HAND = f"""resources:
  - name: main
    base_url: https://team-a.services.ai.azure.com/anthropic/
    azure_resource_id: {ACCOUNT_ID}
    auth: {{api_key: k}}
    deployments: [{{name: haiku, model: claude-haiku-4-5}}]
"""
DISCOVERY = f"discovery:\n  subscriptions: [{SUB}]\n"


def cfg(discovery: bool = True) -> config_mod.Config:
    text = f"reports: {{timezone: UTC}}\ndefaults: {{interval: 60s}}\n{HAND}"
    text += DISCOVERY if discovery else ""
    return config_mod.loads(text, "checks.yaml", env={})


def seeded(path: Path, *, throttled_canaries: int = 0) -> Store:
    """A store as the daemon leaves it: the last ARM snapshot, two changes this week, one older."""
    s = Store.open(path)
    haiku = dep("haiku")  # 50 requests/min, 50,000 tokens/min; GlobalStandard claude-haiku-4-5
    read = replace(snap(haiku, dep("sonnet-x"), retirement=date(2026, 12, 20), quota=(40, 100)),
                   taken_at=NOW - timedelta(minutes=5))
    s.put_state(STORE_KEY, to_json(read), NOW)
    s.add_inventory_events(NOW - timedelta(hours=3), [
        {"kind": "drift", "subscription": SUB, "account": "team-a", "deployment": "haiku",
         "field": "capacity", "before": "50", "after": "80"},
        {"kind": "retirement", "subscription": SUB, "account": "team-a", "deployment": "haiku",
         "field": "30", "before": "claude-haiku-4-5 20251001", "after": "2026-12-20"}])
    s.add_inventory_events(NOW - timedelta(days=40), [
        {"kind": "added", "subscription": SUB, "account": "team-a", "deployment": "gone-long-ago"}])
    day = period_for(NOW, 1, "UTC", to_now=True)
    s.save_results([result_row(result(FailureKind.RATE_LIMITED, resource="main", deployment="haiku",
                                      at=day.start + timedelta(minutes=m), status=429), None)
                    for m in range(throttled_canaries)])
    return s


def report_of(store: Store, discovery: bool = True) -> Report:
    return build_report(LocalSource(store), cfg(discovery), NOW, days=2, to_now=True)


def view(throttled: float | None, peak: float | None, requests: float | None = 3000.0) -> AzureView:
    """Azure's view of main/haiku as platform.views gives it (the emulator test pins those figures)."""
    return AzureView(
        resource="main", deployment="haiku", source="Azure Monitor platform metrics", requests=requests,
        throttled=throttled, client_errors=0.0, server_errors=0.0, throttled_pct=None, client_errors_pct=None,
        server_errors_pct=None, input_tokens=None, output_tokens=None, cache_read_tokens=None,
        cache_write_tokens=None, estimated_cost_usd=None, availability_pct=None, ttft_ms=None,
        canary_availability_pct=None, canary_ttft_ms=Percentiles(), canary_requests=0, canary_share_pct=None,
        disagreement=None, note=None, days=[], peak_requests_per_min=peak, grain_s=60.0)


def test_every_format_shows_the_periods_changes_and_the_inventory(tmp_path: Path) -> None:
    store = seeded(tmp_path / "r.sqlite3")
    try:
        report = report_of(store)
    finally:
        store.close()
    cp = report.control_plane
    assert cp is not None and cp.inventory is not None
    assert [c.kind for c in cp.changes] == ["retirement", "drift"]  # the 40-day-old addition is outside
    assert cp.changes[1].before == "50" and cp.changes[1].after == "80"
    haiku = next(r for r in cp.inventory if r.deployment == "haiku")
    assert haiku.days_to_retirement == (date(2026, 12, 20) - NOW.date()).days
    assert haiku.rate_limits == "50 requests/min, 50000 tokens/min" and haiku.monitored
    assert cp.inventory_at == (NOW - timedelta(minutes=5)).isoformat(timespec="seconds")
    drift = "team-a/haiku: capacity changed from 50 to 80"
    retire = "model claude-haiku-4-5 20251001 retires on 2026-12-20 (30 days or less left)"
    for fmt in ("text", "markdown", "html"):
        out = render(report, fmt)
        assert drift in out and retire in out, fmt
        assert "sonnet-x" in out and f"{haiku.days_to_retirement} d (2026-12-20)" in out, fmt
        assert "AIServices.GlobalStandard.claude-haiku-4-5 40/100" in out, fmt
    data = json.loads(render(report, "json"))["control_plane"]
    assert data["changes"][1]["field"] == "capacity" and data["changes"][1]["after"] == "80"
    assert {r["deployment"] for r in data["inventory"]} == {"haiku", "sonnet-x"}
    rows = list(csv.reader(io.StringIO(render(report, "csv"))))  # one row per deployment and day, as before
    assert rows[0][:3] == ["date", "resource", "deployment"]


def test_without_discovery_the_report_has_no_control_plane_section(tmp_path: Path) -> None:
    store = seeded(tmp_path / "r.sqlite3")
    try:
        report = report_of(store, discovery=False)
    finally:
        store.close()
    assert report.control_plane is None
    assert all("Control plane" not in render(report, f) for f in ("text", "markdown", "html"))
    assert json.loads(render(report, "json"))["control_plane"] is None


def test_a_store_the_daemon_never_read_arm_with_says_so_and_lists_no_inventory(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "r.sqlite3")
    try:
        report = report_of(store)
    finally:
        store.close()
    cp = report.control_plane
    assert cp is not None and cp.inventory is None and cp.changes == []
    assert any("has not read Azure Resource Manager" in n for n in cp.notes)
    assert "none" in render(report, "text").split("Control plane")[1]


def section(store: Store | None, source: str = "local", views: list[AzureView] | None = None,
            ) -> control_plane.ControlPlane | None:
    p = period_for(NOW, 1, "UTC", to_now=True)
    return control_plane.section(cfg(), store, source, NOW, p.start, p.end, [], views)


def test_a_log_analytics_report_reads_the_control_plane_from_the_local_store_and_says_so(
        tmp_path: Path) -> None:
    store = seeded(tmp_path / "r.sqlite3")
    try:
        cp = section(store, "log-analytics")
    finally:
        store.close()
    assert cp is not None and len(cp.changes) == 2
    assert any("read from the local store" in n and "log-analytics" in n for n in cp.notes)
    none = section(None, "log-analytics")
    assert none is not None and none.inventory is None and "not here" in none.notes[0]


@pytest.mark.parametrize(("throttled", "peak", "pct", "keyword"), [
    # 600 × 429 while the busiest minute used 12 of its 50 requests/min: the shared quota is the limit
    (600.0, 12.0, 24.0, "the shared subscription quota (AIServices.GlobalStandard.claude-haiku-4-5) "
                        "is the likely limit"),
    (600.0, 49.0, 98.0, "raise this deployment's capacity"),  # at its own limit
    (0.0, 12.0, 24.0, None),  # not throttled: headroom shown, no hint
])
def test_quota_headroom_compares_real_peak_use_with_the_deployments_own_limit(
        tmp_path: Path, throttled: float, peak: float, pct: float, keyword: str | None) -> None:
    store = seeded(tmp_path / "r.sqlite3")
    try:
        cp = section(store, views=[view(throttled, peak)])
    finally:
        store.close()
    assert cp is not None
    (h,) = cp.headroom
    assert (h.resource, h.deployment, h.limit_requests_per_min) == ("main", "haiku", 50.0)
    assert h.peak_pct_of_limit == pct and h.throttled == throttled
    if keyword is None:
        assert h.hint is None
    else:
        assert h.hint is not None and keyword in h.hint
    if throttled and peak < 45:
        assert h.hint is not None and f"600 × 429) while using at most {pct:.0f}% of its own limit of 50 " \
            "requests/min" in h.hint
        assert "token limit, 50000 tokens/min, is not measured" in h.hint  # said, not silently ignored


def test_without_platform_metrics_throttled_canaries_get_the_arm_quota_hint(tmp_path: Path) -> None:
    store = seeded(tmp_path / "r.sqlite3", throttled_canaries=3)
    try:
        report = report_of(store)
    finally:
        store.close()
    assert report.control_plane is not None
    (h,) = report.control_plane.headroom
    assert h.peak_requests_per_min is None and h.throttled is None and h.canary_throttled == 3
    assert h.hint is not None and "own rate limits" in h.hint  # the subscription quota (40/100) has room
    text = render(report, "text")
    assert "main/haiku: limit 50 requests/min; no platform metrics (canaries throttled: 3)" in text




class _Named:
    """A report source seen only by its name (the Protocol seam): which store holds the control plane."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fetch(self, period: Any, *, summary_only: bool = False) -> Any:
        raise AssertionError("not read")


def test_the_report_command_opens_the_local_store_for_a_log_analytics_report_when_there_is_one(
        tmp_path: Path) -> None:
    from monitor.app import store_path
    from monitor.cli import _control_plane_store

    def with_data(discovery: bool) -> config_mod.Config:
        c = cfg(discovery)
        return c.model_copy(update={"data_dir": str(tmp_path)})

    la = _Named("log-analytics")
    assert _control_plane_store(with_data(True), la) is None  # no store here: the report says so
    seeded(store_path(with_data(True))).close()
    opened = _control_plane_store(with_data(True), la)
    assert opened is not None
    try:
        cp = control_plane.section(with_data(True), opened, la.name, NOW, NOW - timedelta(days=1), NOW,
                                   [], None)
        assert cp is not None and len(cp.changes) == 2
    finally:
        opened.close()
    assert _control_plane_store(with_data(True), _Named("local")) is None  # the local source has its own
    assert _control_plane_store(with_data(False), la) is None  # no discovery: nothing to read
