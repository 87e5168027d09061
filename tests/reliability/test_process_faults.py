"""The daemon as a real process under faults: SIGKILL in the middle of heavy writes (the store stays whole,
a restart restores health, incidents and the weekly email's exactly-once state), SIGTERM with hundreds
of canaries in flight (every request the emulator saw start is stored), and what a crash loses."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor import config as config_mod
from monitor.emulator.runner import EmulatorServer
from monitor.emulator.state import LogEntry
from monitor.errors import StoreError
from monitor.notify.weekly import JOB, due
from monitor.store.sqlite import Store
from tests.certs import Certs, make_certs
from tests.daemon_helpers import config_text, monitor_process
from tests.loopback import free_port
from tests.test_daemon_process import get, ready, wait_for
from tests.test_telemetry_process import IDENTITY_VARS
from tests.test_weekly import PASSWORD, USER, smtp_server

# --- helpers ---------------------------------------------------------------------------------------------


@contextmanager
def daemon(config: Path, port: int, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`foundry-monitor run` with its JSON log in a file (a pipe nobody reads would block a busy daemon)."""
    env = {k: v for k, v in os.environ.items() if k not in IDENTITY_VARS}
    args = ["run", "--config", str(config), "--port", str(port), "--log-format", "json", *extra]
    with log.open("ab") as out, monitor_process(args, stdout=out, env=env) as proc:
        yield proc


@contextmanager
def sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        yield conn


