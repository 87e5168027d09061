"""Shared fixtures. Every server a test talks to runs on 127.0.0.1."""

from __future__ import annotations

import pytest


@pytest.fixture
def fake_key() -> str:
    """A recognisable API key: tests scan output for it to prove it never leaks."""
    return "fk-TESTSECRET-0123456789abcdef-DO-NOT-PRINT"
