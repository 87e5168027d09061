"""What the daemon's HTTP port exposes: loopback by default, a warning when it is not and has no token,
/debug switchable off, the bearer token guarding /, /status and /debug (never the probes' endpoints),
and nothing of the emulator's admin API.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from monitor import config as config_mod
from monitor.daemon.service import Daemon
from monitor.emulator.runner import EmulatorServer
from tests.daemon_helpers import config_text, make_daemon, started
from tests.test_daemon import scenario

TOKEN = "tok-RELIABILITY-5f2c9a0e-DO-NOT-PRINT"
DEPLOYMENT = "exposed"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [getattr(r, "fields", {}) | {"level": r.levelno, "message": r.getMessage()}
                for r in self.records if getattr(r, "fields", {}).get("event") == name]


@asynccontextmanager
async def running(tmp_path: Path, server: str = "{port: 0}",
                  **opts: Any) -> AsyncIterator[tuple[Daemon, EmulatorServer, Records]]:
    """A daemon (in-process) with the given `server:` section, probing one emulator deployment."""
    logger = logging.getLogger("monitor.daemon")
    records, level = Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        with EmulatorServer(scenario=scenario([DEPLOYMENT])) as emu:
            text = config_text(emu.base_url, emu.api_key, [DEPLOYMENT], tmp_path / "data",
                               defaults={"interval": "200ms", "timeout": "150ms"})
            assert "server: {port: 0}\n" in text
            daemon = make_daemon(tmp_path, text.replace("server: {port: 0}\n", f"server: {server}\n"), **opts)
            async with started(daemon):
                yield daemon, emu, records
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


def listening_on(port: int) -> set[str]:
    """The addresses this process listens on at ``port`` (the kernel's view, not the config's)."""
    return {c.laddr.ip for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


async def get(port: int, path: str, method: str = "GET", **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        return await client.request(method, path, **kw)


def test_the_documented_default_host_is_loopback() -> None:
    assert config_mod.Server().host == "127.0.0.1"


async def test_by_default_the_server_listens_on_loopback_only_and_warns_about_nothing(tmp_path: Path) -> None:
    async with running(tmp_path) as (daemon, _, records):
        assert daemon.port
        assert listening_on(daemon.port) == {"127.0.0.1"}
        # 127.0.0.2 is this machine too (all of 127/8 is loopback), but not the bound address
        assert accepts("127.0.0.1", daemon.port) and not accepts("127.0.0.2", daemon.port)
    assert records.events("exposure") == []


@pytest.mark.parametrize("how", ["config", "option"])
async def test_listening_on_all_interfaces_without_a_token_logs_a_warning(tmp_path: Path, how: str) -> None:
    server, opts = ("{port: 0, host: 0.0.0.0}", {}) if how == "config" else ("{port: 0}", {"host": "0.0.0.0"})
    async with running(tmp_path, server, **opts) as (daemon, _, records):
        assert daemon.port
        assert listening_on(daemon.port) == {"0.0.0.0"}
        assert accepts("127.0.0.2", daemon.port)
    (warning,) = records.events("exposure")
    assert warning["level"] == logging.WARNING and warning["host"] == "0.0.0.0"
    assert "server.bearer_token" in warning["message"]


async def test_listening_on_all_interfaces_with_a_token_does_not_warn(tmp_path: Path) -> None:
    server = f"{{port: 0, host: 0.0.0.0, bearer_token: {TOKEN}}}"
    async with running(tmp_path, server) as (daemon, _, records):
        assert daemon.port and listening_on(daemon.port) == {"0.0.0.0"}
    assert records.events("exposure") == []
    assert all(TOKEN not in r.getMessage() and TOKEN not in str(getattr(r, "fields", ""))
               for r in records.records)


@pytest.mark.parametrize(("debug_endpoints", "expected"), [(False, 404), (True, 200)])
async def test_debug_endpoints_false_makes_debug_404(tmp_path: Path, debug_endpoints: bool,
                                                     expected: int) -> None:
    server = f"{{port: 0, debug_endpoints: {str(debug_endpoints).lower()}}}"
    async with running(tmp_path, server) as (daemon, _, _):
        assert daemon.port
        by_name = await get(daemon.port, f"/debug/{DEPLOYMENT}")
        by_key = await get(daemon.port, f"/debug/emu/{DEPLOYMENT}")
        status = await get(daemon.port, "/status")
    assert (by_name.status_code, by_key.status_code) == (expected, expected)
    assert status.status_code == 200
    if expected == 404:
        assert DEPLOYMENT not in by_name.text and "config" not in by_name.text


GUARDED = ["/", "/status", f"/debug/{DEPLOYMENT}"]
OPEN = ["/healthz", "/readyz", "/metrics"]


async def test_the_bearer_token_guards_the_pages_and_not_the_probes(tmp_path: Path) -> None:
    async with running(tmp_path, f"{{port: 0, bearer_token: {TOKEN}}}") as (daemon, _, _):
        assert daemon.port
        port = daemon.port
        without = {p: await get(port, p) for p in GUARDED + OPEN}
        wrong = {p: await get(port, p, headers={"authorization": f"Bearer {TOKEN}x"}) for p in GUARDED}
        basic = {p: await get(port, p, headers={"authorization": TOKEN}) for p in GUARDED}
        right = {p: await get(port, p, headers={"authorization": f"Bearer {TOKEN}"}) for p in GUARDED}
        lower = await get(port, "/status", headers={"authorization": f"bearer {TOKEN}"})
        no_scheme = await get(port, "/status", headers={"authorization": f"Token {TOKEN}"})
    assert lower.status_code == 200 and no_scheme.status_code == 401  # the scheme is case-insensitive
    for path in GUARDED:
        assert without[path].status_code == 401, path
        assert without[path].headers["www-authenticate"] == "Bearer"
        assert wrong[path].status_code == 401 and basic[path].status_code == 401, path
        assert right[path].status_code == 200, path
    for path in OPEN:
        assert without[path].status_code == 200, path
    assert right["/status"].json()["deployments"][0]["deployment"] == DEPLOYMENT
    assert right[f"/debug/{DEPLOYMENT}"].json()["deployment"] == DEPLOYMENT
    everything = [*without.values(), *wrong.values(), *basic.values(), *right.values()]
    assert all(TOKEN not in r.text for r in everything)


ADMIN = [("GET", "/_emulator/scenario"), ("PUT", "/_emulator/scenario"), ("GET", "/_emulator/log"),
         ("DELETE", "/_emulator/log"), ("PUT", f"/_emulator/deployments/{DEPLOYMENT}/faults"),
         ("DELETE", f"/_emulator/deployments/{DEPLOYMENT}"), ("GET", "/_emulator/identity/token"),
         ("POST", "/_emulator/identity/expire"), ("POST", "/anthropic/v1/messages")]


@pytest.mark.parametrize("server", ["{port: 0}", f"{{port: 0, bearer_token: {TOKEN}}}"],
                         ids=["open", "with-token"])
async def test_the_emulator_admin_api_is_not_reachable_through_the_daemon_port(tmp_path: Path,
                                                                               server: str) -> None:
    hang = [{"kind": "hang"}]
    async with running(tmp_path, server) as (daemon, emu, _):
        assert daemon.port
        auth = {"authorization": f"Bearer {TOKEN}"}
        through_daemon = [await get(daemon.port, path, method, headers=auth,
                                    json=hang if "faults" in path else {}) for method, path in ADMIN]
        scenario_after = (await get(emu.port, "/_emulator/scenario")).json()
        direct = await get(emu.port, "/_emulator/log")  # the same path on the emulator's own port
    assert [r.status_code for r in through_daemon] == [404] * len(ADMIN)
    assert all(r.text == "not found\n" for r in through_daemon)
    assert direct.status_code == 200 and direct.json()  # the admin API is real, on its own port only
    (dep,) = scenario_after["deployments"]
    assert dep["name"] == DEPLOYMENT and dep["faults"] == []  # nothing reached the emulator's admin API
