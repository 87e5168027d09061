"""Open an HTML page in Debian's headless Chromium: console errors, uncaught exceptions, a PNG screenshot.

Used by the HTML checks ("opens in headless Chromium without console errors; a screenshot is saved")::

    if (reason := browser.available()) is not None:
        pytest.skip(reason)
    result = browser.check_page(url, browser.artifact_dir() / "report.png")
    assert result.console_errors == []

How: Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe``: the browser reads
NUL-terminated JSON commands from fd 3 and writes replies and events to fd 4. That was chosen because

* it needs no Python dependency (no websocket client is installed here), no chromedriver, and no TCP port:
  no race for a free port, nothing listening, nothing to reach but the page itself;
* the protocol reports exactly what we want, as structured events with source and line:
  ``Runtime.consoleAPICalled`` (``console.error``), ``Runtime.exceptionThrown`` (uncaught exceptions and
  unhandled promise rejections) and ``Log.entryAdded`` (what Chromium itself puts on the console, e.g.
  "Failed to load resource: ... 404" or a CSP violation); ``Page.loadEventFired`` says when the page
  has loaded, the ``Network`` events tell which of its requests are still in flight (a status page that
  fetches its data after load is waited for, up to SETTLE_MAX), and ``Page.captureScreenshot`` can
  take the full page;
* parsing ``--enable-logging=stderr`` output was not: it mixes in the browser's own noise (dbus, GPU),
  its format is not an interface, a message can span lines, and it says nothing about the load event.

Every wait is bounded by ``timeout`` (reads use ``select``), the browser runs in its own process group
and that group is killed with SIGKILL when the check ends, however it ends; the temporary profile is
then removed. Chromium runs with ``--no-sandbox`` (we are root), ``--headless=new``, ``--disable-gpu``,
no proxy and background networking off, so it needs nothing but the URL it is given (127.0.0.1 or a
file), which suits the loopback-only network namespace the tests run in.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent

# Debian's /usr/bin/chromium is a shell wrapper (it sources /etc/chromium.d, loads extensions); the binary
# behind it takes the same flags without that detour. $CHROMIUM overrides both.
_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")

_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)

SETTLE_QUIET = 0.3  # after load: settled once no request is in flight and no event came for this long ...
SETTLE_MAX = 2.0  # ... or after this long at most
CLOSE_GRACE = 3.0  # seconds for Browser.close before the process group is killed
MAX_SCREENSHOT_HEIGHT = 8000  # a full-page screenshot stops here (CSS pixels)


class BrowserError(RuntimeError):
    """Chromium could not load the page, crashed, or did not answer in time."""


@dataclass
class PageCheck:
    console_errors: list[str]  # console.error messages and uncaught exceptions, with source/line when known
    screenshot: Path  # PNG written
    title: str  # document.title after load
    warnings: list[str] = field(default_factory=list)  # console.warn and warning-level browser messages
    value: Any = None  # what the `evaluate` expression returned (JSON-serialisable), if one was given


def artifact_dir() -> Path:
    """``<repo>/test-artifacts/`` (git-ignored), created if missing: tests save screenshots there."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _binary() -> str | None:
    for name in (os.environ.get("CHROMIUM", ""), *_CANDIDATES):
        if name and (found := shutil.which(name)):
            return found
    return None


@functools.cache
def available() -> str | None:
    """None when Chromium is usable, else the reason (for ``pytest.skip``)."""
    binary = _binary()
    if binary is None:
        return "chromium is not installed (scripts/_chromium.sh installs Debian's package)"
    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary} --version failed: {exc}"
    if proc.returncode != 0 or not any(name in proc.stdout for name in ("Chromium", "Chrome")):
        return f"{binary} --version failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[:300]}"
    return None


