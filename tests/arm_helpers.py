"""An emulator serving ARM (https, trustme CA) with two subscriptions, and the environment the monitor's
managed identity reads: shared by the control-plane tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Discovery
from monitor.emulator.runner import EmulatorServer

from .certs import make_certs

SUB_A = "00000000-0000-0000-0000-00000000000a"
SUB_B = "00000000-0000-0000-0000-00000000000b"
HAIKU_QUOTA = "AIServices.GlobalStandard.claude-haiku-4-5"
IDENTITY_VARS = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_USERNAME", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_AUTHORITY_HOST")


def arm_scenario(**extra: Any) -> dict[str, Any]:
    return {
        "api_key": "emu-arm-key",
        "arm": {
            "subscriptions": [
                {"id": SUB_A, "accounts": [
                    {"name": "team-a", "resource_group": "rg-a", "location": "eastus2",
                     "tags": {"env": "prod"},
                     "deployments": [
                         {"name": "haiku-a", "model": "claude-haiku-4-5", "version": "20251001",
                          "capacity": 50},
                         {"name": "sonnet-a", "model": "claude-sonnet-4-5", "version": "20250929",
                          "capacity": 200},
                         {"name": "gpt-a", "model": "gpt-4o", "version": "2024-11-20", "format": "OpenAI"},
                     ]},
                    {"name": "team-lab", "resource_group": "rg-lab", "location": "swedencentral",
                     "tags": {"env": "lab"},
                     "deployments": [{"name": "opus-lab", "model": "claude-opus-4-5",
                                      "version": "20251101"}]},
                ]},
                {"id": SUB_B, "accounts": [
                    {"name": "team-b", "resource_group": "rg-b", "location": "eastus2",
                     "tags": {"env": "prod"},
                     "deployments": [{"name": "haiku-b", "model": "claude-haiku-4-5", "version": "20251001",
                                      "capacity": 10}]},
                ]},
            ],
            "models": [
                {"location": "eastus2", "name": "claude-haiku-4-5", "version": "20251001",
                 "retirement": "2027-10-15"},
                {"location": "eastus2", "name": "claude-sonnet-4-5", "version": "20250929",
                 "lifecycle": "Deprecating", "retirement": "2026-12-20"},
                {"location": "swedencentral", "name": "claude-opus-4-5", "version": "20251101"},
            ],
            "usages": [
                {"subscription": SUB_A, "location": "eastus2", "name": HAIKU_QUOTA,
                 "limit": 2000, "current": 50},
                {"subscription": SUB_B, "location": "eastus2", "name": HAIKU_QUOTA,
                 "limit": 100, "current": 98},
            ],
        },
        **extra,
    }


@contextmanager
def arm_emulator(tmp: Path, mp: pytest.MonkeyPatch, scenario: dict[str, Any] | None = None,
                 ) -> Iterator[EmulatorServer]:
    """The emulator's ARM over https (its CA in tmp/ca.pem: pass it as discovery.ca_file), and beside it
    the same emulator over plain http (``emu.plain``) serving the managed-identity endpoint and the data
    plane. aiohttp reads SSL_CERT_FILE once, when it is imported, so a CA per test must be passed
    explicitly; canaries and tokens over plain http need none."""
    certs = make_certs(tmp)
    for name in IDENTITY_VARS:
        mp.delenv(name, raising=False)
    with EmulatorServer(scenario=scenario or arm_scenario(), tls=certs.server) as emu, \
            EmulatorServer(state=emu.state) as plain:
        for name, value in plain.identity_env().items():
            mp.setenv(name, value)
        emu.plain = plain  # type: ignore[attr-defined]
        yield emu


def discovery(emu: EmulatorServer, tmp: Path, **settings: Any) -> Discovery:
    """A discovery section pointed at the emulator's ARM, trusting its CA (written by arm_emulator)."""
    settings.setdefault("subscriptions", [SUB_A, SUB_B])
    return Discovery(arm_endpoint=emu.root, ca_file=str(tmp / "ca.pem"), **settings)
