"""The daemon's status page reads at a glance: relative times (exact on hover), one line of hint per row
with the rest behind a click, a history bar of each deployment's last results coloured by kind, and no
horizontal scrolling on a phone. Checked in headless Chromium at 1280 and 390 px; screenshots are kept
in test-artifacts/status-page-<width>.png."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.canary.results import FailureKind
from monitor.emulator.runner import EmulatorServer
from monitor.reports import when
from monitor.reports.history import BAR, KIND_COLOURS
from monitor.reports.status_page import render_status, split_hint
from monitor.store.sqlite import Store, result_row

from . import browser
from .daemon_helpers import config_text, make_daemon, until
from .factories import result
from .test_daemon import scenario

NOW = datetime(2026, 12, 1, 23, 30, 0, tzinfo=UTC)
EXACT = re.compile(r"^(since )?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
RELATIVE = re.compile(r"^(just now|\d+ (s|min|h|d)( \d+ (s|min|h))? ago)$")
LONG_NAME = "a-deployment-with-a-name-far-too-long-for-a-phone-screen"
NAMES = ["healthy", "broken", "throttled", LONG_NAME]
SEEDED = [FailureKind.OK] * 6 + [FailureKind.TIMEOUT, FailureKind.RATE_LIMITED, FailureKind.OK,
                                 FailureKind.SERVER_ERROR]  # repeated: the history before the daemon starts


# --- times and hints -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "just now"), (12, "12 s ago"), (59, "59 s ago"), (180, "3 min ago"), (185, "3 min ago"),
    (3600 + 300, "1 h 5 min ago"), (12 * 3600 + 59, "12 h ago"), (3 * 86400 + 7200, "3 d 2 h ago")])
def test_a_past_time_reads_as_how_long_ago_it_was(seconds: int, text: str) -> None:
    assert when.ago(NOW - timedelta(seconds=seconds), NOW) == text


def test_an_iso_time_with_microseconds_reads_relative_and_its_exact_form_has_whole_seconds() -> None:
    stamp = "2026-12-01T23:26:59.123456+00:00"
    assert when.ago(stamp, NOW) == "3 min ago"
    assert when.exact(stamp) == "2026-12-01 23:26:59 UTC"
    assert when.ago(None, NOW) == "-" and when.exact(None) == ""


def test_a_hint_splits_into_its_first_sentence_and_the_rest() -> None:
    hint = split_hint("HTTP 401: the resource rejected the API key. Compare it with the key under \"Keys\".\n"
                      "  Keys may have been rotated.")
    assert hint.first == "HTTP 401: the resource rejected the API key."
    assert hint.rest == "Compare it with the key under \"Keys\". Keys may have been rotated."
    assert split_hint("One sentence only, e.g. this one.") == split_hint("One sentence only, e.g. this one.")
    assert split_hint("One sentence only, e.g. this one.").rest == ""


def test_a_history_bar_has_a_cell_per_result_and_empty_cells_before_the_first(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "r.sqlite3")
    kinds = [FailureKind.OK, FailureKind.TIMEOUT, FailureKind.OK]
    store.save_results([result_row(result(k, resource="emu", deployment="d",
                                          at=NOW - timedelta(seconds=30 * i)), None)
                        for i, k in enumerate(reversed(kinds))])
    status = {"started_at": NOW.isoformat(), "deployments": [
        {"resource": "emu", "deployment": "d", "model": "m", "state": "healthy", "since": None,
         "last_result": None, "last_failure": None}], "open_incidents": []}
    html = render_status(status, store, NOW)
    store.close()
    cells = re.findall(r'<span class="c (k-[a-z_]+)"', html)
    assert len(cells) == BAR
    assert cells[-3:] == ["k-ok", "k-timeout", "k-ok"] and set(cells[:-3]) == {"k-empty"}
    assert "2/3 ok · 24 h 66.7%" in html


# --- in the browser, at two widths ---------------------------------------------------------------------

LAYOUT = r"""(() => {
  const rows = [...document.querySelectorAll('#deployments .dep')];
  const px = v => parseFloat(v) || 0;
  const details = [...document.querySelectorAll('details')];
  details.forEach(d => { d.open = true; });
  const openScrollWidth = document.documentElement.scrollWidth;  // with every hint opened
  details.forEach(d => { d.open = false; });
  return {
    openScrollWidth,
    innerWidth: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    text: document.body.innerText,
    externals: [...document.querySelectorAll('[src],link[href],[style*="url("]')].map(e => e.outerHTML),
    rows: rows.map(r => {
      const s = r.querySelector('details.hint > summary');
      return {
        id: r.id,
        height: r.getBoundingClientRect().height,
        hint: s ? {height: s.getBoundingClientRect().height, lineHeight: px(getComputedStyle(s).lineHeight),
                   open: s.parentElement.open} : null,
        cells: [...r.querySelectorAll('.bar > .c')].map(c => ({
          kind: c.className.replace(/^c k-/, ''), bg: getComputedStyle(c).backgroundColor,
          width: c.getBoundingClientRect().width, title: c.title})),
      };
    }),
    times: [...document.querySelectorAll('time')].map(t => ({text: t.textContent.trim(), title: t.title})),
  };
})()"""


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _seed(store: Store, start: datetime) -> None:
    rows = []
    for name in NAMES:
        for i in range(60):
            kind = SEEDED[i % len(SEEDED)] if name != "healthy" else FailureKind.OK
            rows.append(result_row(result(kind, resource="emu", deployment=name,
                                          total_s=0.05 + (i * 7 % 11) / 100,
                                          at=start - timedelta(seconds=30 * (60 - i))), None))
    store.save_results(rows)


async def _page(tmp_path: Path, width: int) -> tuple[browser.PageCheck, str]:
    per: dict[str, Any] = {"broken": {"faults": [{"kind": "api_error"}]},
                           "throttled": {"faults": [{"kind": "rate_limit", "retry_after": 1}]},
                           LONG_NAME: {"faults": [{"kind": "overloaded"}]}}
    with EmulatorServer(scenario=scenario(NAMES, **per)) as emu:
        daemon = make_daemon(tmp_path, config_text(emu.base_url, emu.api_key, NAMES, tmp_path / "data"))
        _seed(daemon.store, datetime.now(UTC))
        task = asyncio.create_task(daemon.run(install_signals=False))
        try:
            await until(lambda: daemon.ready() and daemon.port is not None and daemon.writer.written >= 8)
            shot = browser.artifact_dir() / f"status-page-{width}.png"
            check = await asyncio.to_thread(browser.check_page, f"http://127.0.0.1:{daemon.port}/", shot,
                                            width=width, height=900 if width > 600 else 844, evaluate=LAYOUT)
        finally:
            daemon.request_stop()
            await task
    return check, emu.api_key


@pytest.fixture(scope="module", params=[1280, 390], ids=["desktop-1280px", "phone-390px"])
def page(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> tuple[int, browser.PageCheck, str]:
    """The page as the daemon serves it, once per width for the module's tests (a browser run is costly)."""
    if (reason := browser.available()) is not None:
        pytest.skip(reason)
    check, key = asyncio.run(_page(tmp_path_factory.mktemp(f"status-{request.param}"), request.param))
    return request.param, check, key


