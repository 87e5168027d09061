"""Reports: the same seeded history gives the same Report from the local store and from Log Analytics
(an HTTPS fake of the query API with a trustme CA); arithmetic on hand-built cases; every renderer."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor import config as config_mod
from monitor.canary.results import FailureKind
from monitor.errors import MonitorError
from monitor.reports.build import build_report, period_for
from monitor.reports.local import LocalSource
from monitor.reports.loganalytics import LogAnalyticsSource
from monitor.reports.model import Report
from monitor.reports.render import FORMATS, render
from monitor.store.rollup import bucket, bucket_ms, percentile, percentiles
from monitor.store.sqlite import Store, result_row

from .certs import Certs, make_certs
from .factories import result
from .fake_log_analytics import FakeCredential, FakeLogAnalytics, fake_log_analytics
from .report_seed import NOW, Seed, costs, seed

CONFIG = """
reports: {{timezone: {tz}, slo_target: 99.5}}
defaults: {{interval: 10m, timeout: 30s}}
resources:
  - name: res-a
    resource: res-a
    auth: {{api_key: k}}
    deployments: [{{name: opus, model: claude-opus-4-5}}, {{name: sonnet, model: claude-sonnet-4-5}}]
  - name: res-b
    resource: res-b
    auth: {{api_key: k}}
    deployments: [{{name: haiku, model: claude-haiku-4-5}}]
