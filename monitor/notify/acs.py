"""Azure Communication Services Email delivery (`azure-communication-email`).

Authenticates with the resource's connection string (an access key, kept as a Secret) or with Entra
ID (managed identity or the default chain) against `email.acs.endpoint`. Charts go as inline
attachments with a contentId, so the HTML's cid: references resolve. 429 and 5xx answers, and
transport errors, are transient; other 4xx answers are permanent.
"""

from __future__ import annotations

import base64
from typing import Any

from monitor.config import Acs

from . import Email, NotifyError

POLL_TIMEOUT_S = 120.0


class AcsNotifier:
    name = "acs"

    def __init__(self, settings: Acs, **client_options: Any) -> None:
        self.settings = settings
        self.client_options = client_options

    def _client(self) -> Any:
        from azure.communication.email import EmailClient

        s = self.settings
        if s.connection_string:
            return EmailClient.from_connection_string(s.connection_string.reveal(), **self.client_options)
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        credential: Any
        if s.credential == "managed_identity":
            credential = ManagedIdentityCredential(client_id=s.client_id) if s.client_id \
                else ManagedIdentityCredential()
        else:
            credential = DefaultAzureCredential(managed_identity_client_id=s.client_id)
        return EmailClient(s.endpoint or "", credential, **self.client_options)

    def send(self, email: Email) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError

        message = {
            "senderAddress": email.sender,
            "recipients": {"to": [{"address": a} for a in email.to]},
            "content": {"subject": email.subject, "plainText": email.text, "html": email.html},
            "attachments": [{"name": f"{cid}.png", "contentType": "image/png", "contentId": cid,
                             "contentInBase64": base64.b64encode(png).decode()}
                            for cid, png in email.images.items()],
            "headers": {"Auto-Submitted": "auto-generated"},
        }
        try:
            poller = self._client().begin_send(message)
            outcome = poller.result(timeout=POLL_TIMEOUT_S)
        except HttpResponseError as exc:
            status = exc.status_code or 0
            raise NotifyError(f"Azure Communication Services answered {status}: {_message(exc)}",
                              transient=status == 429 or status >= 500) from None
        except AzureError as exc:
            raise NotifyError(f"Azure Communication Services: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}", transient=True) from None
        state = str((outcome or {}).get("status", ""))
        if state.lower() != "succeeded":
            error = (outcome or {}).get("error") or {}
            raise NotifyError(f"Azure Communication Services: the send ended {state or 'without a status'}: "
                              f"{error.get('message', '')}".strip(), transient=False)


def _message(exc: Any) -> str:
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    return str(text).splitlines()[0][:200]