def scalar(path: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with sqlite(path) as conn:
        row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def polled(path: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """`scalar` while the daemon may still be creating the store: None until the file and tables exist."""
    if not path.exists():
        return None
    try:
        return scalar(path, sql, params)
    except sqlite3.OperationalError:  # no such table yet (the migration runs after the file appears)
        return None


def state_row(path: Path, name: str) -> tuple[dict[str, Any], float] | None:
    with sqlite(path) as conn:
        row = conn.execute("SELECT value, updated_at FROM state WHERE name = ?", (name,)).fetchone()
    return None if row is None else (json.loads(row["value"]), row["updated_at"])


def polled_state(path: Path, name: str) -> tuple[dict[str, Any], float] | None:
    try:
        return state_row(path, name) if path.exists() else None
    except sqlite3.OperationalError:
        return None


def snapshot_incident(path: Path, deployment: str) -> dict[str, Any] | None:
    found = polled_state(path, "health")
    if found is None:
        return None
    entry = next((d for d in found[0]["deployments"] if d["deployment"] == deployment), None)
    return None if entry is None else entry.get("incident")


def first_status(proc: subprocess.Popen[bytes], port: int, timeout: float = 20.0) -> dict[str, Any]:
    """The first /status the daemon answers: polled tightly from the moment the process starts."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = get(port, "/status")
        if status is not None:
            return dict(status)
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}"
        time.sleep(0.02)
    raise AssertionError(f"no /status within {timeout}s")


def when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def integrity(path: Path) -> str:
    return str(scalar(path, "PRAGMA integrity_check"))


def weekly_section(smtp_port: int, certs: Certs, at: datetime) -> str:
    """A daily schedule whose last occurrence was a few minutes before `at`: a send is due (grace 24 h)."""
    last = at - timedelta(minutes=3)
    return ("reports:\n  timezone: UTC\n"
            f"  weekly: {{enabled: true, schedule: '{last.minute} {last.hour} * * *', "
            "recipients: [team@example.com]}\n"
            f"email:\n  sender: {USER}\n"
            f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, security: starttls, username: {USER}, "
            f"password: {PASSWORD}, ca_file: {certs.ca}, timeout: 10s}}\n")


class Tally:
    """Every request the emulator began and finished (its log holds finished ones only)."""

    def __init__(self, emu: EmulatorServer) -> None:
        self.started: list[LogEntry] = []
        self.finished = 0
        begin, finish = emu.state.begin, emu.state.finish

        def counting_begin(method: str, path: str) -> LogEntry:
            entry = begin(method, path)
            self.started.append(entry)
            return entry

        def counting_finish(entry: LogEntry) -> None:
            finish(entry)
            self.finished += 1

        emu.state.begin = counting_begin  # type: ignore[method-assign]
        emu.state.finish = counting_finish  # type: ignore[method-assign]

    @property
    def in_flight(self) -> int:
        return len(self.started) - self.finished


def scenario(healthy: list[str], latency: dict[str, str], extra: list[dict[str, Any]] | None = None
             ) -> dict[str, Any]:
    deps = [{"name": n, "model": "claude-haiku-4-5-20251001", "latency": latency} for n in healthy]
    return {"api_key": "emu-reliability-key", "deployments": deps + (extra or [])}


# --- SIGKILL in the middle of heavy writes ------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_sigkill_during_heavy_writes_then_restart_restores_state_and_does_not_resend(tmp_path: Path) -> None:
    names = [f"dep-{i:03d}" for i in range(200)]
    down = {"name": "down-0", "model": "claude-haiku-4-5-20251001", "faults": [{"kind": "api_error"}]}
    certs = make_certs(tmp_path)
    store = tmp_path / "data" / "results.sqlite3"
    log1, log2 = tmp_path / "daemon-1.log", tmp_path / "daemon-2.log"
    with EmulatorServer(scenario=scenario(names, {"base": "5ms"}, [down])) as emu, \
            smtp_server(certs) as (inbox, smtp_port):
        cfg = tmp_path / "checks.yaml"
        cfg.write_text(config_text(emu.base_url, emu.api_key, [*names, "down-0"], tmp_path / "data")
                       + weekly_section(smtp_port, certs, datetime.now(UTC)))
        send = due(config_mod.load(cfg), datetime.now(UTC))
        assert send is not None  # the schedule makes a send due now, so only the store can stop a resend
        port = free_port()
        with daemon(cfg, port, log1) as proc:
            wait_for(lambda: (polled(store, "SELECT count(*) FROM results") or 0) > 2000, 30)
            wait_for(lambda: polled(store, "SELECT count(*) FROM incidents WHERE deployment = 'down-0' "
                                           "AND ended_at IS NULL") == 1, 20)
            wait_for(lambda: (polled_state(store, JOB) or ({}, 0))[0].get("status") == "sent", 60)
            assert len(inbox.messages) == 1  # the first run sent this period's email
            wait_for(lambda: snapshot_incident(store, "down-0") is not None, 40)
            # mid-write: results are still arriving when the process is killed
            before = scalar(store, "SELECT count(*) FROM results")
            wait_for(lambda: scalar(store, "SELECT count(*) FROM results") > before + 50, 10)
            written = scalar(store, "SELECT count(*) FROM results")
            proc.send_signal(signal.SIGKILL)
            killed_at = datetime.now(UTC)
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL

        # the store is whole: every committed batch is there, with its rollups (same transaction)
        assert integrity(store) == "ok"
        assert scalar(store, "SELECT count(*) FROM results") >= written
        counted = scalar(store, "SELECT count(*) FROM results WHERE attempt = 0 AND kind != 'cancelled'")
        assert scalar(store, "SELECT sum(canaries) FROM rollup_hour") == counted
        Store.open(store).close()
        snapshot = state_row(store, "health")
        assert snapshot is not None
        saved = {d["deployment"]: d for d in snapshot[0]["deployments"]}
        weekly_before = state_row(store, JOB)
        assert weekly_before is not None and weekly_before[0]["period"] == send.period

        port = free_port()
        with daemon(cfg, port, log2) as proc:
            status = first_status(proc, port)
            incidents = [i for i in status["open_incidents"] if i["deployment"] == "down-0"]
            assert len(incidents) == 1 and incidents[0]["state"] == "down"
            assert when(incidents[0]["started_at"]) < killed_at
            assert incidents[0]["started_at"] == saved["down-0"]["incident"]["started_at"]
            states = {d["deployment"]: d for d in status["deployments"]}
            assert states["down-0"]["state"] == "down" and when(states["down-0"]["since"]) < killed_at
            assert {n: states[n]["state"] for n in names} == {n: saved[n]["state"] for n in names}
            assert all(states[n]["since"] == saved[n]["since"] for n in names)
            assert all(when(states[n]["since"]) < killed_at for n in names)
            wait_for(lambda: ready(port), 30)  # the first loop pass, weekly check included, has run
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        assert proc.returncode == 0
    assert len(inbox.messages) == 1  # nothing sent after the restart
    assert state_row(store, JOB) == weekly_before  # not even claimed again
    assert '"event": "weekly_email"' not in log2.read_text()
    assert scalar(store, "SELECT count(*) FROM incidents WHERE deployment = 'down-0' "
                         "AND ended_at IS NULL") == 1
    assert integrity(store) == "ok"


# --- SIGTERM with hundreds of canaries in flight ---------------------------------------------------------


@dataclass
class Stopped:
    """One SIGTERM run: what the emulator saw start, what was stored, how the process ended."""

    seen: list[LogEntry]
    in_flight: int
    returncode: int
    took: float
    log: str
    store: Path

    def rows(self) -> list[sqlite3.Row]:
        with sqlite(self.store) as conn:
            return conn.execute("SELECT deployment, kind, request_id, status FROM results").fetchall()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.splitlines()
                if line.startswith("{") and f'"event": "{name}"' in line]


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory: pytest.TempPathFactory) -> Stopped:
    """500 slow deployments (4.3-4.7 s answers, 5 s interval and timeout: ~450 in flight at any moment)
    and 20 that hang (12 s timeout: those started < 2 s before SIGTERM outlive the 10 s stop grace and
    are cancelled); SIGTERM once at least 425 requests are in flight at the emulator."""
    tmp = tmp_path_factory.mktemp("sigterm")
    slow = [f"slow-{i:03d}" for i in range(500)]
    hanging = [f"hang-{i:02d}" for i in range(20)]
    extra = [{"name": n, "model": "claude-haiku-4-5-20251001", "faults": [{"kind": "hang"}]} for n in hanging]
    with EmulatorServer(scenario=scenario(slow, {"base": "4300ms", "jitter": "400ms"}, extra)) as emu:
        tally = Tally(emu)
        # ten resources of 50: httpx keeps at most 64 connections per resource (see the pool test below)
        resources = ""
        for r in range(10):
            deps = "\n".join(f"      - {{name: {n}, model: claude-haiku-4-5}}"
                             for n in slow[r * 50:(r + 1) * 50])
            resources += (f"  - name: emu-{r}\n    base_url: {emu.base_url}\n"
                          f"    auth: {{api_key: {emu.api_key}}}\n    deployments:\n{deps}\n")
        deps = "\n".join(f"      - {{name: {n}, model: claude-haiku-4-5, interval: 12s, timeout: 12s}}"
                         for n in hanging)
        resources += (f"  - name: emu-hang\n    base_url: {emu.base_url}\n"
                      f"    auth: {{api_key: {emu.api_key}}}\n    deployments:\n{deps}\n")
        cfg = tmp / "checks.yaml"
        # log_canaries: all, a line per result, which the tests below count against the store
        cfg.write_text(f"data_dir: {tmp / 'data'}\nlog_canaries: all\n"
                       f"defaults: {{interval: 5s, timeout: 5s, confirm: 0}}\nresources:\n{resources}")
        port, log = free_port(), tmp / "daemon.log"
        with daemon(cfg, port, log, "--max-concurrency", "600") as proc:
            wait_for(lambda: tally.in_flight >= 425, 40)
            in_flight = tally.in_flight
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            proc.wait(20)
            took = time.monotonic() - t0
        wait_for(lambda: tally.in_flight == 0, 10)  # every connection closed: the emulator logged them all
        return Stopped(list(tally.started), in_flight, proc.returncode, took, log.read_text(),
                       tmp / "data" / "results.sqlite3")


@pytest.mark.timeout(120)
def test_sigterm_with_500_canaries_in_flight_exits_0_within_15s_and_the_store_is_whole(
        sigterm_run: Stopped) -> None:
    run = sigterm_run
    assert run.in_flight >= 425
    assert run.returncode == 0 and run.took < 15, (run.returncode, run.took)
    assert len(run.events("stopped")) == 1
    assert integrity(run.store) == "ok"
    rows = run.rows()
    assert rows and all(r["kind"] for r in rows)
    assert {r["kind"] for r in rows} <= {"ok", "timeout", "cancelled"}
    answered = {e.request_id: e for e in run.seen if e.status is not None}
    for r in rows:  # nothing stored that did not happen, and what the emulator answered is what was stored
        if r["request_id"]:
            assert r["request_id"] in answered and answered[r["request_id"]].status == r["status"]
    # the daemon waited for the slow canaries in flight: the emulator finished every one of them
    slow = [e for e in run.seen if str(e.deployment).startswith("slow-")]
    assert len(slow) >= 0.9 * run.in_flight
    # those the stop budget cut short (on a loaded machine a few may be) are stored as cancelled
    cut = {e.deployment for e in slow if (e.outcome, e.status) != ("complete", 200) or e.t_last_byte is None}
    cancelled = {r["deployment"] for r in rows if r["kind"] == "cancelled"}
    assert cut <= cancelled, sorted(cut - cancelled)[:5]


@pytest.mark.timeout(120)
def test_sigterm_stores_and_counts_every_canary_the_emulator_saw_start(sigterm_run: Stopped) -> None:
    run = sigterm_run
    rows = run.rows()
    by_id = {r["request_id"]: r for r in rows if r["request_id"]}
    missing = [e.request_id for e in run.seen if e.status is not None and e.request_id not in by_id]
    # no response head (a hang): its result has no request id; one stored per request
    unanswered: dict[str, int] = {}
    for e in run.seen:
        if e.status is None:
            unanswered[str(e.deployment)] = unanswered.get(str(e.deployment), 0) + 1
    anonymous: dict[str, int] = {}
    for r in rows:
        if not r["request_id"]:
            anonymous[r["deployment"]] = anonymous.get(r["deployment"], 0) + 1
    lost = {d: n - anonymous.get(d, 0) for d, n in unanswered.items() if anonymous.get(d, 0) < n}
    recorded = len(run.events("canary"))  # one log line per recorded result
    written = run.events("stopped")[0]["results_written"]
    assert (missing, lost, len(rows), written) == ([], {}, recorded, recorded)
    assert len(rows) >= len(run.seen)


@pytest.mark.timeout(120)
def test_sigterm_keeps_the_json_log_json(sigterm_run: Stopped) -> None:
    assert len(sigterm_run.events("canary")) > 0
    assert any(json.loads(line).get("kind") == "cancelled" for line in sigterm_run.log.splitlines()
               if line.startswith("{") and '"event": "canary"' in line)
    bad = [line for line in sigterm_run.log.splitlines() if not line.startswith("{")]
    assert bad == [], bad[:5]


# --- what a crash may lose ----------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_the_health_snapshot_is_refreshed_every_15s_while_results_arrive(tmp_path: Path) -> None:
    names = ["one", "two", "three"]
    store = tmp_path / "data" / "results.sqlite3"
    with EmulatorServer(scenario=scenario(names, {"base": "5ms"})) as emu:
        cfg = tmp_path / "checks.yaml"
        cfg.write_text(config_text(emu.base_url, emu.api_key, names, tmp_path / "data"))
        port = free_port()
        with daemon(cfg, port, tmp_path / "daemon.log") as proc:
            wait_for(lambda: (found := polled_state(store, "health")) is not None
                     and {d["state"] for d in found[0]["deployments"]} == {"healthy"}, 20)
            first = state_row(store, "health")
            assert first is not None
            # README, Operations: "the health state and open incidents are saved every 15 s and at exit"
            refreshed = True
            try:
                wait_for(lambda: state_row(store, "health") != first, 20)
            except AssertionError:
                refreshed = False
            results = scalar(store, "SELECT count(*) FROM results WHERE started_at > ?", (first[1],))
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    assert results >= 3 * 10  # results kept arriving the whole time (3 deployments, 1 s interval, ~15 s)
    assert refreshed, "the health snapshot was not saved again within 20 s"


@pytest.mark.timeout(90)
def test_an_incident_opened_just_before_a_sigkill_is_closed_when_the_deployment_recovers(
        tmp_path: Path) -> None:
    flaky = {"name": "flaky", "model": "claude-haiku-4-5-20251001", "faults": [{"kind": "api_error"}]}
    store = tmp_path / "data" / "results.sqlite3"
    open_incidents = "SELECT count(*) FROM incidents WHERE deployment = 'flaky' AND ended_at IS NULL"
    with EmulatorServer(scenario=scenario(["steady"], {"base": "5ms"}, [flaky])) as emu:
        cfg = tmp_path / "checks.yaml"
        cfg.write_text(config_text(emu.base_url, emu.api_key, ["flaky", "steady"], tmp_path / "data",
                                   defaults={"failure_threshold": 3}))
        with daemon(cfg, free_port(), tmp_path / "daemon-1.log") as proc:
            wait_for(lambda: polled(store, open_incidents) == 1, 20)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        emu.set_faults("flaky", [])  # it recovers while the monitor is down
        port = free_port()
        with daemon(cfg, port, tmp_path / "daemon-2.log") as proc:
            wait_for(lambda: any(d["deployment"] == "flaky" and d["state"] == "healthy"
                                 for d in (get(port, "/status") or {}).get("deployments", [])), 20)
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        assert proc.returncode == 0
    assert scalar(store, "SELECT count(*) FROM incidents WHERE deployment = 'flaky'") >= 1
    assert scalar(store, open_incidents) == 0, "the incident stays open forever"


@pytest.mark.timeout(90)
def test_max_concurrency_above_64_on_one_resource_does_not_turn_queueing_into_timeouts(
        tmp_path: Path) -> None:
    names = [f"dep-{i:03d}" for i in range(200)]
    # 1.0-1.2 s answers every 2 s: ~110 in flight, every answer well within the 2 s timeout
    with EmulatorServer(scenario=scenario(names, {"base": "1000ms", "jitter": "200ms"})) as emu:
        tally = Tally(emu)
        peak = 0

        def enough() -> bool:
            nonlocal peak
            peak = max(peak, tally.in_flight)
            return len(tally.started) >= 600

        cfg = tmp_path / "checks.yaml"
        cfg.write_text(config_text(emu.base_url, emu.api_key, names, tmp_path / "data",
                                   defaults={"interval": "2s", "timeout": "2s"}))
        with daemon(cfg, free_port(), tmp_path / "daemon.log", "--max-concurrency", "600") as proc:
            wait_for(enough, 30)
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        slowest = max((e.t_last_byte or 0) - e.t_arrival for e in tally.started if e.status is not None)
    assert slowest < 1.6  # the emulator answered everything it saw in time
    with sqlite(tmp_path / "data" / "results.sqlite3") as conn:
        kinds = dict(conn.execute("SELECT kind, count(*) FROM results GROUP BY kind").fetchall())
    assert kinds.get("timeout", 0) == 0, (kinds, f"peak in flight at the emulator: {peak}")


@pytest.mark.timeout(60)
def test_processes_opening_a_new_store_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    """The daemon and `report` (or two replicas sharing a store) starting together on a fresh data_dir."""
    errors: list[str] = []
    for attempt in range(10):
        path = tmp_path / f"store-{attempt}" / "results.sqlite3"
        path.parent.mkdir()
        start = threading.Barrier(6)

        def open_it(target: Path = path, barrier: threading.Barrier = start) -> None:
            barrier.wait()
            try:
                Store.open(target).close()
            except StoreError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert integrity(path) == "ok"
    assert errors == [], errors[:3]
