"""How a canary proves who it is: an API key header, or a Microsoft Entra ID bearer token.

Both sit behind one small async callable returning the headers to send. Obtaining a token may fail;
that raises CredentialUnavailable, which the probe turns into its own outcome (never a crash).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from monitor.config.secrets import Secret

from .results import AuthMode

REFRESH_MARGIN_S = 300.0  # refresh a cached token this long before it expires (azure-core does the same)


class CredentialUnavailable(Exception):
    """No token could be obtained. The message is secret-free and says which source failed."""


class AuthProvider(Protocol):
    mode: AuthMode

    async def headers(self) -> dict[str, str]: ...

    def forget(self) -> None:
        """Drop a cached credential the service refused (a revoked or expired token)."""

    def take_acquisition(self) -> float | None:
        """Seconds the last real credential acquisition took, once (None: nothing was acquired)."""

    async def close(self) -> None: ...


class ApiKeyAuth:
    mode = AuthMode.API_KEY

    def __init__(self, key: Secret, header: str = "x-api-key") -> None:
        # stray whitespace (a newline from `echo` into an env var) is not part of a key, and an illegal
        # header value would make the HTTP library quote the whole key in its error message
        self._headers = {header: key.reveal().strip()}

    async def headers(self) -> dict[str, str]:
        return self._headers

    def forget(self) -> None:
        return None  # a key cannot be refreshed

    def take_acquisition(self) -> float | None:
        return None

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return "ApiKeyAuth(***)"


class TokenSource(Protocol):
    """What azure-identity's async credentials offer (and what tests can fake at this seam)."""

    def get_token(self, *scopes: str, claims: str | None = None) -> Awaitable[Any]: ...

    def close(self) -> Awaitable[None]: ...


class EntraAuth:
    """Bearer tokens from an async azure-identity credential, cached until shortly before expiry."""

    mode = AuthMode.ENTRA

    def __init__(self, credential: TokenSource, scope: str, clock: Callable[[], float] = time.time) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()
        self._acquired_s: float | None = None  # duration of the last real acquisition, until taken
        self._bypass_cache = False

    async def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {await self.token()}"}

    async def token(self) -> str:
        if self._token is not None and self._expires_on - self._clock() > REFRESH_MARGIN_S:
            return self._token
        async with self._lock:
            if self._token is not None and self._expires_on - self._clock() > REFRESH_MARGIN_S:
                return self._token
            start = time.perf_counter()
            try:
                access = await self._credential.get_token(self._scope, claims=self._fresh_claims())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to get a token is one outcome
                raise CredentialUnavailable(_describe(exc)) from None
            finally:
                self._acquired_s = time.perf_counter() - start
            self._token, self._expires_on = str(access.token), float(access.expires_on)
            self._bypass_cache = False
            return self._token

    def _fresh_claims(self) -> str | None:
        """After a refusal, a claims challenge: azure-identity then skips its own token cache too."""
        if not self._bypass_cache:
            return None
        return json.dumps({"access_token": {"nbf": {"essential": True, "value": str(int(self._clock()))}}})

    def forget(self) -> None:
        self._token, self._expires_on, self._bypass_cache = None, 0.0, True

    def take_acquisition(self) -> float | None:
        taken, self._acquired_s = self._acquired_s, None
        return taken

    async def close(self) -> None:
        await self._credential.close()

    def __repr__(self) -> str:
        return f"EntraAuth(scope={self._scope!r})"


def _describe(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


def entra_credential(client_id: str | None) -> TokenSource:
    """ManagedIdentityCredential when a user-assigned identity is named, else DefaultAzureCredential."""
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()
