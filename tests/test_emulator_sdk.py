"""The official anthropic SDK's Foundry client and azure-identity work against the emulator unmodified."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from anthropic import AnthropicFoundry
from azure.identity import ManagedIdentityCredential, get_bearer_token_provider

from monitor.emulator.runner import EmulatorServer

KEY = "emu-sdk-key"
SCOPE = "https://cognitiveservices.azure.com/.default"
ASK = {"max_tokens": 16, "messages": [{"role": "user", "content": "ping"}]}

FAULTS: list[tuple[str, type[anthropic.APIError], int | None]] = [
    ("bad_key", anthropic.AuthenticationError, 401),
    ("expired_token", anthropic.AuthenticationError, 401),
    ("permission_denied", anthropic.PermissionDeniedError, 403),
    ("deployment_not_found", anthropic.NotFoundError, 404),
    ("invalid_model", anthropic.BadRequestError, 400),
    ("invalid_request", anthropic.BadRequestError, 400),
    ("gateway_timeout", anthropic.APIStatusError, 408),
    ("rate_limit", anthropic.RateLimitError, 429),
    ("api_error", anthropic.InternalServerError, 500),
    ("backend_auth", anthropic.InternalServerError, 500),
    ("unavailable", anthropic.APIStatusError, 503),
    ("overloaded", anthropic.OverloadedError, 529),
    ("reset", anthropic.APIConnectionError, None),
]


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    deployments = [{"name": "canary-haiku", "model": "claude-haiku-4-5-20251001", "reply": "pong"},
                   {"name": "stream_error", "faults": [{"kind": "stream_error"}]},
                   {"name": "hang", "faults": [{"kind": "hang"}]}]
    deployments += [{"name": f, "faults": [{"kind": f, "retry_after": 1}]} for f, _, _ in FAULTS]
    with EmulatorServer(scenario={"api_key": KEY, "deployments": deployments}) as server:
        yield server


def client(emu: EmulatorServer, **kw: object) -> AnthropicFoundry:
    return AnthropicFoundry(base_url=emu.base_url, max_retries=0, **kw)  # type: ignore[arg-type]


def test_create_with_an_api_key_returns_the_message_and_its_usage(emu: EmulatorServer) -> None:
    with client(emu, api_key=KEY) as c:
        msg = c.messages.create(model="canary-haiku", **ASK)  # type: ignore[call-overload]
    assert msg.content[0].text == "pong" and msg.model == "claude-haiku-4-5-20251001"
    assert msg.usage.output_tokens == 1 and msg.stop_reason == "end_turn"
    assert emu.log()[-1]["auth"] == "x-api-key"


def test_stream_gives_the_final_message_and_the_ground_truth_has_its_request_id(emu: EmulatorServer) -> None:
    with client(emu, api_key=KEY) as c, c.messages.stream(model="canary-haiku", **ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    truth = {e["request_id"]: e for e in emu.log()}[request_id]
    assert text == "pong" and final.usage.output_tokens == 1
    assert truth["stream"] is True and truth["status"] == 200 and truth["t_first_token"] is not None


def test_count_tokens_is_served(emu: EmulatorServer) -> None:
    with client(emu, api_key=KEY) as c:
        counted = c.messages.count_tokens(model="canary-haiku", messages=ASK["messages"])  # type: ignore[arg-type]
    assert counted.input_tokens == 9


def test_an_entra_token_from_the_managed_identity_endpoint_is_accepted(
        emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in emu.identity_env().items():
        monkeypatch.setenv(name, value)
    credential = ManagedIdentityCredential()
    try:
        provider = get_bearer_token_provider(credential, SCOPE)
        with client(emu, azure_ad_token_provider=provider) as c:
            msg = c.messages.create(model="canary-haiku", **ASK)  # type: ignore[call-overload]
    finally:
        credential.close()
    assert msg.content[0].text == "pong"
    assert emu.log()[-1]["auth"] == "bearer"


@pytest.mark.parametrize("fault, error, status", FAULTS)
def test_each_fault_raises_the_exception_the_sdk_mapping_predicts(
        emu: EmulatorServer, fault: str, error: type[anthropic.APIError], status: int | None) -> None:
    with client(emu, api_key=KEY) as c, pytest.raises(error) as caught:
        c.messages.create(model=fault, **ASK)  # type: ignore[call-overload]
    if status is not None:
        assert isinstance(caught.value, anthropic.APIStatusError)
        assert caught.value.status_code == status
        truth = {e["request_id"]: e for e in emu.log()}
        assert truth[caught.value.request_id or ""]["fault"] == fault


def test_a_mid_stream_error_is_a_plain_api_status_error_with_status_200(emu: EmulatorServer) -> None:
    with client(emu, api_key=KEY) as c, pytest.raises(anthropic.APIStatusError) as caught, \
            c.messages.stream(model="stream_error", **ASK) as stream:
        stream.get_final_message()
    assert type(caught.value) is anthropic.APIStatusError
    assert caught.value.status_code == 200 and caught.value.type == "overloaded_error"


def test_a_hang_ends_in_the_sdk_timeout(emu: EmulatorServer) -> None:
    with client(emu, api_key=KEY, timeout=0.3) as c, pytest.raises(anthropic.APITimeoutError):
        c.messages.create(model="hang", **ASK)  # type: ignore[call-overload]
