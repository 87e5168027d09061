"""Azure's view in reports, proven against the emulator's ground truth: background traffic (real callers
with an error mix) plus real canaries with injected faults over a compressed day; the report's
per-deployment requests, failure classes and tokens equal what the emulator's log says it served,
and the canaries' share is right. Everything over TLS, the metrics read by the real azure-mgmt-monitor
client with a managed-identity token from the emulator."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.canary.fleet import build_fleet
from monitor.canary.pricing import cost_usd, price_for
from monitor.canary.run import run_canary
from monitor.config import Config, loads
from monitor.emulator.runner import EmulatorServer
from monitor.notify.weekly import compose
from monitor.reports.build import build_report
from monitor.reports.model import Report
from monitor.reports.render import render
from monitor.reports.sources import build_source
from monitor.store.sqlite import Store, result_row

from .certs import Certs, make_certs
from .test_telemetry_process import IDENTITY_VARS

CANARIES = 40  # per deployment
SCENARIO: dict[str, Any] = {
    "seed": 11,
    "deployments": [
        {"name": "haiku", "model": "claude-haiku-4-5-20251001",
         "background": {"per_minute": 1, "errors": {429: 0.08, 400: 0.03, 503: 0.04},
                        "input_tokens": 900, "output_tokens": 120, "cache_read_tokens": 400}},
        {"name": "sonnet", "model": "claude-sonnet-4-5-20250929",
         "faults": [{"kind": "api_error", "rate": 0.5}],  # the canaries fail while real callers succeed
         "background": {"per_minute": 0.5, "errors": {400: 0.02}}},
    ],
}


@dataclass
class World:
    emu: EmulatorServer
    cfg: Config
    store: Store
    now: datetime  # the report's "now": the next day, so today is the period
    start: float
    end: float


def config(emu: EmulatorServer, data: Path, resource_id: str | None = None) -> Config:
    return loads(f"""
data_dir: {json.dumps(str(data))}
resources:
  - name: main
    base_url: {emu.base_url}
    azure_resource_id: {resource_id or emu.azure_resource_id()}
    auth: {{api_key: {emu.api_key}}}
    deployments:
      - {{name: haiku, model: claude-haiku-4-5-20251001}}
      - {{name: sonnet, model: claude-sonnet-4-5-20250929}}
reports:
  timezone: UTC
  slo_target: 99.0
  metrics: {{credential: managed_identity, endpoint: "{emu.root}"}}
""")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def world(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    for var in IDENTITY_VARS:
        mp.delenv(var, raising=False)
    mp.setenv("REQUESTS_CA_BUNDLE", certs.ca)  # the sync ARM and identity clients
    mp.setenv("SSL_CERT_FILE", certs.ca)  # the canaries' httpx transport
    tmp = tmp_path_factory.mktemp("azure-view")
    with EmulatorServer(SCENARIO, tls=certs.server) as emu:
        for k, v in emu.identity_env().items():
            mp.setenv(k, v)
        wall = datetime.now(UTC)
        emu.state.wall = lambda: wall.timestamp()  # the emulator's clock stops: live traffic is fixed
        today = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        # a compressed day of real callers: the whole of today at once (later hours too, so the test
        # does not depend on the time of day it runs at)
        emu.background(today.timestamp(), (today + timedelta(days=1)).timestamp())
        cfg = config(emu, tmp)
        store = Store.open(tmp / "results.sqlite3")
        asyncio.run(_canaries(cfg, store))
        yield World(emu, cfg, store, today + timedelta(days=1, hours=1), today.timestamp(),
                    (today + timedelta(days=1)).timestamp())
        store.close()
    mp.undo()


async def _canaries(cfg: Config, store: Store) -> None:
    fleet = build_fleet(cfg)
    try:
        rows = []
        for _ in range(CANARIES):
            for t in fleet.targets:
                r = await run_canary(t, fleet.transports[t.resource], fleet.auths[t.resource])
                rows.append(result_row(r, cost_usd(r.model, r.usage) if r.usage else None))
        store.save_results(rows)
    finally:
        await fleet.aclose()


def report(w: World, days: int = 1) -> Report:
    return build_report(build_source(w.cfg, "local", lambda: w.store), w.cfg, w.now, days=days)


def truth(w: World, deployment: str) -> dict[str, Any]:
    """Straight from the emulator's log: what it served this day for one deployment."""
    served = [e for e in w.emu.log() if e["deployment"] == deployment and e["status"] is not None
              and w.start <= e["t_arrival"] < w.end]
    ok = [e for e in served if e["status"] == 200]
    return {
        "requests": len(served),
        "throttled": sum(e["status"] == 429 for e in served),
        "client_errors": sum(400 <= e["status"] < 500 and e["status"] != 429 for e in served),
        "server_errors": sum(e["status"] >= 500 for e in served),
        "input_tokens": sum(e["input_tokens"] or 0 for e in ok),
        "output_tokens": sum(e["output_tokens"] or 0 for e in ok),
        "cache_read_tokens": sum(e["cache_read_tokens"] or 0 for e in ok),
        "canaries": sum(e["origin"] == "client" for e in served),
        "background": sum(e["origin"] == "background" for e in served),
    }


