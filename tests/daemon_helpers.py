"""Build configs and run daemons for tests (in-process, no signals)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from monitor import config as config_mod
from monitor.daemon.service import Daemon, Options
from monitor.store.sqlite import Store


def config_text(base_url: str, key: str, deployments: list[str], data_dir: Path, *,
                defaults: dict[str, Any] | None = None, extra_resources: str = "", port: int = 0) -> str:
    d = {"interval": "1s", "timeout": "800ms", "confirm": 0, "failure_threshold": 2, "success_threshold": 1}
    d.update(defaults or {})
    deps = "\n".join(f"      - {{name: {name}, model: claude-haiku-4-5}}" for name in deployments)
    return (f"data_dir: {json.dumps(str(data_dir))}\n"
            f"defaults: {json.dumps(d)}\n"
            f"server: {{port: {port}}}\n"
            f"resources:\n  - name: emu\n    base_url: {base_url}\n    auth: {{api_key: {json.dumps(key)}}}\n"
            f"    deployments:\n{deps}\n{extra_resources}")


def make_daemon(tmp: Path, text: str, **opts: Any) -> Daemon:
    path = tmp / "checks.yaml"
    path.write_text(text)
    cfg = config_mod.load(path)
    store = Store.open(tmp / "data" / "results.sqlite3")
    return Daemon(cfg, store, Options(config_path=str(path), **opts))


async def until(condition: Callable[[], bool], timeout: float = 20.0, step: float = 0.05) -> None:
    """Poll ``condition`` with a bounded deadline (not a sleep used as synchronisation)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


@contextlib.asynccontextmanager
async def started(daemon: Daemon, timeout: float = 15.0) -> AsyncIterator[asyncio.Task[int]]:
    """Run ``daemon`` until the block ends: entered once it is ready (every deployment probed once)."""
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        await until(lambda: daemon.ready() or task.done(), timeout=timeout)
        assert not task.done(), "the daemon did not start"
        yield task
    finally:
        daemon.request_stop()
        await task


@contextlib.contextmanager
def monitor_process(args: list[str], *, stdout: Any, stderr: Any = subprocess.STDOUT,
                    env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m monitor ARGS` for the block; killed at its end if it is still running."""
    proc = subprocess.Popen([sys.executable, "-m", "monitor", *args], stdout=stdout, stderr=stderr, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def results(daemon: Daemon) -> list[Any]:
    return daemon.store.query("SELECT * FROM results ORDER BY started_at")
