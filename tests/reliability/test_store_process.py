"""The daemon as a real process when its store is damaged, when it cannot be written (a full disk), and
when a second daemon starts on the same data_dir: probing goes on, and what happened is said."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from monitor.emulator.runner import EmulatorServer
from tests.daemon_helpers import config_text, monitor_process
from tests.loopback import free_port
from tests.reliability.test_process_faults import polled, scalar, scenario
from tests.test_daemon_process import get, wait_for
from tests.test_telemetry_process import IDENTITY_VARS

NAMES = [f"dep-{i}" for i in range(6)]


class Running:
    """A daemon process whose JSON log lines are read from a pipe as they come (a pipe, not a file: a
    file write would fail too while the test makes the disk look full)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            if line.startswith("{") and f'"event": "{name}"' in line:
                out.append(json.loads(line))
        return out

    def status(self) -> dict[str, Any]:
        found = get(self.port, "/status")
        return dict(found) if found is not None else {}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(20)
        self._reader.join(5)
        return code

    def output(self) -> str:
        self._reader.join(5)
        return "\n".join(self.lines)


@contextmanager
def running(config: Path, *extra: str) -> Iterator[Running]:
    env = {k: v for k, v in os.environ.items() if k not in IDENTITY_VARS}
    port = free_port()
    args = ["run", "--config", str(config), "--port", str(port), "--log-format", "json", *extra]
    with monitor_process(args, stdout=subprocess.PIPE, env=env) as proc:
        r = Running(proc, port)
        try:
            yield r
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            r.output()  # the reader has seen the end of the pipe
            assert proc.stdout is not None
            proc.stdout.close()


def write_config(tmp_path: Path, emu: EmulatorServer, extra: str = "") -> Path:
    cfg = tmp_path / "checks.yaml"
    cfg.write_text(config_text(emu.base_url, emu.api_key, NAMES, tmp_path / "data") + extra)
    return cfg


def results_count(store: Path) -> int:
    try:
        return int(polled(store, "SELECT count(*) FROM results") or 0)
    except sqlite3.DatabaseError:  # the damaged file, before the daemon has moved it aside
        return 0


# --- a damaged store --------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_garbage_store_is_kept_aside_and_the_daemon_probes_into_a_fresh_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = data / "results.sqlite3"
    damaged = os.urandom(64 * 1024)
    store.write_bytes(damaged)
    with EmulatorServer(scenario=scenario(NAMES, {"base": "5ms"})) as emu:
        cfg = write_config(tmp_path, emu)
        with running(cfg) as d:
            wait_for(lambda: results_count(store) >= 2 * len(NAMES), 30)
            kept = [p for p in data.iterdir() if p.name.startswith("results.damaged-")
                    and p.name.endswith(".sqlite3")]
            assert len(kept) == 1 and kept[0].read_bytes() == damaged
            said = d.events("store_recovered")
            assert len(said) == 1 and said[0]["level"] == "error"
            assert said[0]["moved_to"] == str(kept[0]) and "file is not a database" in said[0]["error"]
            assert d.status()["store"]["recovered_from_damage"]["moved_to"] == str(kept[0])
            assert d.stop() == 0
        assert scalar(store, "PRAGMA integrity_check") == "ok"
        assert scalar(store, "SELECT count(DISTINCT deployment) FROM results") == len(NAMES)


# --- a store that cannot be written ---------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_full_disk_keeps_canaries_going_reports_what_was_dropped_and_catches_up(tmp_path: Path) -> None:
    """The disk is made full for the daemon alone: RLIMIT_FSIZE 0 makes every write to a file fail
    (EFBIG, which SQLite reports as a disk I/O error), as a full or failing disk does."""
    store = tmp_path / "data" / "results.sqlite3"
    with EmulatorServer(scenario=scenario(NAMES, {"base": "5ms"})) as emu:
        cfg = write_config(tmp_path, emu, "store: {max_pending: 20}\n")
        with running(cfg) as d:
            wait_for(lambda: d.status().get("ready") is True, 30)
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (0, hard))
            probed = sum(x["counts"]["canaries"] for x in d.status()["deployments"])
            # canaries go on while nothing lands in the store, and the overflow is counted
            wait_for(lambda: d.status()["store"]["dropped"] >= 10, 40)
            before = results_count(store)
            status = d.status()
            assert status["store"]["writable"] is False and status["store"]["pending"] <= 20
            assert "disk I/O error" in status["store"]["last_error"]
            assert sum(x["counts"]["canaries"] for x in status["deployments"]) >= probed + 20
            assert all(x["state"] == "healthy" for x in status["deployments"])
            unwritable = d.events("store_unwritable")
            assert len(unwritable) == 1 and unwritable[0]["level"] == "error"
            assert len(d.events("results_dropped")) == 1
            # the disk has room again: the backlog lands, and the line says how many were dropped
            resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
            wait_for(lambda: len(d.events("store_writable")) == 1, 20)
            back = d.events("store_writable")[0]
            assert back["dropped"] >= 10 and back["level"] == "error"
            wait_for(lambda: d.status()["store"]["pending"] == 0 and d.status()["store"]["writable"], 20)
            assert results_count(store) >= before + 20
            written_after = results_count(store)
            wait_for(lambda: results_count(store) > written_after + len(NAMES), 20)
            dropped = d.status()["store"]["dropped"]
            assert d.stop() == 0
        stopped = d.events("stopped")
        assert stopped and stopped[-1]["results_dropped"] == dropped
        assert scalar(store, "PRAGMA integrity_check") == "ok"