def test_each_deployments_real_traffic_equals_what_the_emulator_served(world: World) -> None:
    r = report(world)
    assert r.azure_view is not None
    views = {v.deployment: v for v in r.azure_view}
    assert set(views) == {"haiku", "sonnet"}
    for name, v in views.items():
        t = truth(world, name)
        assert t["background"] > 0 and t["canaries"] == CANARIES
        assert (v.requests, v.throttled, v.client_errors, v.server_errors) == (
            t["requests"], t["throttled"], t["client_errors"], t["server_errors"])
        assert (v.input_tokens, v.output_tokens) == (t["input_tokens"], t["output_tokens"])
        assert v.canary_requests == t["canaries"]
        assert v.canary_share_pct == round(100.0 * t["canaries"] / t["requests"], 3)
        assert v.note is None and v.source.startswith("Azure Monitor platform metrics")
        assert v.days[-1].requests == t["requests"]
        assert len(v.last_day_hours) == 24 and sum(h or 0 for h in v.last_day_hours) == t["requests"]
    haiku = views["haiku"]
    assert haiku.cache_read_tokens == truth(world, "haiku")["cache_read_tokens"] > 0
    price = price_for("claude-haiku-4-5")
    assert price is not None and haiku.estimated_cost_usd == round(
        (haiku.input_tokens * price.input + haiku.output_tokens * price.output  # type: ignore[operator]
         + haiku.cache_read_tokens * price.cache_read) / 1e6, 4)  # type: ignore[operator]
    assert haiku.availability_pct is not None and haiku.availability_pct < 100.0
    assert haiku.ttft_ms is not None and haiku.canary_ttft_ms.p50 is not None


def test_the_two_views_disagreeing_is_said_in_one_sentence(world: World) -> None:
    r = report(world)
    assert r.azure_view is not None
    views = {v.deployment: v for v in r.azure_view}
    sonnet, haiku = views["sonnet"], views["haiku"]
    assert sonnet.canary_availability_pct is not None and sonnet.canary_availability_pct < 90
    assert sonnet.disagreement is not None and sonnet.disagreement.startswith("The canaries failed")
    # haiku: canaries fine, real callers throttled (8% 429s)
    assert haiku.canary_availability_pct == 100.0
    assert haiku.disagreement is not None and haiku.disagreement.startswith("Real callers were throttled")


