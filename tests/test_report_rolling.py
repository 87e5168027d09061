"""The rolling report (`foundry-monitor report`) ends now: today so far is its last day, marked partial in
every format, and both sources agree on it; the weekly email keeps whole days."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from monitor.canary.results import FailureKind
from monitor.reports.build import build_report, period_for, previous
from monitor.reports.local import LocalSource
from monitor.reports.render import FORMATS, render
from monitor.store.sqlite import Store, result_row

from .certs import Certs, make_certs
from .factories import result
from .fake_log_analytics import FakeLogAnalytics, fake_log_analytics
from .report_seed import NOW, Seed, seed
from .test_reports import cfg, comparable, fill, la_source

TODAY = NOW.date().isoformat()  # NOW is 09:30 UTC (10:30 in Berlin)


def today_store(path: Path) -> Store:
    """A store whose only results are from today, before NOW: the first hours of a new daemon."""
    store = Store.open(path)
    start = NOW.replace(hour=6, minute=0)
    store.save_results([result_row(result(resource="res-a", deployment="opus", model="claude-opus-4-5",
                                          at=start + timedelta(minutes=m)), 0.001) for m in range(0, 180, 2)])
    return store


def test_a_store_with_results_from_today_shows_them_in_the_rolling_report(tmp_path: Path) -> None:
    store = today_store(tmp_path / "today.sqlite3")
    try:
        rolling = build_report(LocalSource(store), cfg("UTC"), NOW, days=7, to_now=True)
        weekly = build_report(LocalSource(store), cfg("UTC"), NOW, days=7)
    finally:
        store.close()
    opus = next(d for d in rolling.deployments if d.deployment == "opus")
    assert opus.canaries == 90 and opus.availability_pct == 100.0
    assert rolling.partial and rolling.end == NOW.isoformat(timespec="seconds")
    assert [d.date for d in opus.days][-1] == TODAY and opus.days[-1].canaries == 90
    assert [d.partial for d in rolling.overall.days] == [False] * 6 + [True]
    assert "(today so far)" in rolling.title and any("partial" in n for n in rolling.notes)
    # the weekly email's report keeps whole days: it ends at today's midnight and has none of them
    assert not weekly.partial and weekly.overall.canaries == 0
    assert weekly.overall.days[-1].date == (NOW.date() - timedelta(days=1)).isoformat()


def test_every_format_marks_the_current_day_as_partial(tmp_path: Path) -> None:
    store = today_store(tmp_path / "today.sqlite3")
    try:
        report = build_report(LocalSource(store), cfg("UTC"), NOW, days=3, to_now=True)
    finally:
        store.close()
    out = {fmt: render(report, fmt) for fmt in FORMATS}
    note = f"partial: ends now, {TODAY} is today so far"
    for fmt in ("text", "markdown", "html"):
        assert note in out[fmt], fmt
    data = json.loads(out["json"])
    assert data["partial"] is True and data["overall"]["days"][-1] == {**data["overall"]["days"][-1],
                                                                       "date": TODAY, "partial": True}
    rows = list(csv.DictReader(io.StringIO(out["csv"])))
    assert {(r["date"], r["partial"]) for r in rows} == {
        ((NOW.date() - timedelta(days=2)).isoformat(), "false"),
        ((NOW.date() - timedelta(days=1)).isoformat(), "false"), (TODAY, "true")}
    assert "so far" in out["html"]  # the charts' last label


def test_a_report_of_whole_days_says_nothing_about_partial(tmp_path: Path) -> None:
    store = today_store(tmp_path / "today.sqlite3")
    try:
        report = build_report(LocalSource(store), cfg("UTC"), NOW, days=3)
    finally:
        store.close()
    out = {fmt: render(report, fmt) for fmt in FORMATS}
    assert not any("partial: ends now" in out[fmt] for fmt in ("text", "markdown", "html"))
    assert {r["partial"] for r in csv.DictReader(io.StringIO(out["csv"]))} == {"false"}


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_a_rolling_period_ends_now_and_is_compared_with_the_same_span_before(tz: str) -> None:
    p = period_for(NOW, 30, tz, to_now=True)
    assert p.partial and p.end == NOW and len(p.days) == 30
    assert p.days[-1][0] == NOW.astimezone(ZoneInfo(tz)).date().isoformat()
    before = previous(p)
    assert len(before.days) == 30
    assert date.fromisoformat(before.days[-1][0]) == date.fromisoformat(p.days[0][0]) - timedelta(days=1)
    assert before.end == NOW.replace(minute=0) - timedelta(days=30)  # the same time of day, to the hour


# --- both sources ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history() -> Seed:
    return seed(NOW, days=12)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def la(history: Seed, tls: Certs) -> Iterator[FakeLogAnalytics]:
    with fake_log_analytics(history, tls.server) as fake:
        yield fake


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_both_sources_give_the_same_rolling_report(history: Seed, la: FakeLogAnalytics, tls: Certs,
                                                   tmp_path: Path, tz: str) -> None:
    store = Store.open(tmp_path / "r.sqlite3", timezone=tz)
    fill(store, history)
    try:
        local = build_report(LocalSource(store), cfg(tz), NOW, days=5, to_now=True)
    finally:
        store.close()
    remote = build_report(la_source(la, tls), cfg(tz), NOW, days=5, to_now=True)
    today = [d for d in local.overall.days if d.partial]
    assert len(today) == 1 and today[0].canaries > 0  # the comparison includes today so far
    assert local.deployments[0].change.output_tokens is not None  # and the span before it
    assert comparable(local) == comparable(remote)
    bound = [r["body"]["query"] for r in la.requests if r["name"] == "hours"][-2]
    assert f"let _end = datetime({NOW.strftime('%Y-%m-%dT%H:%M:%SZ')});" in bound


# --- the command -----------------------------------------------------------------------------------


def test_the_report_command_shows_the_canaries_of_the_last_minutes(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    store = Store.open(tmp_path / "data" / "results.sqlite3")
    store.save_results([result_row(result(FailureKind.OK if i % 4 else FailureKind.SERVER_ERROR,
                                          resource="res-a", deployment="opus", model="claude-opus-4-5",
                                          at=now - timedelta(seconds=5 * i)), 0.001) for i in range(12)])
    store.close()
    config = tmp_path / "checks.yaml"
    config.write_text(f"data_dir: {json.dumps(str(tmp_path / 'data'))}\n"
                      "resources:\n  - {name: res-a, resource: res-a, auth: {api_key: k},\n"
                      "     deployments: [{name: opus, model: claude-opus-4-5}]}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDRY_MONITOR_")}
    out = subprocess.run([sys.executable, "-m", "monitor", "report", "--config", str(config), "--format",
                          "json", "--days", "2"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["partial"] is True
    assert (report["overall"]["canaries"], report["overall"]["ok"]) == (12, 9)
    assert report["overall"]["failures"][0]["kind"] == "server_error"


def test_the_report_queries_for_a_period_ending_now_bind_against_the_workspace_schemas() -> None:
    from monitor.reports.loganalytics import QUERIES, bind

    from .kql.checker import available, check, format_errors

    reason = available()
    if reason is not None:
        pytest.skip(reason)
    now = datetime(2026, 11, 25, 9, 30, 17, 250_000, tzinfo=UTC)  # not on a second, let alone an hour
    period = period_for(now, 30, "Europe/Berlin", to_now=True)
    results = check({f"{name} {which}": bind(name, p) for name in QUERIES
                     for which, p in (("period", period), ("previous", previous(period)))})
    assert not any(results.values()), format_errors(results)
