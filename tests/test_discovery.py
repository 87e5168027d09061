"""The live fleet: a real daemon discovers Claude deployments through the emulator's ARM with the real
azure-mgmt-cognitiveservices client, probes them with Entra ID, follows additions and removals, reports
drift and retirement, and keeps its last fleet when ARM refuses or throttles."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor import config as config_mod
from monitor.daemon.service import Daemon, Options
from monitor.emulator.runner import EmulatorServer
from monitor.store.sqlite import Store

from .arm_helpers import SUB_A, SUB_B, arm_emulator
from .daemon_helpers import until


class Events:
    """The telemetry seam, recording the custom events (a fake at a Protocol seam)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def fleet(self, cfg: Any, states: Any) -> None: ...

    def record(self, result: Any, cost: Any) -> None: ...

    def transition(self, t: Any) -> None: ...

    def reloaded(self, ok: bool) -> None: ...

    def event(self, name: str, attributes: Mapping[str, Any], at: datetime) -> None:
        self.events.append((name, dict(attributes)))

    def metrics(self) -> bytes:
        return b""

    def shutdown(self, timeout_s: float = 10.0) -> None: ...


def discovery_config(emu: EmulatorServer, tmp: Path, refresh: str = "1s", **extra: Any) -> str:
    d = {"subscriptions": [SUB_A, SUB_B], "arm_endpoint": emu.root, "ca_file": str(tmp / "ca.pem"),
         "endpoint": emu.plain.base_url, "refresh": refresh, "tags": {"env": "prod"}, **extra}  # type: ignore[attr-defined]
    defaults = {"interval": "1s", "timeout": "800ms", "confirm": 0, "failure_threshold": 2,
                "success_threshold": 1}
    return (f"data_dir: {json.dumps(str(tmp / 'data'))}\ndefaults: {json.dumps(defaults)}\n"
            f"server: {{port: 0}}\ndiscovery: {json.dumps(d)}\n")


def make(tmp: Path, text: str, events: Events | None = None) -> Daemon:
    path = tmp / "checks.yaml"
    path.write_text(text)
    store = Store.open(tmp / "data" / "results.sqlite3")
    return Daemon(config_mod.load(path), store, Options(config_path=str(path)), telemetry=events)


def probed(daemon: Daemon) -> set[str]:
    return {t.deployment for t in daemon.fleet.targets}


@pytest.mark.timeout(90)
async def test_a_subscription_alone_gives_canaries_for_every_claude_deployment_in_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        daemon = make(tmp_path, discovery_config(emu, tmp_path))
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.ready() and bool(daemon.fleet.targets), timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.port}") as client:
            status = (await client.get("/status")).json()
        daemon.request_stop()
        await task
        auths = {e["auth"] for e in emu.log() if e["deployment"] in ("haiku-a", "sonnet-a", "haiku-b")}
    # env=prod: team-lab is left out by its tag, gpt-a is not Claude
    assert {(t.resource, t.deployment) for t in daemon.fleet.targets} == {
        ("team-a", "haiku-a"), ("team-a", "sonnet-a"), ("team-b", "haiku-b")}
    assert auths == {"bearer"}  # Entra ID with the monitor's credential
    states = {d["deployment"]: d["state"] for d in status["deployments"]}
    assert states == {"haiku-a": "healthy", "sonnet-a": "healthy", "haiku-b": "healthy"}
    rows = {r["deployment"]: r for r in status["inventory"]}
    assert rows["sonnet-a"]["days_to_retirement"] is not None
    assert rows["sonnet-a"]["lifecycle"] == "Deprecating"
    assert rows["haiku-b"]["quota"] == {"name": "AIServices.GlobalStandard.claude-haiku-4-5", "current": 98,
                                        "limit": 100, "unit": "Count"}
    assert rows["opus-lab"]["monitored"] is False and rows["haiku-a"]["resource"] == "team-a"
    assert status["discovery"]["ok"] is True and status["discovery"]["refreshes"]["ok"] >= 1