# --- two daemons on one data_dir ------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_second_daemon_on_the_same_data_dir_refuses_with_one_line_naming_the_first_and_exits_2(
        tmp_path: Path) -> None:
    with EmulatorServer(scenario=scenario(NAMES, {"base": "5ms"})) as emu:
        cfg = write_config(tmp_path, emu)
        with running(cfg) as first:
            wait_for(lambda: first.status().get("ready") is True, 30)
            second = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(cfg),
                                     "--port", str(free_port())], capture_output=True, text=True, timeout=60)
            assert second.returncode == 2
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in second.stderr
            assert lines[0].startswith("error: another foundry-monitor (pid ")
            assert f"pid {first.proc.pid} on host " in lines[0]
            assert "--shard I/N (same N) or distinct --location" in lines[0]
            assert first.proc.poll() is None and first.status().get("ready") is True
            # the holder renews its heartbeat while it runs (every 5 s)
            store = tmp_path / "data" / "results.sqlite3"
            beat = scalar(store, "SELECT heartbeat_at FROM leases")
            wait_for(lambda: scalar(store, "SELECT heartbeat_at FROM leases") > beat, 15)
            assert first.stop() == 0
        assert scalar(store, "SELECT count(*) FROM leases") == 0
        # released on a clean stop: the next start needs no wait
        with running(cfg) as again:
            wait_for(lambda: again.status().get("ready") is True, 30)
            assert again.events("lease_taken_over") == []
            assert again.stop() == 0


@pytest.mark.timeout(90)
def test_two_distinct_shards_and_two_locations_share_one_data_dir(tmp_path: Path) -> None:
    store = tmp_path / "data" / "results.sqlite3"
    with EmulatorServer(scenario=scenario(NAMES, {"base": "5ms"})) as emu:
        cfg = write_config(tmp_path, emu)
        with running(cfg, "--shard", "0/2") as a, running(cfg, "--shard", "1/2") as b, \
                running(cfg, "--location", "eastus") as c:
            for d in (a, b, c):
                wait_for(lambda d=d: d.status().get("ready") is True or d.proc.poll() is not None, 30)  # type: ignore[misc]
                assert d.proc.poll() is None, d.output()
            shards = [{x["deployment"] for x in d.status()["deployments"]} for d in (a, b)]
            assert not shards[0] & shards[1] and shards[0] | shards[1] == set(NAMES)
            wait_for(lambda: (polled(store, "SELECT count(DISTINCT deployment || location) FROM results")
                              or 0) == 2 * len(NAMES), 30)
            assert [d.stop() for d in (a, b, c)] == [0, 0, 0]


@pytest.mark.timeout(90)
def test_a_restart_after_the_holder_was_killed_takes_its_lease_over_and_says_so(tmp_path: Path) -> None:
    with EmulatorServer(scenario=scenario(NAMES, {"base": "5ms"})) as emu:
        cfg = write_config(tmp_path, emu)
        with running(cfg) as first:
            wait_for(lambda: first.status().get("ready") is True, 30)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
        with running(cfg) as second:
            wait_for(lambda: second.status().get("ready") is True or second.proc.poll() is not None, 30)
            assert second.proc.poll() is None, second.output()
            taken = second.events("lease_taken_over")
            assert len(taken) == 1 and taken[0]["holder_pid"] == first.proc.pid
            assert second.stop() == 0