def test_every_format_shows_azures_view(world: World) -> None:
    r = report(world)
    text = render(r, "text")
    assert "Azure's view" in text and "real requests" in text and "The canaries failed" in text
    md = render(r, "markdown")
    assert "## Azure's view" in md and "| main/haiku |" in md
    html = render(r, "html")
    assert 'id="azure-view"' in html and "Real callers were throttled" in html
    assert "real requests per hour, last day" in html
    assert json.loads(render(r, "json"))["azure_view"][0]["requests"] > 0
    rows = list(csv.DictReader(io.StringIO(render(r, "csv"))))
    haiku = [row for row in rows if row["deployment"] == "haiku"]
    assert haiku and float(haiku[-1]["azure_requests"]) == truth(world, "haiku")["requests"]
    assert all(row["azure_requests"] == "" for row in rows if row["deployment"] == "*")


def test_the_weekly_email_shows_azures_view(world: World) -> None:
    week, month = report(world, 7), report(world, 30)
    email = compose(week, month, "monitor@example.com", ("owner@example.com",))
    assert 'id="azure-view"' in email.html and "Real callers were throttled" in email.html
    assert "Azure's view (all traffic per deployment" in email.text
    assert f"real requests {truth(world, 'haiku')['requests']:,}" in email.text


@pytest.mark.parametrize(("change", "phrase"), [
    ({"forbidden": True}, "Monitoring Reader role"),
    ({"throttle": 100, "retry_after": 0}, "throttled the metrics of emulator (429"),
])
def test_a_refused_metrics_api_is_one_note_and_no_data_never_zero(world: World, change: dict[str, Any],
                                                                  phrase: str) -> None:
    world.emu.set_azure(**change)
    try:
        r = report(world)
    finally:
        world.emu.set_azure(forbidden=False, throttle=0)
    assert r.azure_view is not None
    text = render(r, "text")
    assert text.count(phrase) == 1
    for v in r.azure_view:
        assert v.requests is None and v.input_tokens is None and v.canary_share_pct is None
        assert v.source.startswith("none:")
    assert "no data" in text and "Traceback" not in text


def test_a_wrong_resource_id_is_one_note(world: World) -> None:
    wrong = world.emu.azure_resource_id().replace("accounts/emulator", "accounts/not-mine")
    cfg = config(world.emu, Path(world.cfg.data_dir), wrong)
    r = build_report(build_source(cfg, "local", lambda: world.store), cfg, world.now, days=1)
    text = render(r, "text")
    assert text.count(f"Azure has no resource {wrong} (404") == 1


def test_the_html_report_and_the_weekly_email_show_it_in_a_browser(world: World, tmp_path: Path) -> None:
    from .browser import artifact_dir, available, check_page

    reason = available()
    if reason is not None:
        pytest.skip(reason)
    import base64

    week, month = report(world, 7), report(world, 30)
    email = compose(week, month, "m@example.com", ("o@example.com",))
    weekly = email.html
    for cid, png in email.images.items():  # as a mail client shows it: the cid: parts inline
        weekly = weekly.replace(f"cid:{cid}", "data:image/png;base64," + base64.b64encode(png).decode())
    pages = {"report-azure-view": render(report(world), "html"), "weekly-azure-view": weekly}
    for name, html in pages.items():
        page = tmp_path / f"{name}.html"
        page.write_text(html)
        shot = artifact_dir() / f"{name}.png"
        result = check_page(page.as_uri(), shot, height=1400)
        assert result.console_errors == [], name
        assert shot.stat().st_size > 10_000, name


async def test_the_status_page_shows_todays_azure_view(world: World, tmp_path: Path) -> None:
    import httpx

    from .daemon_helpers import make_daemon, until

    emu = world.emu
    text = f"""data_dir: {json.dumps(str(tmp_path / 'data'))}
defaults: {{interval: 1s, timeout: 800ms, confirm: 0}}
server: {{port: 0}}
resources:
  - name: main
    base_url: {emu.base_url}
    azure_resource_id: {emu.azure_resource_id()}
    auth: {{api_key: {emu.api_key}}}
    deployments:
      - {{name: haiku, model: claude-haiku-4-5-20251001}}
reports: {{metrics: {{credential: managed_identity, endpoint: "{emu.root}"}}}}
"""
    daemon = make_daemon(tmp_path, text)
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        await until(lambda: daemon.ready() and daemon.port is not None and daemon.writer.written >= 1)
        async with httpx.AsyncClient() as client:
            first = (await client.get(f"http://127.0.0.1:{daemon.port}/")).text
            again = (await client.get(f"http://127.0.0.1:{daemon.port}/")).text
    finally:
        daemon.request_stop()
        await task
    assert 'id="azure-view"' in first and "main/haiku" in first
    assert f"{truth(world, 'haiku')['requests']:,}" in first or "Real callers were throttled" in first
    assert "Real callers were throttled" in first and emu.api_key not in first
    assert again.count('id="azure-view"') == 1


