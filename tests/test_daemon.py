"""The daemon against the emulator, in-process: stagger, concurrency cap, hangs, 429 back-off."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.canary.results import FailureKind
from monitor.daemon.health import State
from monitor.emulator.runner import EmulatorServer

from .daemon_helpers import config_text, make_daemon, until
from .factories import result


def scenario(names: list[str], **per: Any) -> dict[str, Any]:
    return {"api_key": "emu-test-key", "deployments": [
        {"name": n, "model": "claude-haiku-4-5-20251001", **per.get(n, {"latency": {"base": "5ms"}})}
        for n in names]}


def overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    cur = peak = 0
    for _, step in edges:
        cur += step
        peak = max(peak, cur)
    return peak


@pytest.mark.timeout(60)
async def test_fifty_deployments_start_spread_across_the_interval_under_the_concurrency_cap(
        tmp_path: Path) -> None:
    names = [f"dep-{i:02d}" for i in range(60)]
    slow = {n: {"latency": {"base": "150ms"}} for n in names}
    with EmulatorServer(scenario=scenario(names, **slow)) as emu:
        daemon = make_daemon(tmp_path, config_text(emu.base_url, emu.api_key, names, tmp_path / "data",
                                                   defaults={"interval": "3s", "timeout": "2s"}),
                             max_concurrency=3)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: len({e["deployment"] for e in emu.log()}) == len(names), timeout=15)
        daemon.request_stop()
        await task
        log = emu.log()
    first: dict[str, float] = {}
    for e in log:
        first.setdefault(e["deployment"], e["t_arrival"])
    offsets = sorted(t - min(first.values()) for t in first.values())
    # spread: the first round covers most of the interval, never a herd at one instant
    assert offsets[-1] > 3.0 * 0.7
    assert max(sum(1 for o in offsets if a <= o < a + 0.2) for a in offsets) <= 8
    assert overlap([(e["t_arrival"], e["t_last_byte"]) for e in log]) <= 3


@pytest.mark.timeout(60)
async def test_a_hanging_deployment_does_not_delay_the_others(tmp_path: Path) -> None:
    names = ["hangs"] + [f"fine-{i}" for i in range(9)]
    per = {"hangs": {"faults": [{"kind": "hang"}]}}
    with EmulatorServer(scenario=scenario(names, **per)) as emu:
        daemon = make_daemon(tmp_path, config_text(emu.base_url, emu.api_key, names, tmp_path / "data",
                                                   defaults={"interval": "1s", "timeout": "900ms"}),
                             max_concurrency=4)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: sum(1 for e in emu.log() if e["deployment"] == "fine-0") >= 4, timeout=20)
        daemon.request_stop()
        await task
    late = sorted(daemon.scheduler.lateness_s)
    assert late and late[int(0.99 * (len(late) - 1))] < 0.1
    states = {d["deployment"]: d["state"] for d in daemon.status()["deployments"]}
    assert states["hangs"] in ("degraded", "down")
    assert all(states[n] == "healthy" for n in names[1:])
    kinds = {r["kind"] for r in daemon.store.query("SELECT kind FROM results WHERE deployment = 'hangs'")}
    assert kinds <= {"timeout", "cancelled"} and "timeout" in kinds


@pytest.mark.timeout(60)
async def test_a_429_storm_lowers_the_canary_rate_and_it_recovers_after(tmp_path: Path) -> None:
    storm = {"faults": [{"kind": "rate_limit", "retry_after": 1, "window": {"start": "0s", "end": "5s"}}]}
    with EmulatorServer(scenario=scenario(["quota", "steady"], quota=storm)) as emu:
        daemon = make_daemon(tmp_path, config_text(emu.base_url, emu.api_key, ["quota", "steady"],
                                                   tmp_path / "data", defaults={"interval": "500ms",
                                                                                "timeout": "400ms"}),
                             seed=7)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: any(e["deployment"] == "quota" and e["status"] == 200 for e in emu.log()),
                    timeout=40)
        daemon.request_stop()
        await task
        log = emu.log()
    t0 = emu.state.loaded_at  # the fault window counts from the scenario's load
    quota_in_storm = [e for e in log if e["deployment"] == "quota" and e["t_arrival"] - t0 < 5]
    steady_in_storm = [e for e in log if e["deployment"] == "steady" and e["t_arrival"] - t0 < 5]
    assert all(e["status"] == 429 for e in quota_in_storm)
    assert len(quota_in_storm) * 2 <= len(steady_in_storm)  # backed off to well under half the rate
    states = {d["deployment"]: d for d in daemon.status()["deployments"]}
    assert states["quota"]["last_result"]["kind"] == "ok"


@pytest.mark.timeout(60)
async def test_status_and_debug_show_state_and_ids_but_never_the_key(tmp_path: Path) -> None:
    with EmulatorServer(scenario=scenario(["good", "gone"])) as emu:
        names = ["good", "gone", "missing"]
        daemon = make_daemon(tmp_path, config_text(emu.base_url, emu.api_key, names, tmp_path / "data"))
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.ready(), timeout=15)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.port}") as client:
            status = (await client.get("/status")).text
            debug = (await client.get("/debug/missing")).text
            healthz = await client.get("/healthz")
            readyz = await client.get("/readyz")
            metrics = await client.get("/metrics")
            unknown = await client.get("/debug/nope")
        daemon.request_stop()
        await task
    assert emu.api_key not in status and emu.api_key not in debug
    assert healthz.status_code == 200 and readyz.status_code == 200 and metrics.status_code == 200
    assert unknown.status_code == 404
    assert '"deployment_not_found"' in debug and "apim_request_id" in debug
    assert json.loads(debug)["config"]["interval"] == 1.0


@pytest.mark.timeout(60)
async def test_health_state_and_open_incidents_survive_a_restart(tmp_path: Path) -> None:
    down = {"faults": [{"kind": "api_error"}]}
    with EmulatorServer(scenario=scenario(["broken"], broken=down)) as emu:
        text = config_text(emu.base_url, emu.api_key, ["broken"], tmp_path / "data")
        daemon = make_daemon(tmp_path, text)
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.health.open_incidents() != [], timeout=15)
        daemon.request_stop()
        await task
        daemon.store.close()
        again = make_daemon(tmp_path, text)
    assert [i.state.value for i in again.health.open_incidents()] == ["down"]
    assert again.store.query("SELECT count(*) FROM incidents WHERE ended_at IS NULL")[0][0] == 1
    again.store.close()


async def test_state_changes_are_kept_in_the_store_for_reports(tmp_path: Path) -> None:
    names = ["fine", "broken"]
    per = {"fine": {"latency": {"base": "5ms"}}, "broken": {"faults": [{"kind": "api_error"}]}}
    with EmulatorServer(scenario=scenario(names, **per)) as emu:
        daemon = make_daemon(tmp_path, config_text(emu.base_url, emu.api_key, names, tmp_path / "data"))
        task = asyncio.create_task(daemon.run(install_signals=False))
        await until(lambda: daemon.status()["open_incidents"] != [], timeout=20)
        daemon.request_stop()
        await task
    rows = {(r["deployment"], r["from_state"], r["to_state"]): r for r in daemon.store.query(
        "SELECT deployment, from_state, to_state, kind, request_id FROM transitions")}
    assert ("fine", "unknown", "healthy") in rows
    down = next(r for k, r in rows.items() if k[0] == "broken" and k[2] == "down")
    assert down["kind"] == "server_error" and down["request_id"]


@pytest.mark.timeout(30)
async def test_the_first_deployment_is_probed_at_start_not_after_a_whole_interval(tmp_path: Path) -> None:
    names = ["first", "second"]
    with EmulatorServer(scenario=scenario(names)) as emu:
        daemon = make_daemon(tmp_path, config_text(emu.base_url, emu.api_key, names, tmp_path / "data",
                                                   defaults={"interval": "1h"}))
        task = asyncio.create_task(daemon.run(install_signals=False))
        try:
            # the stagger puts "second" half an hour later; "first" runs as soon as the daemon starts
            await until(lambda: [e["deployment"] for e in emu.log()] == ["first"], timeout=10)
            next_run = daemon.scheduler.next_run(("emu", "second"))
        finally:
            daemon.request_stop()
            await task
    assert next_run is not None and (next_run - daemon.started_at).total_seconds() > 1700


@pytest.mark.timeout(30)
async def test_a_deployment_backing_off_after_a_429_stays_throttled_not_silent(tmp_path: Path) -> None:
    limited = {"faults": [{"kind": "rate_limit", "retry_after": 30}]}
    key = ("emu", "limited")
    with EmulatorServer(scenario=scenario(["limited"], limited=limited)) as emu:
        daemon = make_daemon(tmp_path, config_text(emu.base_url, emu.api_key, ["limited"], tmp_path / "data"))
        task = asyncio.create_task(daemon.run(install_signals=False))
        try:
            await until(lambda: key in daemon.health.states()
                        and daemon.health.states()[key].state is State.THROTTLED, timeout=10)
            # 20 s without a result: past 3 intervals + timeout (1 s, 800 ms), within the 30 s back-off
            silent = daemon.health.check_silence(datetime.now(UTC) + timedelta(seconds=20))
            much_later = daemon.health.check_silence(datetime.now(UTC) + timedelta(seconds=200))
        finally:
            daemon.request_stop()
            await task
    assert silent == []
    assert [t.new for t in much_later] == [State.UNKNOWN]  # a back-off is not a licence to fall silent


@pytest.mark.parametrize(("setting", "deployments", "ok_lines"), [
    (None, 50, True), (None, 51, False), ("all", 51, True), ("failures", 2, False)])
def test_ok_canaries_get_a_log_line_while_the_fleet_is_small_failed_ones_always(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, setting: str | None, deployments: int,
        ok_lines: bool) -> None:
    names = [f"dep-{i:02d}" for i in range(deployments)]
    text = config_text("http://127.0.0.1:9/anthropic/", "k", names, tmp_path / "data")
    daemon = make_daemon(tmp_path, (f"log_canaries: {setting}\n" if setting else "") + text)
    try:
        with caplog.at_level("INFO", logger="monitor.daemon"):
            daemon.record(result(resource="emu", deployment="dep-00"))
            daemon.record(result(FailureKind.SERVER_ERROR, resource="emu", deployment="dep-01"))
    finally:
        daemon.store.close()
    lines = [(r.levelname, r.fields["deployment"]) for r in caplog.records  # type: ignore[attr-defined]
             if r.getMessage() == "canary"]
    assert lines == ([("INFO", "dep-00")] if ok_lines else []) + [("WARNING", "dep-01")]
