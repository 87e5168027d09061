"""Azure's own view: the real azure-mgmt-monitor client against the emulator's ARM metrics API over TLS
(trustme CA), with a managed-identity token from the emulator's identity endpoint."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.azure.metrics import MetricsReader, ResourceMetrics
from monitor.emulator.runner import EmulatorServer

from .certs import Certs, make_certs
from .test_telemetry_process import IDENTITY_VARS

SCENARIO: dict[str, Any] = {
    "seed": 7,
    "deployments": [
        {"name": "haiku", "model": "claude-haiku-4-5-20251001",
         "background": {"per_minute": 6, "errors": {429: 0.1, 400: 0.05, 503: 0.05},
                        "input_tokens": 700, "output_tokens": 90, "cache_read_tokens": 300}},
        {"name": "sonnet", "model": "claude-sonnet-4-5-20250929",
         "background": {"per_minute": 2, "errors": {500: 0.2}}},
    ],
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def emu(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(SCENARIO, tls=certs.server) as server:
        for var in IDENTITY_VARS:
            monkeypatch.delenv(var, raising=False)
        for k, v in server.identity_env().items():
            monkeypatch.setenv(k, v)
        yield server


def reader(emu: EmulatorServer, certs: Certs, waits: list[float] | None = None) -> MetricsReader:
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential(connection_verify=certs.ca)
    return MetricsReader(credential, endpoint=emu.root, connection_verify=certs.ca,
                         sleep=(waits.append if waits is not None else lambda s: None))


def read(emu: EmulatorServer, certs: Certs, start: datetime, end: datetime,
         waits: list[float] | None = None, resource_id: str | None = None) -> ResourceMetrics:
    r = reader(emu, certs, waits)
    try:
        return r.read(resource_id or emu.azure_resource_id(), start, end)
    finally:
        r.close()
        r.credential.close()


def window() -> tuple[datetime, datetime]:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return end - timedelta(hours=6), end


def test_the_sdk_reads_per_deployment_metrics_equal_to_the_emulators_log(emu: EmulatorServer,
                                                                         certs: Certs) -> None:
    start, end = window()
    assert emu.background(start.timestamp(), end.timestamp()) > 2000
    got = read(emu, certs, start, end)
    assert got.note is None and got.missing == ()
    truth = [e for e in emu.log() if start.timestamp() <= e["t_arrival"] < end.timestamp()]
    by_status = Counter((e["deployment"], str(e["status"])) for e in truth)
    read_status: Counter[tuple[str, str]] = Counter()
    for p in got.points:
        if p.metric == "ModelRequests":
            read_status[(p.deployment, p.status or "")] += int(p.value)
    assert read_status == by_status
    tokens = {m: sum(p.value for p in got.points if p.metric == m and p.deployment == "haiku")
              for m in ("InputTokens", "OutputTokens", "cacheReadInputTokens")}
    assert tokens == {
        "InputTokens": sum(e["input_tokens"] or 0 for e in truth if e["deployment"] == "haiku"),
        "OutputTokens": sum(e["output_tokens"] or 0 for e in truth if e["deployment"] == "haiku"),
        "cacheReadInputTokens": sum(e["cache_read_tokens"] or 0 for e in truth if e["deployment"] == "haiku")}
    hours = {p.at for p in got.points}
    assert len(hours) == 6 and min(hours) == start.timestamp()
    avail = [p for p in got.points if p.metric == "ModelAvailabilityRate" and p.deployment == "sonnet"]
    served = sum(p.count or 0 for p in avail)
    up = sum(p.value * (p.count or 0) for p in avail) / served / 100
    ok = sum(1 for e in truth if e["deployment"] == "sonnet" and e["status"] < 500)
    assert served == sum(1 for e in truth if e["deployment"] == "sonnet")
    assert up == pytest.approx(ok / served)


def test_the_metrics_api_wants_an_arm_token(emu: EmulatorServer, certs: Certs) -> None:
    ctx = ssl.create_default_context(cafile=certs.ca)
    url = emu.root + emu.azure_resource_id() + "/providers/Microsoft.Insights/metrics?api-version=2024-02-01"

    def status(headers: dict[str, str]) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=ctx):  # noqa: S310
                return 200
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code

    foundry_token, _ = emu.state.issue_token("https://cognitiveservices.azure.com/.default")
    arm_token, _ = emu.state.issue_token("https://management.azure.com/.default")
    assert status({"authorization": f"Bearer {arm_token}"}) == 200
    assert status({}) == 401
    assert status({"authorization": f"Bearer {foundry_token}"}) == 401  # a Foundry token is not for ARM


def test_throttling_is_waited_out_after_retry_after(emu: EmulatorServer, certs: Certs) -> None:
    emu.set_azure(throttle=2, retry_after=7)
    waits: list[float] = []
    start, end = window()
    got = read(emu, certs, start, end, waits)
    assert waits == [7.0, 7.0] and got.note is None


def test_throttling_that_does_not_end_is_one_clear_note(emu: EmulatorServer, certs: Certs) -> None:
    emu.set_azure(throttle=100, retry_after=5)
    waits: list[float] = []
    start, end = window()
    got = read(emu, certs, start, end, waits)
    assert got.note is not None and got.note.count("throttled") == 1
    assert "429" in got.note and "run the report again" in got.note
    assert len(waits) == 3 and not got.read and got.points == ()


def test_a_resource_without_the_role_is_one_clear_note(emu: EmulatorServer, certs: Certs) -> None:
    emu.set_azure(forbidden=True)
    start, end = window()
    got = read(emu, certs, start, end)
    assert got.note == (f"Azure refused the platform metrics of emulator (403): give the monitor's identity "
                        f"the Monitoring Reader role on {emu.azure_resource_id()} (or its resource group).")
    assert not got.read


def test_a_wrong_resource_id_is_one_clear_note(emu: EmulatorServer, certs: Certs) -> None:
    start, end = window()
    wrong = emu.azure_resource_id().replace("accounts/emulator", "accounts/no-such-foundry")
    got = read(emu, certs, start, end, resource_id=wrong)
    assert got.note is not None
    assert got.note.startswith(f"Azure has no resource {wrong} (404 ResourceNotFound)")
    assert "azure_resource_id" in got.note and not got.read


def test_an_unreachable_arm_is_one_clear_note(certs: Certs, tmp_path: Path) -> None:
    from azure.core.credentials import AccessToken

    class Fixed:
        def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
            return AccessToken("t", int(datetime.now(UTC).timestamp()) + 3600)

    from .loopback import free_port

    r = MetricsReader(Fixed(), endpoint=f"https://127.0.0.1:{free_port()}", connection_verify=certs.ca)
    start, end = window()
    got = r.read("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
                 "Microsoft.CognitiveServices/accounts/x", start, end)
    assert got.note is not None and got.note.startswith("Cannot reach Azure Resource Manager")


def _http(emu: EmulatorServer, certs: Certs, method: str, path: str, body: Any = None,
          token: str | None = None) -> tuple[int, Any]:
    import json

    ctx = ssl.create_default_context(cafile=certs.ca)
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(emu.root + path, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, context=ctx) as resp:  # noqa: S310 - https to the loopback emulator
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


def test_the_admin_hooks_log_a_compressed_period_and_change_the_metrics_api(emu: EmulatorServer,
                                                                             certs: Certs) -> None:
    start, end = window()
    status, body = _http(emu, certs, "POST", "/_emulator/background",
                         {"start": start.timestamp(), "end": end.timestamp()})
    assert status == 200 and body["added"] == 6 * 60 * (6 + 2)  # two deployments, 6 and 2 a minute
    again = _http(emu, certs, "POST", "/_emulator/background",
                  {"start": start.timestamp(), "end": end.timestamp()})
    assert again == (200, {"added": 0})  # the same window twice is logged once
    assert _http(emu, certs, "PUT", "/_emulator/azure", {"forbiden": True})[0] == 400
    assert _http(emu, certs, "PUT", "/_emulator/azure", {"throttle": 1})[1]["throttle"] == 1


@pytest.mark.parametrize(("query", "message"), [
    ("metricnames=NoSuchMetric", "Failed to find metric configuration"),
    ("metricnames=InputTokens&$filter=StatusCode eq '*'", "does not support requested dimension"),
    ("metricnames=ModelRequests&interval=PT1Q", "Invalid interval"),
])
def test_the_metrics_api_refuses_what_azure_refuses(emu: EmulatorServer, certs: Certs, query: str,
                                                    message: str) -> None:
    token, _ = emu.state.issue_token("https://management.azure.com/.default")
    path = (emu.azure_resource_id() + "/providers/Microsoft.Insights/metrics?api-version=2024-02-01&"
            + query.replace(" ", "%20").replace("'", "%27").replace("*", "%2A").replace("$", "%24"))
    status, body = _http(emu, certs, "GET", path, token=token)
    assert status == 400 and message in body["error"]["message"]