@pytest.mark.timeout(90)
async def test_deployments_added_and_removed_start_and_stop_within_one_refresh_and_never_show_as_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = Events()
    with arm_emulator(tmp_path, monkeypatch) as emu:
        daemon = make(tmp_path, discovery_config(emu, tmp_path, refresh="2s"), events)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.ready() and bool(daemon.fleet.targets), timeout=30)
        untouched = daemon.fleet.transports["team-b"], daemon.fleet.auths["team-b"]
        emu.arm_put_deployment(SUB_A, "team-a", "haiku-new", model="claude-haiku-4-5", version="20251001")
        added_at = asyncio.get_running_loop().time()
        await until(lambda: "haiku-new" in probed(daemon), timeout=10)
        # an account the refresh did not change keeps its warm connections and cached token
        assert (daemon.fleet.transports["team-b"], daemon.fleet.auths["team-b"]) == untouched
        started = asyncio.get_running_loop().time() - added_at
        await until(lambda: any(e["deployment"] == "haiku-new" and e["status"] == 200 for e in emu.log()),
                    timeout=10)
        emu.arm_remove_deployment(SUB_A, "team-a", "haiku-new")  # the data plane answers 404 from now
        removed_at = asyncio.get_running_loop().time()
        await until(lambda: "haiku-new" not in probed(daemon), timeout=10)
        stopped = asyncio.get_running_loop().time() - removed_at
        calls = len([e for e in emu.log() if e["deployment"] == "haiku-new"])
        await asyncio.sleep(0)
        daemon.request_stop()
        await task
        after = len([e for e in emu.log() if e["deployment"] == "haiku-new"])
    assert started < 2.0 + 1.5 and stopped < 2.0 + 1.5  # within one refresh (2 s) and a tick
    assert after <= calls + 1  # no canary after it left the fleet (bar one in flight)
    down = daemon.store.query("SELECT * FROM transitions WHERE deployment = 'haiku-new' "
                              "AND to_state = 'down'")
    assert down == []
    kinds = [(r["kind"], r["deployment"]) for r in daemon.store.query(
        "SELECT kind, deployment FROM inventory_events ORDER BY id")]
    assert ("added", "haiku-new") in kinds and ("removed", "haiku-new") in kinds
    fleet_events = [a for n, a in events.events if n == "foundry_monitor.fleet_change"]
    assert [a["change"] for a in fleet_events if a["deployment"] == "haiku-new"] == ["added", "removed"]
    recent = daemon.status()["discovery"]["recent_changes"]
    assert recent[0]["change"] == "removed" and recent[0]["deployment"] == "haiku-new"


@pytest.mark.timeout(90)
async def test_drift_and_retirement_are_events_with_before_and_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = Events()
    with arm_emulator(tmp_path, monkeypatch) as emu:
        daemon = make(tmp_path, discovery_config(emu, tmp_path, refresh="1s"), events)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.ready() and bool(daemon.fleet.targets), timeout=30)
        emu.arm_put_deployment(SUB_A, "team-a", "haiku-a", version="20260101", capacity=80)
        emu.arm_put_deployment(SUB_B, "team-b", "haiku-b", state="Paused")
        soon = datetime.now(UTC).date().toordinal() + 20
        emu.arm_put_model("eastus2", "claude-haiku-4-5", "20260101",
                          retirement=datetime.fromordinal(soon).date().isoformat())
        await until(lambda: sum(1 for n, _ in events.events if n == "foundry_monitor.drift") >= 3
                    and any(n == "foundry_monitor.retirement" for n, _ in events.events), timeout=15)
        paused_gone = "haiku-b" not in probed(daemon)
        daemon.request_stop()
        await task
    drift = {(a["deployment"], a["field"]): (a["before"], a["after"]) for n, a in events.events
             if n == "foundry_monitor.drift"}
    assert drift[("haiku-a", "model_version")] == ("claude-haiku-4-5 20251001", "claude-haiku-4-5 20260101")
    assert drift[("haiku-a", "capacity")] == ("50", "80")
    assert drift[("haiku-b", "state")] == ("Succeeded/Running", "Succeeded/Paused")
    assert paused_gone  # a paused deployment is not probed (it would only look down)
    retire = [a for n, a in events.events if n == "foundry_monitor.retirement"]
    # sonnet-a retires on 2026-12-20 and haiku-a's new version in 20 days: each warned once at its threshold
    by_dep = {a["deployment"]: a for a in retire}
    assert by_dep["haiku-a"]["field"] == "30" and by_dep["haiku-a"]["before"] == "claude-haiku-4-5 20260101"
    assert len([a for a in retire if a["deployment"] == "haiku-a"]) == 1
    stored = daemon.store.query("SELECT field, before, after FROM inventory_events WHERE kind = 'drift'")
    assert {(r["field"], r["before"], r["after"]) for r in stored} >= {("capacity", "50", "80")}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("status", [403, 429])
