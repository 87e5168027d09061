"""The daemon in-process over a store that is damaged at start or refuses writes while it runs: probing
goes on, /status says what happened, and the events reach telemetry as custom events."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor import config as config_mod
from monitor.daemon.service import Daemon, Options
from monitor.emulator.runner import EmulatorServer
from monitor.errors import StoreError
from monitor.store.lease import Lease
from monitor.store.recover import open_or_recover
from monitor.store.sqlite import Store

from .capture import base_data, capture_server
from .daemon_helpers import config_text, started, until
from .test_daemon import scenario
from .test_telemetry import telemetry_to


class Broken(Store):
    """A store whose every write fails while `broken` is set, as on a full disk (the Store seam)."""

    broken = False

    def _refuse(self) -> None:
        if self.broken:
            raise StoreError(f"cannot write to the store at {self.path}: database or disk is full")

    def save_results(self, rows: Any) -> None:
        self._refuse()
        super().save_results(rows)

    def add_transition(self, *args: Any) -> None:
        self._refuse()
        super().add_transition(*args)

    def open_incident(self, *args: Any) -> None:
        self._refuse()
        super().open_incident(*args)

    def put_state(self, *args: Any) -> None:
        self._refuse()
        super().put_state(*args)


def load(tmp_path: Path, text: str) -> tuple[config_mod.Config, Options]:
    path = tmp_path / "checks.yaml"
    path.write_text(text)
    return config_mod.load(path), Options(config_path=str(path))


@pytest.mark.timeout(60)
async def test_a_store_refusing_every_write_stops_nothing_and_what_waits_lands_when_it_works_again(
        tmp_path: Path) -> None:
    names = ["fine", "broken-dep"]
    per = {"broken-dep": {"faults": [{"kind": "api_error"}]}}
    with EmulatorServer(scenario=scenario(names, **per)) as emu:
        cfg, opts = load(tmp_path, config_text(emu.base_url, emu.api_key, names, tmp_path / "data")
                         + "store: {max_pending: 4}\n")
        store = Broken.open(tmp_path / "data" / "results.sqlite3")
        store.broken = True
        daemon = Daemon(cfg, store, opts)
        async with started(daemon):
            # the deployment fails, goes down (its transition and incident cannot be stored), and
            # canaries go on past the bound
            await until(lambda: daemon.status()["store"]["dropped"] >= 3, timeout=20)
            status = daemon.status()
            assert {d["deployment"]: d["state"] for d in status["deployments"]} == \
                {"fine": "healthy", "broken-dep": "down"}
            assert status["store"]["writable"] is False and status["store"]["pending"] <= 4
            assert {"transition", "incident", "health snapshot"} <= set(status["store"]["failing"])
            store.broken = False
            await until(lambda: daemon.status()["store"]["pending"] == 0 and daemon.writer.written >= 4,
                        timeout=20)
            await until(lambda: "health snapshot" not in daemon.status()["store"]["failing"], timeout=30)
        assert daemon.store.query("SELECT count(*) FROM results")[0][0] >= 4
    store.close()


@pytest.mark.timeout(60)
async def test_a_recovered_store_and_a_lease_taken_over_reach_telemetry_as_custom_events(
        tmp_path: Path) -> None:
    path = tmp_path / "data" / "results.sqlite3"
    path.parent.mkdir()
    path.write_bytes(os.urandom(32 * 1024))
    store, recovery = open_or_recover(path, datetime.now(UTC))
    Lease(store, [("emu", "one")], host="crashed-host", ttl_s=-1.0).acquire()  # expired at once
    lease = Lease(store, [("emu", "one")])
    lease.acquire()
    logger = logging.getLogger("monitor")
    with EmulatorServer(scenario=scenario(["one"])) as emu, capture_server() as cap:
        cfg, opts = load(tmp_path, config_text(emu.base_url, emu.api_key, ["one"], tmp_path / "data"))
        tel = telemetry_to(cap)
        tel.capture_logs(logger)
        daemon = Daemon(cfg, store, opts, telemetry=tel, lease=lease, recovery=recovery)
        async with started(daemon):
            assert daemon.status()["store"]["recovered_from_damage"]["moved_to"] == recovery.damaged  # type: ignore[union-attr]
        assert not lease.held and lease.holders() == []  # released at stop
        tel.shutdown()
        events = {base_data(e)["name"]: base_data(e)["properties"] for e in cap.of_type("EventData")}
    assert events["foundry_monitor.store_recovered"]["foundry_monitor.moved_to"] == recovery.damaged  # type: ignore[union-attr]
    assert events["foundry_monitor.lease_taken_over"]["foundry_monitor.holder_host"] == "crashed-host"
    store.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.timeout(60)
async def test_a_daemon_whose_lease_was_taken_while_it_stalled_stops_with_exit_2(tmp_path: Path) -> None:
    with EmulatorServer(scenario=scenario(["one"])) as emu:
        cfg, opts = load(tmp_path, config_text(emu.base_url, emu.api_key, ["one"], tmp_path / "data"))
        store = Store.open(tmp_path / "data" / "results.sqlite3")
        clock = Clock()
        lease = Lease(store, [("emu", "one")], now=clock, host="stalled-host")
        lease.acquire()
        daemon = Daemon(cfg, store, opts, lease=lease)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.ready() or task.done(), timeout=15)
        await daemon._heartbeat()  # renewed: nothing happens
        assert not task.done() and lease.held
        clock.t += 60  # the daemon stalled past its expiry; another took over
        Lease(store, [("emu", "one")], now=clock, host="other-host").acquire()
        await daemon._heartbeat()
        assert await asyncio.wait_for(task, 20) == 2
        assert [h.host for h in lease.holders()] == ["other-host"]  # not released: it is not ours
    store.close()


async def test_replicas_sharing_a_store_each_keep_their_own_health_snapshot(tmp_path: Path) -> None:
    names = [f"dep-{i}" for i in range(6)]
    cfg, _ = load(tmp_path, config_text("http://127.0.0.1:9/anthropic/", "k", names, tmp_path / "data"))
    store = Store.open(tmp_path / "data" / "results.sqlite3")
    daemons = [Daemon(cfg, store, Options(config_path="", shard=(i, 2))) for i in range(2)]
    daemons.append(Daemon(cfg, store, Options(config_path="", location="eastus")))
    daemons.append(Daemon(cfg, store, Options(config_path="")))
    for d in daemons:
        await d._save_snapshot()
        await d.fleet.aclose()
    names_kept = [r[0] for r in store.query("SELECT name FROM state WHERE name LIKE 'health%' ORDER BY name")]
    assert names_kept == ["health", "health:0/2:", "health:1/2:", "health::eastus"]
    store.close()


class NoTransactions(Store):
    """A store whose write transactions fail while `broken` is set (the lease's only way in)."""

    broken = True

    def transaction(self) -> Any:
        if self.broken:
            raise StoreError(f"cannot write to the store at {self.path}: database or disk is full")
        return super().transaction()


@pytest.mark.timeout(60)
async def test_a_lease_that_could_not_be_taken_at_start_does_not_stop_the_daemon_and_is_taken_later(
        tmp_path: Path) -> None:
    with EmulatorServer(scenario=scenario(["one"])) as emu:
        cfg, opts = load(tmp_path, config_text(emu.base_url, emu.api_key, ["one"], tmp_path / "data"))
        store = NoTransactions.open(tmp_path / "data" / "results.sqlite3")
        lease = Lease(store, [("emu", "one")])
        with pytest.raises(StoreError) as caught:
            lease.acquire()
        lease.error = str(caught.value)  # as `run` does
        daemon = Daemon(cfg, store, opts, lease=lease)
        async with started(daemon):
            assert "lease" in daemon.status()["store"]["failing"]
            store.broken = False
            await daemon._heartbeat()
            assert lease.held and "lease" not in daemon.status()["store"]["failing"]
        assert not lease.held
    store.close()