"""


def cfg(tz: str = "Europe/Berlin") -> config_mod.Config:
    return config_mod.loads(CONFIG.format(tz=tz), "test", env={})


def fill(store: Store, s: Seed) -> None:
    rows = [result_row(r, c) for r, c in costs(s.results)]
    for i in range(0, len(rows), 500):
        store.save_results(rows[i:i + 500])
    for t in s.transitions:
        store.add_transition(t.resource, t.deployment, t.at, t.from_state, t.to_state, t.kind, t.hint,
                             t.request_id, t.apim_request_id, None)


@pytest.fixture(scope="module")
def history() -> Seed:
    return seed(NOW, days=62, gap=(0.70, 0.72))


@pytest.fixture(scope="module")
def store(history: Seed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store.open(tmp_path_factory.mktemp("store") / "results.sqlite3")
    fill(s, history)
    yield s
    s.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def la(history: Seed, tls: Certs) -> Iterator[FakeLogAnalytics]:
    with fake_log_analytics(history, tls.server) as fake:
        yield fake


def la_source(la: FakeLogAnalytics, tls: Certs, credential: Any = None) -> LogAnalyticsSource:
    return LogAnalyticsSource("ws-0001", credential or FakeCredential(), endpoint=la.endpoint,
                              connection_verify=tls.ca, retry_total=0)


def comparable(report: Report) -> dict[str, Any]:
    data = report.model_dump()
    for key in ("source", "notes", "real_usage"):
        data.pop(key)
    return data


@pytest.mark.parametrize("tz", ["Europe/Berlin", "UTC"])
def test_local_and_log_analytics_sources_give_the_same_report(store: Store, la: FakeLogAnalytics,
                                                              tls: Certs, tz: str) -> None:
    local = build_report(LocalSource(store), cfg(tz), NOW)
    remote = build_report(la_source(la, tls), cfg(tz), NOW)
    assert local.overall.canaries > 10_000 and local.incidents  # the comparison is not of empty reports
    assert comparable(local) == comparable(remote)
    assert local.source == "local" and remote.source == "log-analytics"
    assert {r["name"] for r in la.requests} == {"hours", "kinds", "hists", "transitions", "usage"}


def test_a_store_keeping_days_in_the_report_zone_gives_the_same_report(history: Seed, la: FakeLogAnalytics,
                                                                       tls: Certs, tmp_path: Path) -> None:
    berlin = Store.open(tmp_path / "berlin.sqlite3", timezone="Europe/Berlin")
    fill(berlin, history)
    days = berlin.query("SELECT count(DISTINCT day) FROM rollup_hist_day WHERE tz = 'Europe/Berlin'")[0][0]
    assert days >= 60  # the fast path is the one under test
    local = build_report(LocalSource(berlin), cfg("Europe/Berlin"), NOW)
    berlin.close()
    assert comparable(local) == comparable(build_report(la_source(la, tls), cfg("Europe/Berlin"), NOW))


def test_log_analytics_adds_real_usage_and_asks_for_the_logs_audience(store: Store, la: FakeLogAnalytics,
                                                                       tls: Certs) -> None:
    credential = FakeCredential()
    before = len(la.requests)
    report = build_report(la_source(la, tls, credential), cfg(), NOW)
    # the period in full; the previous period only for the comparison (no kinds, transitions or usage)
    assert sorted(r["name"] for r in la.requests[before:]) == sorted(
        ["hours", "kinds", "hists", "transitions", "usage", "hours", "hists"])
    usage = {u.resource: u for u in report.real_usage or []}
    assert usage["res-a"].requests == 125_000 and usage["res-a"].output_tokens == 9_500_000
    assert usage["res-a"].estimated_cost_usd is None  # two models behind res-a: no single price
    assert usage["res-b"].estimated_cost_usd == round((20_000_000 * 1.00 + 2_000_000 * 5.00) / 1e6, 2)
    haiku = next(d for d in report.deployments if d.deployment == "haiku")
    assert usage["res-b"].canary_share_pct == round(100 * (haiku.canaries + haiku.rechecks) / 40_000, 3)
    assert {s for scopes in credential.scopes for s in scopes} == {"https://api.loganalytics.io/.default"}
    assert all(r["authorization"] == "Bearer fake-la-token-5e1d" for r in la.requests)
    local = build_report(LocalSource(store), cfg(), NOW)
    assert local.real_usage is None and any("not in this source" in n for n in local.notes)


def test_partial_results_are_used_and_said(la: FakeLogAnalytics, tls: Certs) -> None:
    la.partial = {"usage"}
    try:
        report = build_report(la_source(la, tls), cfg(), NOW)
    finally:
        la.partial = set()
    partial = [n for n in report.notes if "Partial results from Log Analytics for usage" in n]
    assert partial and "PartialError" in partial[0]
    assert report.real_usage is not None


def test_throttling_is_one_clear_error(la: FakeLogAnalytics, tls: Certs) -> None:
    la.status = 429
    try:
        with pytest.raises(MonitorError, match="throttled the hours query"):
            build_report(la_source(la, tls), cfg(), NOW)
    finally:
        la.status = 200


# --- arithmetic on hand-built cases ----------------------------------------------------------------


def test_percentiles_are_nearest_rank_over_log_buckets() -> None:
    values = [0.100, 0.200, 0.300, 0.400, 1.000]
    hist: dict[int, int] = {}
    for v in values:
        hist[bucket(v)] = hist.get(bucket(v), 0) + 1
    assert percentile(hist, 50) == round(bucket_ms(bucket(0.300)), 1)
    assert percentile(hist, 99) == round(bucket_ms(bucket(1.000)), 1)
    for v in values:  # a bucket stands for its values within 2.5 %
        assert abs(bucket_ms(bucket(v)) - v * 1000) / (v * 1000) <= 0.025
    assert percentile({}, 50) is None


def small_report(tmp_path: Path, results: list[Any], transitions: Sequence[tuple[Any, ...]] = (),
                 tz: str = "UTC") -> Report:
    s = Store.open(tmp_path / "r.sqlite3")
    s.save_results([result_row(r, c) for r, c in results])
    for t in transitions:
        s.add_transition(*t)
    cf = config_mod.loads(CONFIG.format(tz=tz).replace("interval: 10m", "interval: 60s"), "t", env={})
    try:
        return build_report(LocalSource(s), cf, NOW, days=1)
    finally:
        s.close()


def test_availability_counts_scheduled_canaries_and_unknown_time_is_not_up(tmp_path: Path) -> None:
    day = period_for(NOW, 1, "UTC")
    t0 = day.start
    rs = []
    for m in range(0, 12 * 60):  # the first 12 hours: one canary a minute, every 10th fails
        kind = FailureKind.SERVER_ERROR if m % 10 == 0 else FailureKind.OK
        rs.append((result(kind, resource="res-a", deployment="opus", model="claude-opus-4-5",
                          at=t0 + timedelta(minutes=m), usage=None, total_s=0.5), 0.001))
    rs.append((result(FailureKind.SERVER_ERROR, resource="res-a", deployment="opus", attempt=1,
                      at=t0 + timedelta(minutes=1)), None))  # a re-check: not a scheduled canary
    rs.append((result(FailureKind.CANCELLED, resource="res-a", deployment="opus",
                      at=t0 + timedelta(minutes=2)), None))  # cancelled at shutdown: not counted
    transitions = [("res-a", "opus", t0, "unknown", "healthy", None, None, None, None, None)]
    report = small_report(tmp_path, rs, transitions)
    opus = next(d for d in report.deployments if d.deployment == "opus")
    assert opus.canaries == 720 and opus.ok == 648 and opus.rechecks == 1  # cancelled: not counted
    assert opus.availability_pct == 90.0
    assert opus.slo_met is False
    # healthy while canaries arrived (the 12 hours with canaries), unknown for the silent rest of the day
    assert opus.state_pct["healthy"] == 50.0 and opus.state_pct["unknown"] == 50.0
    assert opus.latency_ms.p50 == round(bucket_ms(bucket(0.5)), 1)
    assert opus.cost_usd == round(0.001 * 720, 6)
    assert [f.kind for f in opus.failures] == ["server_error"] and opus.failures[0].count == 72
    sonnet = next(d for d in report.deployments if d.deployment == "sonnet")
    assert sonnet.canaries == 0 and sonnet.availability_pct is None and sonnet.slo_met is None
    assert sonnet.state_pct["unknown"] == 100.0


def test_incidents_come_from_the_state_history_and_unknown_does_not_end_them(tmp_path: Path) -> None:
    t0 = period_for(NOW, 1, "UTC").start
    hours = [t0 + timedelta(hours=h) for h in range(24)]
    transitions = [
        ("res-a", "opus", hours[1], "unknown", "healthy", None, None, None, None, None),
        ("res-a", "opus", hours[2], "healthy", "down", "server_error", "hint", "req_d", "apim_d", None),
        ("res-a", "opus", hours[3], "down", "unknown", None, None, None, None, "silence"),
        ("res-a", "opus", hours[5], "unknown", "healthy", None, None, None, None, None),
        ("res-a", "opus", hours[20], "healthy", "throttled", "rate_limited", "hint", "req_t", None, None),
    ]
    rs = [(result(resource="res-a", deployment="opus", at=h), None) for h in hours]
    report = small_report(tmp_path, rs, transitions)
    incidents = report.incidents
    assert [(i.state, i.request_id) for i in incidents] == [("down", "req_d"), ("throttled", "req_t")]
    assert incidents[0].duration_s == 3 * 3600 and incidents[0].ended_at is not None
    assert incidents[1].ended_at is None and incidents[1].duration_s == 4 * 3600


def test_a_period_across_a_dst_change_has_whole_local_days() -> None:
    p = period_for(datetime(2026, 3, 30, 12, tzinfo=UTC), 2, "Europe/Berlin")  # spans the DST change
    assert [d for d, _ in p.days] == ["2026-03-28", "2026-03-29"]
    assert p.seconds == 47 * 3600  # 29 March 2026 has 23 hours in Berlin


# --- renderers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(store: Store) -> Report:
    return build_report(LocalSource(store), cfg(), NOW)


def test_every_format_renders_the_same_figures(report: Report) -> None:
    out = {fmt: render(report, fmt) for fmt in FORMATS}
    opus = next(d for d in report.deployments if d.deployment == "opus")
    assert json.loads(out["json"])["overall"]["canaries"] == report.overall.canaries
    rows = list(csv.DictReader(io.StringIO(out["csv"])))
    assert len(rows) == (len(report.deployments) + 1) * report.days
    assert sum(int(r["canaries"]) for r in rows if r["deployment"] == "opus") == opus.canaries
    for fmt in ("text", "markdown", "html"):
        assert f"{opus.availability_pct:.3f}%" in out[fmt], fmt
        assert "res-a" in out[fmt] and report.timezone in out[fmt]
    assert out["html"].count("<svg") >= 5 and "<script" not in out["html"]
    assert "http://" not in out["html"].replace("http://www.w3.org/2000/svg", "")  # nothing to fetch offline
    assert "| res-a | opus |" in out["markdown"]


@given(st.dictionaries(st.integers(-5, 200), st.integers(1, 50), max_size=40))
def test_percentiles_in_one_pass_agree_with_one_at_a_time(hist: dict[int, int]) -> None:
    assert percentiles(hist, (1, 50, 95, 99, 100)) == [percentile(hist, p) for p in (1, 50, 95, 99, 100)]
