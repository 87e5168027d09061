"""`foundry-monitor check --format json` against the emulator: every failure class, with its hint.

One row per situation: the emulator fault (or the misconfiguration) -> the expected kind and a word of
the hint. Entra mode runs the real azure-identity against the emulator's managed-identity endpoint.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from monitor import config as config_mod
from monitor.canary.fleet import build_fleet
from monitor.canary.run import run_canary
from monitor.cli import main
from monitor.emulator.runner import EmulatorServer

from .loopback import free_port

KEY = "sk-emu-check-DO-NOT-PRINT-7731"
WRONG_KEY = "sk-wrong-DO-NOT-PRINT-5519"

# deployment (= emulator fault name) -> kind, a keyword of the hint
TABLE: dict[str, tuple[str, str]] = {
    "healthy": ("ok", ""),
    "bad_key": ("invalid_api_key", "Keys and"),
    "expired_token": ("invalid_api_key", "Keys and"),  # with an API key a 401 is the key's fault
    "permission_denied": ("permission_denied", "Cognitive Services User"),
    "deployment_not_found": ("deployment_not_found", "deployment name"),
    "invalid_model": ("invalid_model", "model parameter"),
    "invalid_request": ("bad_request", "max_tokens"),
    "gateway_timeout": ("timeout", "timeout"),
    "rate_limit": ("rate_limited", "quota"),
    "api_error": ("server_error", "request-id"),
    "backend_auth": ("server_error", "request-id"),
    "unavailable": ("server_error", "request-id"),
    "overloaded": ("overloaded", "transient"),
    "stream_error": ("overloaded", "transient"),
    "hang": ("timeout", "timeout"),
    "stalled_stream": ("timeout", "timeout"),
    "endless_stream": ("timeout", "timeout"),
    "reset": ("connection_error", "reachable"),
    "malformed_json": ("malformed_response", "proxy"),
    "truncated_stream": ("malformed_response", "proxy"),
    "huge_body": ("malformed_response", "proxy"),
    "redirect": ("unexpected_status", "base URL"),
}
SLOW = {"hang", "stalled_stream", "endless_stream"}


def scenario(names: list[str]) -> dict[str, Any]:
    return {"api_key": KEY, "deployments": [
        {"name": n, "faults": [] if n == "healthy" else [{"kind": n, "retry_after": 3}]} for n in names]}


def deployments(names: list[str]) -> str:
    return "".join(f"      - {{name: {n}{', timeout: 1s' if n in SLOW else ''}}}\n" for n in names)


def check(tmp: Path, text: str) -> tuple[int, dict[str, Any], str]:
    """Run the real CLI in-process; returns exit code, rows by resource/deployment, all printed text."""
    path = tmp / "checks.yaml"
    path.write_text(f"data_dir: {json.dumps(str(tmp / 'data'))}\n"
                    "defaults: {interval: 10s, timeout: 3s, confirm: 0}\n" + text)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["check", "--config", str(path), "--format", "json"])
    out, err = stdout.getvalue(), stderr.getvalue()
    rows = {f"{r['resource']}/{r['deployment']}": r for r in json.loads(out)}
    return rc, rows, out + err


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(scenario=scenario(list(TABLE))) as server:
        yield server


@pytest.fixture(scope="module")
def api_key_round(emu: EmulatorServer, tmp_path_factory: pytest.TempPathFactory,
                  ) -> Iterator[tuple[int, dict[str, Any], str]]:
    ca = trustme.CA()  # a server certificate nobody trusts
    tmp = tmp_path_factory.mktemp("check")
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    pem = str(tmp / "server.pem")
    with EmulatorServer(scenario=scenario(["healthy"]), tls=(pem, pem)) as tls_emu, \
            pytest.MonkeyPatch.context() as mp:
        mp.delenv("SSL_CERT_FILE", raising=False)
        text = (f"resources:\n  - name: emu\n    base_url: {emu.base_url}\n    auth: {{api_key: {KEY}}}\n"
                f"    deployments:\n{deployments(list(TABLE))}      - {{name: not-deployed}}\n"
                f"  - name: rotated\n    base_url: {emu.base_url}\n    auth: {{api_key: {WRONG_KEY}}}\n"
                f"    deployments:\n      - {{name: healthy}}\n"
                f"  - name: wrong-path\n    base_url: {emu.root}/openai/\n    auth: {{api_key: {KEY}}}\n"
                f"    deployments:\n      - {{name: healthy}}\n"
                f"  - name: closed\n    base_url: http://127.0.0.1:{free_port()}/anthropic/\n"
                f"    auth: {{api_key: {KEY}}}\n    deployments:\n      - {{name: healthy}}\n"
                f"  - name: untrusted\n    base_url: {tls_emu.base_url}\n    auth: {{api_key: {KEY}}}\n"
                f"    deployments:\n      - {{name: healthy}}\n")
        yield check(tmp, text)


@pytest.mark.parametrize("name", list(TABLE))
def test_each_emulator_fault_gets_its_kind_and_hint(api_key_round: tuple[int, dict[str, Any], str],
                                                   name: str) -> None:
    _, rows, _ = api_key_round
    kind, keyword = TABLE[name]
    row = rows[f"emu/{name}"]
    assert (row["kind"], row["ok"]) == (kind, kind == "ok")
    assert keyword in (row["hint"] or "")
    if kind != "ok" and name not in SLOW | {"reset"}:
        assert row["request_id"].startswith("req_") and row["apim_request_id"]


@pytest.mark.parametrize("where, kind", [
    ("emu/not-deployed", "deployment_not_found"), ("rotated/healthy", "invalid_api_key"),
    ("wrong-path/healthy", "endpoint_not_found"), ("closed/healthy", "connection_error"),
    ("untrusted/healthy", "tls_error"),
])
def test_misconfigurations_get_their_kind(api_key_round: tuple[int, dict[str, Any], str], where: str,
                                          kind: str) -> None:
    assert api_key_round[1][where]["kind"] == kind


def test_the_round_exits_1_and_never_prints_a_key(api_key_round: tuple[int, dict[str, Any], str]) -> None:
    rc, rows, text = api_key_round
    assert rc == 1 and len(rows) == len(TABLE) + 5
    assert KEY not in text and WRONG_KEY not in text


def test_a_hang_is_cut_at_the_configured_timeout(api_key_round: tuple[int, dict[str, Any], str]) -> None:
    latency = api_key_round[1]["emu/hang"]["latency_ms"]
    assert latency is None or 1000 <= latency < 1500


@pytest.fixture
def identity(emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_USERNAME", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in emu.identity_env().items():
        monkeypatch.setenv(name, value)
    return emu


def entra_config(emu: EmulatorServer, scope: str | None = None, client_id: str | None = None) -> str:
    entra = {k: v for k, v in (("scope", scope), ("client_id", client_id)) if v}
    return (f"resources:\n  - name: entra\n    base_url: {emu.base_url}\n"
            f"    auth: {{entra: {json.dumps(entra)}}}\n    deployments:\n      - {{name: healthy}}\n")


def test_entra_tokens_from_the_managed_identity_endpoint_work(identity: EmulatorServer,
                                                              tmp_path: Path) -> None:
    rc, rows, _ = check(tmp_path, entra_config(identity, client_id="00000000-0000-0000-0000-0000000000aa"))
    assert rc == 0 and rows["entra/healthy"]["kind"] == "ok"
    assert identity.log()[-1]["auth"] == "bearer"


def test_a_token_for_the_wrong_audience_is_token_rejected(identity: EmulatorServer, tmp_path: Path) -> None:
    text = entra_config(identity, scope="https://management.azure.com/.default",
                        client_id="00000000-0000-0000-0000-0000000000aa")
    rc, rows, _ = check(tmp_path, text)
    assert rc == 1 and rows["entra/healthy"]["kind"] == "token_rejected"
    assert "expire" in rows["entra/healthy"]["hint"]


def test_a_dead_token_endpoint_is_credential_unavailable(identity: EmulatorServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{free_port()}/token")
    before = len(identity.log())
    rc, rows, _ = check(tmp_path, entra_config(identity, client_id="00000000-0000-0000-0000-0000000000aa"),
                        )
    assert rc == 1 and rows["entra/healthy"]["kind"] == "credential_unavailable"
    assert len(identity.log()) == before  # no request was sent without a token


async def test_an_expired_entra_token_is_token_rejected_until_a_new_one_is_fetched(
        identity: EmulatorServer) -> None:
    cfg = config_mod.loads(entra_config(identity, client_id="00000000-0000-0000-0000-0000000000aa"), env={})
    fleet = build_fleet(cfg)
    (target,) = fleet.targets
    try:
        first = await run_canary(target, fleet.transports[target.resource], fleet.auths[target.resource])
        identity.state.expire_tokens()  # the cached token is now past its expiry on the server side
        second = await run_canary(target, fleet.transports[target.resource], fleet.auths[target.resource])
        third = await run_canary(target, fleet.transports[target.resource], fleet.auths[target.resource])
    finally:
        await fleet.aclose()
    assert first.kind.value == "ok"
    assert second.kind.value == "token_rejected" and "expire" in second.verdict.hint
    assert third.kind.value == "ok"  # the refused token was dropped and a fresh one fetched