def check_page(
    url: str, screenshot: Path, *, width: int = 1280, height: int = 900, timeout: float = 30.0,
    evaluate: str | None = None,
) -> PageCheck:
    """Load ``url`` (``file:///...`` or ``http://127.0.0.1:...``), wait for its load event and a short
    settle, save a (full-page) PNG to ``screenshot`` and return the console errors and the title.

    ``evaluate``: a JavaScript expression run in the page after it settled (before the screenshot); its
    value, returned by value (so JSON-like), lands in ``PageCheck.value``. Layout facts are read this way.

    Raises BrowserError when the page cannot be loaded at all (e.g. connection refused, file missing),
    the browser crashes, or anything takes longer than ``timeout`` seconds in total.
    """
    binary = _binary()
    if binary is None:
        raise BrowserError("chromium is not installed")
    with _Browser(binary, width, height, timeout) as browser:
        return browser.check(url, Path(screenshot), evaluate)


def _location(url: str | None, line: int | None, column: int | None) -> str:
    if not url:
        return ""
    where = url
    if line is not None:
        where += f":{line + 1}"  # the protocol counts from 0
        if column is not None:
            where += f":{column + 1}"
    return f" ({where})"


def _remote_object(obj: dict[str, Any]) -> str:
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    if "unserializableValue" in obj:
        return str(obj["unserializableValue"])
    return str(obj.get("description", obj.get("type", "?")))


def _top_frame(stack: dict[str, Any] | None) -> tuple[str | None, int | None, int | None]:
    frames = (stack or {}).get("callFrames") or []
    if not frames:
        return None, None, None
    top = frames[0]
    return top.get("url") or None, top.get("lineNumber"), top.get("columnNumber")


def _console_call(params: dict[str, Any]) -> str:
    text = " ".join(_remote_object(arg) for arg in params.get("args", []))
    return f"console.{params.get('type')}: {text}{_location(*_top_frame(params.get('stackTrace')))}"


def _exception(details: dict[str, Any]) -> str:
    exc = details.get("exception") or {}
    # "description" holds "Error: kaput\n    at ..." for Error objects; "text" is "Uncaught" or similar.
    message = (str(exc.get("description") or _remote_object(exc)) if exc else "").split("\n")[0]
    text = str(details.get("text", "Uncaught"))
    summary = f"{text} {message}".strip() if message and message not in text else text
    url, line, column = details.get("url"), details.get("lineNumber"), details.get("columnNumber")
    if not url:
        url, line, column = _top_frame(details.get("stackTrace"))
    return f"exception: {summary}{_location(url, line, column)}"


def _log_entry(entry: dict[str, Any]) -> str:
    where = _location(entry.get("url"), entry.get("lineNumber"), None)
    return f"{entry.get('source', 'browser')}: {entry.get('text', '')}{where}"


