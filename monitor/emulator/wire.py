"""What Foundry puts on the wire: ids, Azure and Anthropic error bodies, message bodies, SSE events.

Shapes follow ../shared/reference/foundry-api.md: Azure-gateway failures use ``{"error": {"code",
"message"}}`` (or the APIM ``{"statusCode", "message"}``), Anthropic-layer failures use
``{"type": "error", "error": {"type", "message"}, "request_id"}``.
"""

from __future__ import annotations

import json
import math
import secrets
import string
import uuid
from dataclasses import dataclass
from typing import Any

_ALPHABET = string.ascii_letters + string.digits


def request_id() -> str:
    return "req_011C" + "".join(secrets.choice(_ALPHABET) for _ in range(20))


def message_id() -> str:
    return "msg_01" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def apim_request_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class ErrorReply:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def azure(status: int, code: str, message: str, *headers: tuple[str, str]) -> ErrorReply:
    return ErrorReply(status, {"error": {"code": code, "message": message}}, headers)


def anthropic(status: int, error_type: str, message: str, rid: str) -> ErrorReply:
    return ErrorReply(status, {"type": "error", "error": {"type": error_type, "message": message},
                               "request_id": rid})


BAD_KEY_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
    "key for an active subscription and use a correct regional API endpoint for your resource.")
UNAUTHORIZED_MESSAGE = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired.")


def bad_key() -> ErrorReply:
    return azure(401, "401", BAD_KEY_MESSAGE)


def bad_token() -> ErrorReply:
    return ErrorReply(401, {"statusCode": 401, "message": UNAUTHORIZED_MESSAGE})


def permission_denied(path: str) -> ErrorReply:
    return azure(403, "PermissionDenied",
                 "The principal `00000000-0000-0000-0000-000000000000` lacks the required data action "
                 f"`Microsoft.CognitiveServices/accounts/providers/*` to perform `POST {path}` operation.")


def deployment_not_found(name: str) -> ErrorReply:
    return azure(404, "DeploymentNotFound",
                 f"The API deployment {name} does not exist. If you created the deployment within the "
                 "last 5 minutes, please wait a moment and try again.")


def resource_not_found() -> ErrorReply:
    return azure(404, "404", "Resource not found")


def api_not_supported(path: str) -> ErrorReply:
    return azure(404, "api_not_supported", f"The API {path} is not supported for Anthropic deployments.")


def invalid_model(model: object) -> ErrorReply:
    return azure(400, "unknown_model", f"Unknown model: {model}")


def no_model() -> ErrorReply:
    return azure(400, "no_model_name", "Could not find a reference to a model in the request body.")


def rate_limited(limit: float, retry_after: float | None) -> ErrorReply:
    wait = max(1, math.ceil(retry_after)) if retry_after is not None else 60
    headers = (("retry-after", str(wait)),) if retry_after is not None else ()
    return azure(429, "RateLimitReached",
                 f"Rate limit of {limit:g} per 60s exceeded for UserByModelByMinuteRequests. "
                 f"Please wait {wait} seconds before retrying.", *headers)


def gateway_timeout() -> ErrorReply:
    return azure(408, "Timeout", "The operation was timeout.")


def backend_auth(rid: str) -> ErrorReply:
    text = f"Failed to authenticate to backend endpoint. RequestId = {rid}"
    return ErrorReply(500, {"error": {"code": "invalid_model_endpoint_authentication", "message": text,
                                      "details": text}})


def unavailable() -> ErrorReply:
    return azure(503, "ServiceUnavailable", "The service is temporarily unavailable. Please try again later.")


def redirect() -> ErrorReply:
    return ErrorReply(307, {}, (("location", "https://login.microsoftonline.com/common/oauth2/authorize"),))


def tokens_of(text: str) -> list[str]:
    """The reply cut into pieces of about four characters, one per output token."""
    return [text[i:i + 4] for i in range(0, len(text), 4)] or [""]


def input_tokens(body: dict[str, Any]) -> int:
    """Deterministic: 8 framing tokens plus one per 4 characters of every text in system and messages."""
    chars = len(_texts(body.get("system")))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            chars += len(_texts(message.get("content")))
    return 8 + math.ceil(chars / 4)


def _texts(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_texts(part.get("text")) for part in value if isinstance(part, dict))
    return ""


def usage(n_in: int, n_out: int) -> dict[str, Any]:
    return {"input_tokens": n_in, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": n_out, "service_tier": "standard", "inference_geo": "not_available"}


def message(mid: str, model: str, text: str, stop_reason: str, n_in: int, n_out: int) -> dict[str, Any]:
    return {"model": model, "id": mid, "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": text}], "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage(n_in, n_out)}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def message_start(mid: str, model: str, n_in: int) -> bytes:
    msg: dict[str, Any] = {"model": model, "id": mid, "type": "message", "role": "assistant", "content": [],
           "stop_reason": None, "stop_sequence": None, "usage": usage(n_in, 1)}
    return sse("message_start", {"type": "message_start", "message": msg})


BLOCK_START = sse("content_block_start",
                  {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
BLOCK_STOP = sse("content_block_stop", {"type": "content_block_stop", "index": 0})
MESSAGE_STOP = sse("message_stop", {"type": "message_stop"})


def delta(text: str) -> bytes:
    return sse("content_block_delta",
               {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})


def message_delta(stop_reason: str, n_in: int, n_out: int) -> bytes:
    return sse("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                 "usage": {"input_tokens": n_in, "cache_creation_input_tokens": 0,
                                           "cache_read_input_tokens": 0, "output_tokens": n_out}})


def error_event(error_type: str, message: str) -> bytes:
    return sse("error", {"type": "error", "error": {"type": error_type, "message": message}})