def test_the_report_command_reads_azures_view_with_a_managed_identity(world: World, certs: Certs,
                                                                      tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    yesterday = world.start - 86400
    world.emu.background(yesterday, world.start)  # `report --days 2`: yesterday and today so far
    cfg = tmp_path / "checks.yaml"
    cfg.write_text(f"""data_dir: {json.dumps(str(Path(world.cfg.data_dir)))}
resources:
  - name: main
    base_url: {world.emu.base_url}
    azure_resource_id: {world.emu.azure_resource_id()}
    auth: {{api_key: {world.emu.api_key}}}
    deployments:
      - {{name: haiku, model: claude-haiku-4-5-20251001}}
reports: {{timezone: UTC, metrics: {{credential: managed_identity, endpoint: "{world.emu.root}"}}}}
""")
    drop = {*IDENTITY_VARS, "FOUNDRY_MONITOR_WORKSPACE_ID"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= world.emu.identity_env() | {"REQUESTS_CA_BUNDLE": certs.ca}
    out = subprocess.run([sys.executable, "-m", "monitor", "report", "--config", str(cfg), "--days", "2",
                          "--format", "json"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    views = {v["deployment"]: v for v in rep["azure_view"]}
    assert set(views) == {"haiku", "sonnet"}  # sonnet is not monitored, but Azure saw its callers
    view = views["haiku"]
    end = datetime.fromisoformat(rep["end"]).timestamp()  # a rolling report ends now
    served = [e for e in world.emu.log() if e["deployment"] == "haiku" and e["status"] is not None
              and yesterday <= e["t_arrival"] < end]
    assert view["requests"] == len(served) > 0
    assert view["throttled"] == sum(e["status"] == 429 for e in served)
    assert world.emu.api_key not in out.stdout + out.stderr


def test_the_busiest_grains_requests_per_minute_feed_the_quota_headroom_hint(world: World) -> None:
    from collections import Counter
    from dataclasses import replace

    from monitor.azure import inventory
    from monitor.azure.snapshot import RateLimit

    from .test_inventory import dep, snap

    r = report(world)
    assert r.azure_view is not None
    haiku = next(v for v in r.azure_view if v.deployment == "haiku")
    assert haiku.grain_s is not None and haiku.peak_requests_per_min is not None
    served = [e for e in world.emu.log() if e["deployment"] == "haiku" and e["status"] is not None
              and world.start <= e["t_arrival"] < world.end]
    per_grain = Counter(int((e["t_arrival"] - world.start) // haiku.grain_s) for e in served)
    peak = round(max(per_grain.values()) / (haiku.grain_s / 60.0), 3)
    assert haiku.peak_requests_per_min == peak and haiku.throttled == truth(world, "haiku")["throttled"] > 0
    # its own limit four times the busiest grain's rate: the 429s point at the shared subscription quota
    roomy = replace(dep("haiku"), rate_limits=(RateLimit("request", 60, 4 * peak),))
    hint = inventory.headroom_hint(roomy, snap(roomy), haiku.throttled, haiku.peak_requests_per_min,
                                   haiku.grain_s, 0)
    assert hint is not None and "while using at most 25% of its own limit" in hint
    assert "shared subscription quota (AIServices.GlobalStandard.claude-haiku-4-5)" in hint
