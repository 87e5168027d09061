"""The HTML report and the daemon's status page open in headless Chromium without console errors;
screenshots are kept in test-artifacts/."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from monitor.emulator.runner import EmulatorServer
from monitor.reports.build import build_report
from monitor.reports.local import LocalSource
from monitor.reports.render import render
from monitor.store.sqlite import Store

from .browser import artifact_dir, available, check_page
from .daemon_helpers import config_text, make_daemon, until
from .report_seed import NOW, seed
from .test_daemon import scenario
from .test_reports import cfg, fill

reason = available()
if reason is not None:
    pytest.skip(reason, allow_module_level=True)


def test_the_html_report_renders_cleanly(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "r.sqlite3")
    fill(store, seed(NOW, days=35, gap=(0.5, 0.52)))
    report = build_report(LocalSource(store), cfg(), NOW)
    store.close()
    page = tmp_path / "report.html"
    page.write_text(render(report, "html"))
    shot = artifact_dir() / "report.png"
    result = check_page(page.as_uri(), shot, height=1200)
    assert result.console_errors == []
    assert result.title.startswith("foundry-monitor report")
    assert shot.stat().st_size > 20_000  # charts and tables, not a blank page


async def test_the_status_page_renders_cleanly_and_shows_no_secret(tmp_path: Path) -> None:
    names = ["healthy", "broken"]
    per = {"healthy": {"latency": {"base": "5ms"}}, "broken": {"faults": [{"kind": "api_error"}]}}
    with EmulatorServer(scenario=scenario(names, **per)) as emu:
        daemon = make_daemon(tmp_path, config_text(emu.base_url, emu.api_key, names, tmp_path / "data"))
        task = asyncio.create_task(daemon.run(install_signals=False))
        try:
            await until(lambda: daemon.ready() and daemon.port is not None and daemon.writer.written >= 4)
            url = f"http://127.0.0.1:{daemon.port}/"
            async with httpx.AsyncClient() as client:
                html = (await client.get(url)).text
            shot = artifact_dir() / "status-page.png"
            result = await asyncio.to_thread(check_page, url, shot)
        finally:
            daemon.request_stop()
            await task
    assert result.console_errors == []
    assert result.title.startswith("foundry-monitor")
    assert 'http-equiv="refresh"' in html and html.count('class="c k-') == 2 * 50  # a history bar each
    assert "server_error" in html and "healthy" in html
    assert emu.api_key not in html
