from __future__ import annotations

import pytest

from monitor.canary.pricing import cost_usd, price_for
from monitor.canary.results import Usage


@pytest.mark.parametrize(("model", "expected"), [
    ("claude-haiku-4-5", 1.00), ("claude-haiku-4-5-20251001", 1.00), ("claude-opus-4-1", 15.00),
    ("CLAUDE-SONNET-4-5", 3.00),
])
def test_dated_and_plain_model_ids_find_the_same_price(model: str, expected: float) -> None:
    p = price_for(model)
    assert p is not None and p.input == expected


def test_an_unknown_model_has_no_price_rather_than_a_zero_cost() -> None:
    assert cost_usd("my-custom-thing", Usage(10, 10)) is None


def test_cost_follows_the_formula_with_cache_writes_split_by_lifetime() -> None:
    u = Usage(input_tokens=1_000_000, output_tokens=100_000, cache_creation_input_tokens=300,
              cache_read_input_tokens=1_000_000, cache_5m_input_tokens=1_000_000,
              cache_1h_input_tokens=1_000_000)
    # opus-4-5: 5 in + 6.25 w5 + 10 w1h + 0.5 read + 2.5 out
    assert cost_usd("claude-opus-4-5", u) == pytest.approx(5 + 6.25 + 10 + 0.5 + 2.5)


def test_without_a_cache_breakdown_all_cache_writes_are_priced_at_the_5_minute_rate() -> None:
    u = Usage(input_tokens=0, output_tokens=0, cache_creation_input_tokens=1_000_000)
    assert cost_usd("claude-sonnet-4-5", u) == pytest.approx(3.75)