class _Browser:
    """One Chromium process on a DevTools pipe, in its own process group, with a throwaway profile."""

    def __init__(self, binary: str, width: int, height: int, timeout: float) -> None:
        self.binary, self.width, self.height, self.timeout = binary, width, height, timeout
        self.deadline = time.monotonic() + timeout
        self.stage = "starting chromium"  # for the timeout message
        self.proc: subprocess.Popen[bytes] | None = None
        self.profile = ""
        self.to_browser = self.from_browser = -1
        self.buffer = b""
        self.next_id = 0
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []
        self.stderr_path = ""

    # --- process -------------------------------------------------------------------------------------

    def __enter__(self) -> _Browser:
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _start(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-check-")
        self.stderr_path = os.path.join(self.profile, "stderr.log")
        cmd_read, cmd_write = os.pipe()  # we write commands, the browser reads them on fd 3
        ev_read, ev_write = os.pipe()  # the browser writes replies/events on fd 4, we read them
        # Move the browser's ends above fd 10 so the shell's "3<&N 4>&M" cannot clobber one with the other.
        child_in = fcntl.fcntl(cmd_read, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(ev_write, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(cmd_read)
        os.close(ev_write)
        self.to_browser, self.from_browser = cmd_write, ev_read
        os.set_blocking(self.from_browser, False)
        args = [
            *_FLAGS,
            f"--user-data-dir={self.profile}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        # bash puts the pipe ends on fds 3 and 4 (what --remote-debugging-pipe expects) and execs the
        # browser, so the pid we hold is Chromium's. No preexec_fn: that is not safe next to threads;
        # not dash (/bin/sh): it only redirects fds 0-9.
        script = f'exec "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
        try:
            with open(self.stderr_path, "wb") as stderr:
                self.proc = subprocess.Popen(
                    ["/bin/bash", "-c", script, "bash", self.binary, *args],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    pass_fds=(child_in, child_out),
                    start_new_session=True,  # its own process group: killed as a whole in _stop
                    env={
                        **os.environ,
                        "HOME": self.profile,
                        "XDG_CONFIG_HOME": self.profile,
                        "XDG_CACHE_HOME": self.profile,
                    },
                )
        finally:
            os.close(child_in)
            os.close(child_out)

    def _stop(self) -> None:
        proc = self.proc
        if proc is not None:
            if proc.poll() is None and self.to_browser >= 0:
                # Ask first: Chromium then ends and reaps its own helpers (no orphans for init to collect).
                try:
                    os.set_blocking(self.to_browser, False)
                    os.write(self.to_browser, b'{"id":0,"method":"Browser.close"}\0')
                    proc.wait(timeout=CLOSE_GRACE)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            try:  # always: whatever is left of the browser's process group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=10)
        for fd in (self.to_browser, self.from_browser):
            if fd >= 0:
                os.close(fd)
        self.to_browser = self.from_browser = -1
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)

    def _stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-15:])

    # --- protocol ------------------------------------------------------------------------------------

    def _fail(self, message: str) -> BrowserError:
        exit_code = self.proc.poll() if self.proc else None
        if exit_code is not None:
            message += f" (chromium exited with {exit_code})"
        tail = self._stderr_tail()
        return BrowserError(f"{message}\nchromium stderr:\n{tail}" if tail else message)

    def _receive(self, until: float) -> dict[str, Any] | None:
        """The next message from the browser, or None when ``until`` (monotonic) passed first."""
        while b"\0" not in self.buffer:
            left = min(until, self.deadline) - time.monotonic()
            if left <= 0:
                if time.monotonic() >= self.deadline:
                    raise self._fail(f"timed out after {self.timeout:g} s {self.stage}")
                return None
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise self._fail("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        if message.get("method") in ("Inspector.targetCrashed", "Target.targetCrashed"):
            raise self._fail(f"the page crashed {self.stage}")
        if message.get("method") == "Target.detachedFromTarget" and self.session is not None:
            raise self._fail(f"the page went away {self.stage}")
        if "method" in message:
            self.events.append(message)
        return message

    def _send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if not browser and self.session is not None:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:  # small messages; a full pipe would mean a stuck browser, caught by the deadline
                _, ready, _ = select.select(
                    [], [self.to_browser], [], max(0.0, self.deadline - time.monotonic())
                )
                if not ready:
                    raise self._fail(f"timed out after {self.timeout:g} s sending {method}")
                data = data[os.write(self.to_browser, data) :]
        except BrokenPipeError:
            raise self._fail(f"chromium closed the DevTools pipe before {method}") from None
        return self.next_id

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False
    ) -> dict[str, Any]:
        wanted = self._send(method, params, browser=browser)
        while True:
            message = self._receive(self.deadline)
            if message is not None and message.get("id") == wanted:
                if "error" in message:
                    raise self._fail(f"{method} failed: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def _loaded(self, loader: str | None) -> bool:
        """Whether the load event of navigation ``loader`` came: the first after the main frame committed
        to that navigation, so a late load event of about:blank cannot pass for the page's."""
        committed = loader is None
        for event in self.events:
            if event["method"] == "Page.frameNavigated":
                frame = event.get("params", {}).get("frame", {})
                committed = committed or (frame.get("loaderId") == loader and not frame.get("parentId"))
            elif event["method"] == "Page.loadEventFired" and committed:
                return True
        return False

    def _settle(self) -> None:
        """Give late requests, timers and errors a bounded moment after the load event: wait until no
        request of the page is in flight and no event came for SETTLE_QUIET; never longer than SETTLE_MAX."""
        stop = time.monotonic() + SETTLE_MAX
        in_flight: set[str] = set()
        for event in self.events:
            self._track(event, in_flight)
        last = time.monotonic()
        while True:
            message = self._receive(stop if in_flight else min(stop, last + SETTLE_QUIET))
            if message is None:
                return
            if "method" in message:
                self._track(message, in_flight)
                last = time.monotonic()

    @staticmethod
    def _track(event: dict[str, Any], in_flight: set[str]) -> None:
        method, request = event["method"], event.get("params", {}).get("requestId")
        if method == "Network.requestWillBeSent":
            in_flight.add(request)
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            in_flight.discard(request)

    # --- the check -----------------------------------------------------------------------------------

    def check(self, url: str, screenshot: Path, evaluate: str | None = None) -> PageCheck:
        self.stage = "opening a tab"
        target = self.call("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.events.clear()  # about:blank's own events are not the page's
        self.stage = f"loading {url}"
        navigation = self.call("Page.navigate", {"url": url})
        if navigation.get("errorText"):
            raise self._fail(f"could not load {url}: {navigation['errorText']}")
        while not self._loaded(navigation.get("loaderId")):
            self._receive(self.deadline)
        self.stage = f"waiting for {url} to settle"
        # One frame after load (rAF + a macrotask), then a quiet moment for late requests, timers and errors.
        self.call(
            "Runtime.evaluate",
            {
                "expression": "new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))",
                "awaitPromise": True,
            },
        )
        self._settle()
        self.stage = f"taking the screenshot of {url}"
        title = self.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True})
        declares_icon = self.call(
            "Runtime.evaluate",
            {"expression": "!!document.querySelector('link[rel~=icon i]')", "returnByValue": True},
        )
        value = None
        if evaluate is not None:
            found = self.call("Runtime.evaluate", {"expression": evaluate, "returnByValue": True})
            if "exceptionDetails" in found:
                raise self._fail(f"evaluating the expression failed: {_exception(found['exceptionDetails'])}")
            value = found.get("result", {}).get("value")
        self._screenshot(screenshot)
        errors, warnings = self._collect(own_favicon=bool(declares_icon.get("result", {}).get("value")))
        return PageCheck(
            console_errors=errors,
            screenshot=screenshot,
            title=str(title.get("result", {}).get("value", "")),
            warnings=warnings,
            value=value,
        )

    def _screenshot(self, path: Path) -> None:
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
        width = min(max(int(size.get("width", 0)), self.width), self.width * 4)
        height = min(max(int(size.get("height", 0)), self.height), MAX_SCREENSHOT_HEIGHT)
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = self.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def _collect(self, *, own_favicon: bool) -> tuple[list[str], list[str]]:
        """Errors and warnings from the page's events. Over http Chromium fetches /favicon.ico on its own
        when the page declares no icon; that request failing is no fault of the page: a warning only."""
        errors: list[str] = []
        warnings: list[str] = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if event.get("sessionId") not in (None, self.session):
                continue
            if method == "Runtime.consoleAPICalled":
                kind = params.get("type")
                if kind in ("error", "assert"):
                    errors.append(_console_call(params))
                elif kind == "warning":
                    warnings.append(_console_call(params))
            elif method == "Runtime.exceptionThrown":
                errors.append(_exception(params.get("exceptionDetails", {})))
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                browsers_favicon = not own_favicon and urlsplit(entry.get("url") or "").path == "/favicon.ico"
                if entry.get("level") == "error" and not browsers_favicon:
                    errors.append(_log_entry(entry))
                elif entry.get("level") in ("error", "warning"):
                    warnings.append(_log_entry(entry))
        return errors, warnings
