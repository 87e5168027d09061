"""The headless-Chromium page check (tests/browser.py): errors are seen, clean pages pass, PNGs are written.

Each test loads one page (about a second each); the module skips when Chromium is not installed.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from . import browser

if (_reason := browser.available()) is not None:
    pytest.skip(_reason, allow_module_level=True)

SLOW = 2 * browser.SETTLE_QUIET  # longer than the quiet moment: only waiting for requests in flight sees it
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CLEAN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Clean page ✓</title>
<style>
  body { font-family: sans-serif; margin: 2rem; background: #f4f6fb; color: #1b2333; }
  .card { border: 1px solid #c5cde0; border-radius: 8px; padding: 1rem; background: white; }
</style></head>
<body>
  <h1>Status</h1>
  <div class="card">
    <svg width="240" height="80" viewBox="0 0 240 80" role="img" aria-label="bars">
      <rect x="10" y="30" width="40" height="50" fill="#3b7dd8"/>
      <rect x="70" y="10" width="40" height="70" fill="#2fa36b"/>
      <rect x="130" y="50" width="40" height="30" fill="#d8903b"/>
    </svg>
    <p id="out">waiting</p>
  </div>
  <script>document.getElementById("out").textContent = "scripts ran";</script>
</body></html>
"""


def _page(body: str, title: str = "t") -> str:
    head = f'<meta charset="utf-8"><title>{title}</title>'
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def _write(tmp_path: Path, name: str, html: str) -> str:
    path = tmp_path / name
    path.write_text(html, encoding="utf-8")
    return path.as_uri()


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 1024, f"{path} is only {len(data)} bytes"


def test_clean_page_has_no_errors_and_saves_a_screenshot(tmp_path: Path) -> None:
    shot = browser.artifact_dir() / "browser-clean-page.png"
    shot.unlink(missing_ok=True)
    result = browser.check_page(_write(tmp_path, "clean.html", CLEAN_PAGE), shot)
    assert result.console_errors == []
    assert result.title == "Clean page ✓"
    assert result.screenshot == shot
    _assert_png(shot)
    assert shot.parent == Path(__file__).resolve().parent.parent / "test-artifacts"


def test_console_error_is_reported(tmp_path: Path) -> None:
    html = _page('<p>hi</p><script>console.log("fine"); console.error("boom");</script>', "err")
    result = browser.check_page(_write(tmp_path, "console.html", html), tmp_path / "console.png")
    assert len(result.console_errors) == 1, result.console_errors
    assert "boom" in result.console_errors[0]
    assert "console.html:1" in result.console_errors[0]  # where it came from
    assert result.title == "err"
    _assert_png(tmp_path / "console.png")


def test_uncaught_exception_is_reported(tmp_path: Path) -> None:
    # One thrown while the page loads, one from a timer after the load event: both must be seen.
    html = _page(
        '<p>hi</p><script>setTimeout(() => { throw new Error("late") }, 100);'
        ' throw new Error("kaput");</script>'
    )
    result = browser.check_page(_write(tmp_path, "throw.html", html), tmp_path / "throw.png")
    errors = "\n".join(result.console_errors)
    assert len(result.console_errors) == 2, errors
    assert "Error: kaput" in errors
    assert "Error: late" in errors
    assert "Uncaught" in errors


class _Handler(SimpleHTTPRequestHandler):
    """Files from the site folder, plus /slow.json: answered only after SLOW seconds."""

    def do_GET(self) -> None:
        if self.path != "/slow.json":
            return super().do_GET()
        time.sleep(SLOW)
        body = b'{"title": "from slow.json"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An http.server on 127.0.0.1 (port 0, a thread) serving tmp_path/site: (base URL, folder)."""
    root = tmp_path / "site"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_page_over_http_is_checked_the_same_way(site: tuple[str, Path], tmp_path: Path) -> None:
    base, root = site
    (root / "index.html").write_text(CLEAN_PAGE, encoding="utf-8")
    clean = browser.check_page(f"{base}/index.html", tmp_path / "http-clean.png")
    # Chromium's own /favicon.ico request 404s here: the page did not ask for it, so it is no error.
    assert clean.console_errors == []
    assert clean.title == "Clean page ✓"
    _assert_png(tmp_path / "http-clean.png")

    # After the load event the page fetches JSON that takes SLOW seconds; its title comes from there.
    script = (
        'console.error("over http");'
        ' addEventListener("load", () => fetch("/slow.json").then(r => r.json())'
        ".then(d => { document.title = d.title }));"
    )
    broken = _page(f'<img src="missing.png" alt="x"><script>{script}</script>', "broken")
    (root / "broken.html").write_text(broken, encoding="utf-8")
    result = browser.check_page(f"{base}/broken.html", tmp_path / "http-broken.png")
    errors = "\n".join(result.console_errors)
    assert len(result.console_errors) == 2, errors
    assert "over http" in errors
    assert "404" in errors and f"{base}/missing.png" in errors  # a failed resource load counts too
    assert result.title == "from slow.json"  # the check waited for the request in flight


def test_a_server_that_never_answers_fails_in_bounded_time(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (kernel backlog), never responds
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        started = time.monotonic()
        with pytest.raises(browser.BrowserError, match="timed out"):
            browser.check_page(url, tmp_path / "never.png", timeout=2.0)
        assert time.monotonic() - started < 8.0
