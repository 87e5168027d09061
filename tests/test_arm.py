"""The control plane read with the real azure-mgmt-cognitiveservices client against the emulator's ARM
(https, trustme CA, tokens of the management audience from its managed-identity endpoint)."""

from __future__ import annotations

import ssl
from datetime import date
from pathlib import Path

import httpx
import pytest

from monitor.azure.arm import ArmError, ArmReader, Snapshot, arm_credential
from monitor.config import Discovery

from .arm_helpers import SUB_A, SUB_B, arm_emulator, discovery


async def read(discovery: Discovery) -> Snapshot:
    reader = ArmReader(discovery, arm_credential(discovery))
    try:
        return await reader.snapshot()
    finally:
        await reader.close()


async def test_the_real_sdk_lists_deployments_models_and_quota_across_two_subscriptions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        snap = await read(discovery(emu, tmp_path))
    by_name = {d.name: d for d in snap.deployments}
    assert set(by_name) == {"haiku-a", "sonnet-a", "gpt-a", "opus-lab", "haiku-b"}
    haiku = by_name["haiku-a"]
    assert (haiku.subscription, haiku.resource_group, haiku.account, haiku.location) == (
        SUB_A, "rg-a", "team-a", "eastus2")
    assert (haiku.model_format, haiku.model_name, haiku.model_version) == (
        "Anthropic", "claude-haiku-4-5", "20251001")
    assert (haiku.sku, haiku.capacity, haiku.current_capacity, haiku.state) == (
        "GlobalStandard", 50, 50, "Running")
    assert [(r.key, r.count) for r in haiku.rate_limits] == [("request", 50), ("token", 50_000)]
    assert haiku.subdomain == "team-a" and haiku.account_tags == {"env": "prod"}
    assert by_name["haiku-b"].subscription == SUB_B
    assert snap.retirement_of(by_name["sonnet-a"]) == date(2026, 12, 20)
    assert snap.lifecycle_of(by_name["sonnet-a"]) == "Deprecating"
    quota = snap.quota_of(by_name["haiku-b"])
    assert quota is not None and (quota.current, quota.limit) == (98, 100)
    assert snap.notes == ()


async def test_resource_groups_narrow_the_accounts_listed(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        snap = await read(discovery(emu, tmp_path, resource_groups=["rg-lab"]))
    assert [d.name for d in snap.deployments] == ["opus-lab"]


@pytest.mark.parametrize(("status", "reason", "words"), [
    (403, "forbidden", "Reader role"),
    (429, "throttled", "retry-after 0.1s"),
])
async def test_a_refused_or_throttled_read_is_one_error_that_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, reason: str, words: str) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        emu.arm_fault(status, retry_after=0.1)
        with pytest.raises(ArmError) as caught:
            await read(discovery(emu, tmp_path))
    assert caught.value.reason == reason and caught.value.status == status
    assert words in str(caught.value)
    assert "emu-entra-" not in str(caught.value)  # never a token


async def test_an_unreachable_arm_is_a_network_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        dead = "https://127.0.0.1:9"  # discard port: refused
        with pytest.raises(ArmError) as caught:
            await read(Discovery(subscriptions=[SUB_A], arm_endpoint=dead, ca_file=str(tmp_path / "ca.pem")))
        assert emu.state.arm.calls == 0
    assert caught.value.reason == "network"


def test_arm_refuses_missing_api_version_and_tokens_of_another_audience(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        ca = str(tmp_path / "ca.pem")
        ident = emu.identity_env()
        with httpx.Client(verify=ssl.create_default_context(cafile=ca)) as http:
            def token(resource: str) -> str:
                r = http.get(ident["IDENTITY_ENDPOINT"], params={"resource": resource},
                             headers={"x-identity-header": ident["IDENTITY_HEADER"]})
                return str(r.json()["access_token"])

            url = f"{emu.root}/subscriptions/{SUB_A}/providers/Microsoft.CognitiveServices/accounts"
            data_plane = http.get(url, params={"api-version": "2025-06-01"},
                                  headers={"authorization": f"Bearer {token('https://cognitiveservices.azure.com')}"})
            arm = f"Bearer {token('https://management.azure.com')}"
            no_version = http.get(url, headers={"authorization": arm})
            ok = http.get(url, params={"api-version": "2025-06-01"}, headers={"authorization": arm})
    assert data_plane.status_code == 401
    assert data_plane.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    assert no_version.status_code == 400
    assert no_version.json()["error"]["code"] == "MissingApiVersionParameter"
    assert [a["name"] for a in ok.json()["value"]] == ["team-a", "team-lab"]


def test_a_deployment_added_in_arm_answers_canaries_and_one_removed_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with arm_emulator(tmp_path, monkeypatch) as emu:
        assert emu.state.deployment("haiku-a") is not None  # the data plane follows the control plane
        emu.arm_put_deployment(SUB_A, "team-a", "new-one", model="claude-haiku-4-5", version="20251001")
        assert emu.state.deployment("new-one") is not None
        emu.arm_remove_deployment(SUB_A, "team-a", "new-one")
        assert emu.state.deployment("new-one") is None
