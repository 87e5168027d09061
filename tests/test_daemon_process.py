"""`foundry-monitor run` as a real process: SIGTERM, SIGHUP reloads, health command, no key in output."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.emulator.runner import EmulatorServer

from .daemon_helpers import config_text, monitor_process
from .loopback import free_port
from .test_daemon import scenario


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


@contextmanager
def daemon_process(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    args = ["run", "--config", str(config), "--port", str(port), "--log-format", "json"]
    with monitor_process(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        yield proc


def get(port: int, path: str) -> Any:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def ready(port: int) -> bool:
    return get(port, "/readyz") is not None


@pytest.mark.timeout(60)
def test_sigterm_with_canaries_in_flight_exits_cleanly_and_the_store_is_whole(tmp_path: Path,
                                                                               fake_key: str) -> None:
    names = [f"slow-{i}" for i in range(12)]
    slow = {n: {"latency": {"base": "1200ms"}} for n in names}
    with EmulatorServer(scenario=scenario(names, **slow)) as emu:
        cfg = tmp_path / "checks.yaml"
        cfg.write_text(config_text(emu.base_url, emu.api_key, names, tmp_path / "data",
                                   defaults={"interval": "2s", "timeout": "1500ms"}))
        port = free_port()
        with daemon_process(cfg, port) as proc:
            wait_for(lambda: ready(port), 20)
            started = len(emu.log())
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            err = proc.communicate(timeout=15)[1].decode()
            took = time.monotonic() - t0
        assert proc.returncode == 0, err[-2000:]
    assert took < 15
    assert '"event": "stopped"' in err
    conn = sqlite3.connect(tmp_path / "data" / "results.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = conn.execute("SELECT count(*) FROM results").fetchone()[0]
    assert stored >= started  # every canary that reached the emulator before SIGTERM was recorded
    assert conn.execute("SELECT count(*) FROM results WHERE kind IS NULL").fetchone()[0] == 0
    assert conn.execute("SELECT value FROM state WHERE name = 'health'").fetchone() is not None


@pytest.mark.timeout(60)
def test_sighup_with_a_broken_file_keeps_the_old_config_and_a_good_one_adds_a_deployment(
        tmp_path: Path) -> None:
    with EmulatorServer(scenario=scenario(["first", "second"])) as emu:
        cfg = tmp_path / "checks.yaml"
        good = config_text(emu.base_url, emu.api_key, ["first"], tmp_path / "data")
        cfg.write_text(good)
        port = free_port()
        with daemon_process(cfg, port) as proc:
            wait_for(lambda: ready(port), 20)
            cfg.write_text(good.replace("interval", "intreval"))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: (get(port, "/status") or {}).get("reloads", {}).get("failed") == 1)
            before = sum(1 for e in emu.log() if e["deployment"] == "first")
            wait_for(lambda: sum(1 for e in emu.log() if e["deployment"] == "first") > before + 1)
            cfg.write_text(config_text(emu.base_url, emu.api_key, ["first", "second"], tmp_path / "data"))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: any(e["deployment"] == "second" for e in emu.log()))
            status = get(port, "/status")
            proc.send_signal(signal.SIGTERM)
            err = proc.communicate(timeout=15)[1].decode()
    assert status["reloads"]["ok"] == 1 and status["reloads"]["last_ok"] is True
    assert {d["deployment"] for d in status["deployments"]} == {"first", "second"}
    assert "intreval" in err and "the previous config keeps running" in err


@pytest.mark.timeout(60)
def test_the_health_command_follows_the_daemon(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    health = [sys.executable, "-m", "monitor", "health", "--url", url]
    assert subprocess.run(health, capture_output=True).returncode == 1
    with EmulatorServer(scenario=scenario(["one"])) as emu:
        cfg = tmp_path / "checks.yaml"
        cfg.write_text(config_text(emu.base_url, emu.api_key, ["one"], tmp_path / "data"))
        with daemon_process(cfg, port) as proc:
            wait_for(lambda: ready(port), 20)
            assert subprocess.run(health, capture_output=True).returncode == 0
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=15)


@pytest.mark.timeout(60)
def test_an_unwritable_data_dir_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = tmp_path / "checks.yaml"
    cfg.write_text(config_text("http://127.0.0.1:9/anthropic/", "k", ["one"], blocker / "data"))
    out = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2
    assert "data_dir" in out.stderr and "Traceback" not in out.stderr