async def test_a_refused_or_throttled_refresh_keeps_the_last_fleet_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    events = Events()
    with arm_emulator(tmp_path, monkeypatch) as emu:
        daemon = make(tmp_path, discovery_config(emu, tmp_path, refresh="1s"), events)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.ready() and bool(daemon.fleet.targets), timeout=30)
        before = probed(daemon)
        emu.arm_fault(status, retry_after=0.1)
        emu.arm_remove_deployment(SUB_A, "team-a", "sonnet-a")  # unseen: ARM refuses every read now
        await until(lambda: daemon.status()["discovery"]["refreshes"]["failed"] >= 2, timeout=15)
        status_json = daemon.status()["discovery"]
        kept = probed(daemon)
        emu.arm_fault(None)
        await until(lambda: "sonnet-a" not in probed(daemon), timeout=10)
        daemon.request_stop()
        await task
    assert kept == before
    assert status_json["ok"] is False and "last known fleet" in status_json["note"]
    assert str(status) in status_json["last_error"]
    failed = [a for n, a in events.events if n == "foundry_monitor.discovery_failed"]
    assert failed and failed[0]["reason"] == {403: "forbidden", 429: "throttled"}[status]


@pytest.mark.timeout(90)
async def test_a_restart_starts_from_the_stored_fleet_when_arm_is_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        text = discovery_config(emu, tmp_path, refresh="10m")
        first = make(tmp_path, text)
        task = asyncio.create_task(first.run(install_signals=False))
        await until(lambda: first.ready() and bool(first.fleet.targets), timeout=30)
        first.request_stop()
        await task
        first.store.close()
        emu.arm_fault(403)
        second = make(tmp_path, text)
        task = asyncio.create_task(second.run(install_signals=False))
        await until(lambda: second.ready() and bool(second.fleet.targets), timeout=30)
        await until(lambda: second.status()["discovery"]["refreshes"]["failed"] >= 1, timeout=10)
        status = second.status()["discovery"]
        second.request_stop()
        await task
    assert probed(second) == {"haiku-a", "sonnet-a", "haiku-b"}
    assert status["ok"] is False and status["snapshot_at"] is not None


@pytest.mark.timeout(90)
async def test_the_status_page_shows_the_inventory_with_retirement_and_quota(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        daemon = make(tmp_path, discovery_config(emu, tmp_path, refresh="10m"))
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.ready() and bool(daemon.fleet.targets), timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.port}") as client:
            page = (await client.get("/")).text
        daemon.request_stop()
        await task
    assert "Inventory (Azure Resource Manager)" in page
    assert "claude-sonnet-4-5 20250929" in page and "98/100" in page and "opus-lab (not probed)" in page


@pytest.mark.timeout(90)
async def test_a_reload_keeps_the_discovered_fleet_and_applies_the_new_overrides(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        daemon = make(tmp_path, discovery_config(emu, tmp_path, refresh="10m"))
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.ready() and bool(daemon.fleet.targets), timeout=30)
        reads = emu.state.arm.calls
        text = discovery_config(emu, tmp_path, refresh="10m",
                                overrides=[{"match": "sonnet-*", "interval": "3s"}])
        (tmp_path / "checks.yaml").write_text(text)
        ok = await daemon.reload()
        intervals = {t.deployment: t.settings.interval for t in daemon.fleet.targets}
        await until(lambda: emu.state.arm.calls > reads, timeout=10)  # new settings: ARM is read again
        daemon.request_stop()
        await task
    assert ok and intervals == {"haiku-a": 1.0, "sonnet-a": 3.0, "haiku-b": 1.0}


def test_the_arm_admin_api_changes_deployments_models_and_faults_over_http(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        admin = f"{emu.plain.root}/_emulator/arm"  # type: ignore[attr-defined]
        with httpx.Client() as http:
            put = http.put(f"{admin}/subscriptions/{SUB_A}/accounts/team-a/deployments/haiku-a",
                           json={"capacity": 5, "state": "Paused"})
            bad = http.put(f"{admin}/subscriptions/{SUB_A}/accounts/nope/deployments/x", json={})
            model = http.put(f"{admin}/models/eastus2/claude-haiku-4-5/20251001",
                             json={"retirement": "2027-01-02"})
            fault = http.put(f"{admin}/fault", json={"status": 429, "retry_after": 2})
            cleared = http.delete(f"{admin}/fault")
            gone = http.delete(f"{admin}/subscriptions/{SUB_B}/accounts/team-b/deployments/haiku-b")
        arm = emu.state.current().arm
    assert put.status_code == 200 and put.json()["capacity"] == 5 and put.json()["version"] == "20251001"
    assert bad.status_code == 404
    assert model.json()["retirement"] == "2027-01-02" and model.json()["lifecycle"] == "GenerallyAvailable"
    assert fault.json() == {"status": 429, "retry_after": 2.0} and cleared.status_code == 204
    assert gone.status_code == 204 and emu.state.deployment("haiku-b") is None
    team_a = arm.subscriptions[0].accounts[0]
    assert next(d for d in team_a.deployments if d.name == "haiku-a").state == "Paused"
