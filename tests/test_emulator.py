"""The emulator answers as Foundry does (foundry-api.md): paths, auth, headers, bodies, SSE, faults."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.emulator.runner import EmulatorServer
from monitor.emulator.scenario import FaultKind, load
from monitor.errors import ConfigError

KEY = "emu-test-key"
BODY = {"model": "dep", "max_tokens": 5, "messages": [{"role": "user", "content": "Reply with OK."}]}


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    deployments = [{"name": "dep", "model": "claude-haiku-4-5-20251001", "reply": "Hello there, friend"},
                   {"name": "bucket", "rate_limit": {"requests_per_minute": 2}}]
    deployments += [{"name": k.value, "faults": [{"kind": k.value, "retry_after": 7}]} for k in FaultKind]
    with EmulatorServer(scenario={"api_key": KEY, "deployments": deployments}) as server:
        yield server


def post(emu: EmulatorServer, body: dict[str, Any] | None = None, *, path: str = "v1/messages",
         headers: dict[str, str] | None = None, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(emu.base_url + path, json=body or BODY, timeout=timeout,
                      headers={"x-api-key": KEY} if headers is None else headers)


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_a_message_has_the_recorded_shape_and_both_correlation_ids(emu: EmulatorServer) -> None:
    r = post(emu)
    body = r.json()
    assert r.status_code == 200
    assert re.fullmatch(r"req_011C\w{20}", r.headers["request-id"])
    assert re.fullmatch(r"[0-9a-f-]{36}", r.headers["apim-request-id"])
    assert not [h for h in r.headers if h.startswith("anthropic-ratelimit")]
    assert body["model"] == "claude-haiku-4-5-20251001" and body["id"].startswith("msg_01")
    assert body["content"] == [{"type": "text", "text": "Hello there, friend"}]
    assert body["stop_reason"] == "end_turn" and body["usage"]["output_tokens"] == 5
    assert body["usage"]["input_tokens"] == 8 + 4  # 14 characters of prompt -> ceil(14 / 4)


def test_max_tokens_cuts_the_reply_and_says_so(emu: EmulatorServer) -> None:
    body = post(emu, {**BODY, "max_tokens": 1}).json()
    assert body["stop_reason"] == "max_tokens" and body["usage"]["output_tokens"] == 1
    assert body["content"][0]["text"] == "Hell"


def test_the_stream_follows_the_recorded_event_order_with_cumulative_usage(emu: EmulatorServer) -> None:
    r = post(emu, {**BODY, "stream": True})
    names = [name for name, _ in events(r.text)]
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 5 + [
        "content_block_stop", "message_delta", "message_stop"]
    start, final = events(r.text)[0][1], events(r.text)[-2][1]
    assert start["message"]["stop_reason"] is None
    assert final["usage"]["output_tokens"] == 5 and final["delta"]["stop_reason"] == "end_turn"
    assert "".join(d["delta"]["text"] for n, d in events(r.text) if n == "content_block_delta") == \
        "Hello there, friend"


def test_count_tokens_and_the_beta_query_are_served(emu: EmulatorServer) -> None:
    counted = post(emu, {"model": "dep", "messages": BODY["messages"]}, path="v1/messages/count_tokens")
    beta = post(emu, path="v1/messages?beta=true")
    assert counted.json() == {"input_tokens": 12} and beta.status_code == 200


@pytest.mark.parametrize("headers, status, needle", [
    ({}, 401, "invalid subscription key"),
    ({"x-api-key": "wrong"}, 401, "invalid subscription key"),
    ({"api-key": KEY}, 200, ""),
    ({"authorization": "Bearer not-issued"}, 401, "Access token is missing, invalid"),
])
def test_credentials_are_checked_like_the_azure_gateway(emu: EmulatorServer, headers: dict[str, str],
                                                        status: int, needle: str) -> None:
    r = post(emu, headers=headers)
    assert r.status_code == status and needle in r.text
    assert r.headers["request-id"] and r.headers["apim-request-id"]


def test_api_key_header_acceptance_is_a_flag() -> None:
    with EmulatorServer(scenario={"api_key": KEY, "accept_api_key_header": False,
                                  "deployments": [{"name": "dep"}]}) as strict:
        assert post(strict, headers={"api-key": KEY}).status_code == 401
        assert post(strict, headers={"x-api-key": KEY}).status_code == 200


def test_unsupported_apis_wrong_paths_and_unknown_deployments_get_the_azure_404s(emu: EmulatorServer) -> None:
    models = httpx.get(emu.base_url + "v1/models", headers={"x-api-key": KEY})
    batches = post(emu, path="v1/messages/batches")
    wrong = httpx.post(emu.root + "/openai/v1/messages", json=BODY, headers={"x-api-key": KEY})
    missing = post(emu, {**BODY, "model": "no-such-deployment"})
    assert models.json()["error"]["code"] == batches.json()["error"]["code"] == "api_not_supported"
    assert wrong.json() == {"error": {"code": "404", "message": "Resource not found"}}
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "DeploymentNotFound"
    assert "no-such-deployment" in missing.json()["error"]["message"]


def test_a_malformed_request_gets_an_anthropic_400(emu: EmulatorServer) -> None:
    r = post(emu, {"model": "dep", "messages": BODY["messages"]})
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["request_id"] == r.headers["request-id"]


ERRORS = [  # fault -> status, the field that names it, its value
    ("bad_key", 401, "code", "401"), ("expired_token", 401, "message", "or have expired."),
    ("permission_denied", 403, "code", "PermissionDenied"),
    ("deployment_not_found", 404, "code", "DeploymentNotFound"),
    ("invalid_model", 400, "code", "unknown_model"),
    ("invalid_request", 400, "type", "invalid_request_error"), ("gateway_timeout", 408, "code", "Timeout"),
    ("rate_limit", 429, "code", "RateLimitReached"), ("api_error", 500, "type", "api_error"),
    ("backend_auth", 500, "code", "invalid_model_endpoint_authentication"),
    ("unavailable", 503, "code", "ServiceUnavailable"), ("overloaded", 529, "type", "overloaded_error"),
]


@pytest.mark.parametrize("fault, status, field, value", ERRORS)
def test_each_error_fault_answers_with_its_status_and_body(emu: EmulatorServer, fault: str, status: int,
                                                          field: str, value: str) -> None:
    r = post(emu, {**BODY, "model": fault})
    body = r.json()
    error = body.get("error", body)
    assert r.status_code == status
    assert value in str(error[field]) if field == "message" else error[field] == value
    if fault == "rate_limit":
        assert r.headers["retry-after"] == "7" and "Please wait 7 seconds" in error["message"]


def test_a_token_bucket_produces_real_429s_with_the_wait(emu: EmulatorServer) -> None:
    statuses = [post(emu, {**BODY, "model": "bucket"}) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert 1 <= int(statuses[2].headers["retry-after"]) <= 30


def test_stream_faults_break_the_stream_after_http_200(emu: EmulatorServer) -> None:
    err = post(emu, {**BODY, "model": "stream_error", "stream": True})
    cut = post(emu, {**BODY, "model": "truncated_stream", "stream": True})
    bad = post(emu, {**BODY, "model": "malformed_json", "stream": True})
    assert err.status_code == cut.status_code == bad.status_code == 200
    assert events(err.text)[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                          "message": "Overloaded"}})
    assert [n for n, _ in events(cut.text)][-1] == "content_block_delta"
    with pytest.raises(json.JSONDecodeError):
        events(bad.text)


def test_body_faults_send_broken_or_oversized_json(emu: EmulatorServer) -> None:
    bad = post(emu, {**BODY, "model": "malformed_json"})
    huge = post(emu, {**BODY, "model": "huge_body"})
    redirect = post(emu, {**BODY, "model": "redirect"})
    with pytest.raises(json.JSONDecodeError):
        bad.json()
    assert len(huge.content) > 2_000_000 and huge.json()["type"] == "message"
    assert redirect.status_code == 307 and "login.microsoftonline.com" in redirect.headers["location"]


@pytest.mark.parametrize("fault", ["hang", "stalled_stream"])
def test_silent_faults_keep_the_client_waiting(emu: EmulatorServer, fault: str) -> None:
    with pytest.raises(httpx.ReadTimeout):
        post(emu, {**BODY, "model": fault, "stream": True}, timeout=0.3)


def test_an_endless_stream_keeps_sending_pings_and_never_ends(emu: EmulatorServer) -> None:
    received = b""
    with httpx.stream("POST", emu.base_url + "v1/messages", json={**BODY, "model": "endless_stream",
                                                                   "stream": True},
                      headers={"x-api-key": KEY}, timeout=5) as r:
        for chunk in r.iter_bytes():
            received += chunk
            if received.count(b"event: ping") >= 30:
                break
    assert b"message_stop" not in received and received.count(b"event: ping") >= 30


def test_a_reset_fault_resets_the_connection(emu: EmulatorServer) -> None:
    with pytest.raises(httpx.ReadError, match="reset"):
        post(emu, {**BODY, "model": "reset"})


def test_faults_fire_for_a_fraction_and_inside_their_window_only() -> None:
    with EmulatorServer(scenario={"api_key": KEY, "seed": 3, "deployments": [
            {"name": "dep", "faults": [{"kind": "overloaded", "rate": 0.5},
                                       {"kind": "api_error", "window": {"start": "1h"}}]}]}) as emu:
        statuses = [post(emu).status_code for _ in range(40)]
    assert set(statuses) == {200, 529}
    assert 8 <= statuses.count(529) <= 32


def test_the_admin_api_changes_faults_at_runtime_and_the_log_is_ground_truth(emu: EmulatorServer) -> None:
    httpx.put(f"{emu.root}/_emulator/deployments/late", json={"model": "claude-opus-4-5-20251101"})
    before = post(emu, {**BODY, "model": "late"})
    put = httpx.put(f"{emu.root}/_emulator/deployments/late/faults", json=[{"kind": "overloaded"}])
    after = post(emu, {**BODY, "model": "late"})
    gone = httpx.delete(f"{emu.root}/_emulator/deployments/late")
    missing = post(emu, {**BODY, "model": "late"})
    bad = httpx.put(f"{emu.root}/_emulator/deployments/dep/faults", json=[{"kind": "nonsense"}])
    assert (before.status_code, put.status_code, after.status_code) == (200, 200, 529)
    assert (gone.status_code, missing.status_code, bad.status_code) == (204, 404, 400)
    log = {e["request_id"]: e for e in httpx.get(f"{emu.root}/_emulator/log").json()}
    seen = log[after.headers["request-id"]]
    assert seen["deployment"] == "late" and seen["fault"] == "overloaded" and seen["status"] == 529
    assert seen["apim_request_id"] == after.headers["apim-request-id"]
    assert seen["t_arrival"] <= seen["t_first_byte"] <= seen["t_last_byte"]


def test_the_identity_endpoint_issues_tokens_the_api_accepts_until_they_expire(emu: EmulatorServer) -> None:
    env = emu.identity_env()
    url = env["IDENTITY_ENDPOINT"] + "?api-version=2019-08-01&resource=https://cognitiveservices.azure.com"
    refused = httpx.get(url, headers={"X-IDENTITY-HEADER": "wrong"})
    issued = httpx.get(url, headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}).json()
    bearer = {"authorization": f"Bearer {issued['access_token']}"}
    accepted = post(emu, headers=bearer)
    httpx.post(f"{emu.root}/_emulator/identity/expire")
    expired = post(emu, headers=bearer)
    assert refused.status_code == 401
    assert int(issued["expires_on"]) > time.time() + 3000
    assert accepted.status_code == 200 and expired.status_code == 401
    assert expired.json()["statusCode"] == 401 and "expired" in expired.json()["message"]


def test_a_token_for_another_audience_is_rejected(emu: EmulatorServer) -> None:
    env = emu.identity_env()
    url = env["IDENTITY_ENDPOINT"] + "?resource=https://management.azure.com"
    token = httpx.get(url, headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}).json()["access_token"]
    assert post(emu, headers={"authorization": f"Bearer {token}"}).status_code == 401


def test_a_bad_scenario_file_names_the_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text("deployments:\n  - name: a\n    faults:\n      - {kind: explode}\n")
    expected = r"scenario.yaml:4: deployments\[0\]\.faults\[0\]\.kind: Input should"
    with pytest.raises(ConfigError, match=expected):
        load(path)


def test_the_cli_starts_quickly_prints_what_to_use_and_stops_on_sigterm(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("api_key: printed-key\ndeployments:\n  - {name: one}\n")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "emulator", "--port", "0", "--scenario",
                             str(scenario)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(3)]
        ready_s = time.perf_counter() - started
        base_url = banner[1].split()[-1]
        answer = httpx.post(base_url + "v1/messages", json={**BODY, "model": "one"},
                            headers={"x-api-key": "printed-key"})
    finally:
        proc.terminate()
        rc = proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert answer.status_code == 200 and "printed-key" in banner[2]
    assert rc == 0
    print(f"emulator ready in {ready_s:.2f}s")  # the 2 s target is measured in bench/, not asserted here


def test_a_client_that_leaves_before_its_body_arrives_is_logged_as_499_not_a_crash(
        emu: EmulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    before = len(emu.log())
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(b"POST /anthropic/v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                     b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\": ")
    deadline = time.monotonic() + 10
    while len(emu.log()) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e["status"] for e in emu.log()[before:]] == [499]
    assert not [r for r in caplog.records if r.exc_info], "the emulator logged a traceback"