Page = tuple[int, browser.PageCheck, str]


def test_the_status_page_has_no_console_errors_and_shows_no_secret(page: Page) -> None:
    _, check, key = page
    assert check.console_errors == []
    assert check.title.startswith("foundry-monitor")
    assert key not in check.value["text"]


def test_the_status_page_never_scrolls_sideways(page: Page) -> None:
    width, layout = page[0], page[1].value
    assert layout["innerWidth"] == width
    assert layout["scrollWidth"] <= width, f"the page is {layout['scrollWidth']} px wide, the window {width}"
    assert layout["openScrollWidth"] <= width, f"with the hints open: {layout['openScrollWidth']} px"


def test_each_deployment_is_a_row_with_one_line_of_hint(page: Page) -> None:
    width, layout = page[0], page[1].value
    rows = {r["id"]: r for r in layout["rows"]}
    assert sorted(rows) == sorted(f"dep-emu/{n}" for n in NAMES)
    for name in ("broken", "throttled", LONG_NAME):
        hint = rows[f"dep-emu/{name}"]["hint"]
        assert hint is not None and not hint["open"], name
        assert hint["height"] < 1.5 * hint["lineHeight"], f"{name}: hint is {hint['height']} px tall"
    limit = 120 if width > 600 else 190  # name/state, bar, numbers, hint: a few lines, never ten
    assert all(r["height"] <= limit for r in rows.values()), [(i, r["height"]) for i, r in rows.items()]


def test_each_row_has_a_history_bar_coloured_by_kind(page: Page) -> None:
    layout = page[1].value
    seen: set[str] = set()
    for row in layout["rows"]:
        cells = row["cells"]
        assert len(cells) == BAR, row["id"]
        assert all(c["width"] >= 3 for c in cells), (row["id"], min(c["width"] for c in cells))
        for c in cells:
            assert c["bg"] == _rgb(KIND_COLOURS[c["kind"]]), c
            assert EXACT.match(c["title"].split(" · ")[1]), c["title"]
            seen.add(c["kind"])
    assert {"ok", "timeout", "rate_limited", "server_error"} <= seen
    healthy = next(r for r in layout["rows"] if r["id"] == "dep-emu/healthy")
    assert {c["kind"] for c in healthy["cells"]} == {"ok"}


def test_times_read_relative_with_the_exact_time_on_hover(page: Page) -> None:
    layout = page[1].value
    times = layout["times"]
    assert times and all(EXACT.match(t["title"]) for t in times), times
    relative = [t for t in times if RELATIVE.match(t["text"])]
    assert len(relative) >= len(NAMES) + 1, times  # "checked ... ago" per row, "started ... ago"
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", layout["text"]), "a time with fractions of a second is shown"
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", layout["text"]), "an ISO timestamp is shown"


def test_the_page_loads_nothing_from_elsewhere(page: Page) -> None:
    layout = page[1].value
    assert layout["externals"] == []
