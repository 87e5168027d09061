"""List prices per model (USD per million tokens) and the cost of one usage record.

Source: Anthropic's pricing page (reference/foundry-api.md §7). Foundry bills the same standard
rates through the Azure Marketplace, so these are estimates, not invoices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .results import Usage


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    output: float


PRICES: dict[str, Price] = {
    "claude-opus-4-5": Price(5.00, 6.25, 10.00, 0.50, 25.00),
    "claude-sonnet-4-5": Price(3.00, 3.75, 6.00, 0.30, 15.00),
    "claude-opus-4-1": Price(15.00, 18.75, 30.00, 1.50, 75.00),
    "claude-haiku-4-5": Price(1.00, 1.25, 2.00, 0.10, 5.00),
}

_DATED = re.compile(r"-\d{8}$")


def price_for(model: str) -> Price | None:
    """The price of a model id, dated (claude-haiku-4-5-20251001) or not; None when unknown."""
    # the model as written in PRICES first: a dict look-up, where the regex costs microseconds a canary
    return PRICES.get(model) or PRICES.get(_DATED.sub("", model.strip().lower()))


def cost_usd(model: str, usage: Usage) -> float | None:
    p = price_for(model)
    if p is None:
        return None
    if usage.cache_5m_input_tokens is None and usage.cache_1h_input_tokens is None:
        w5, w1h = usage.cache_creation_input_tokens, 0
    else:
        w5, w1h = usage.cache_5m_input_tokens or 0, usage.cache_1h_input_tokens or 0
    total = (usage.input_tokens * p.input + w5 * p.cache_write_5m + w1h * p.cache_write_1h
             + usage.cache_read_input_tokens * p.cache_read + usage.output_tokens * p.output)
    return total / 1_000_000


def estimated_canary_usage(prompt: str, max_tokens: int) -> Usage:
    """A cautious guess before the first answer: about 4 characters a token plus message overhead."""
    return Usage(input_tokens=len(prompt) // 3 + 16, output_tokens=max_tokens)
