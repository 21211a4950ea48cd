"""Pricing one event's tokens with the prices in force at its time: exact Decimal, never float. Pure."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from portal.usage.contracts import PriceRef, Rating

ZERO = Decimal(0)


class PriceBook:
    """Every price of some models, answering "what was in force for this model and usage type at t"."""

    def __init__(self, prices: Iterable[tuple[int, PriceRef]]) -> None:
        self._starts: dict[tuple[int, str], list[datetime]] = {}
        self._prices: dict[tuple[int, str], list[PriceRef]] = {}
        for model_id, price in sorted(prices, key=lambda item: (item[0], item[1].usage_type, item[1].effective_from)):
            key = (model_id, price.usage_type)
            self._starts.setdefault(key, []).append(price.effective_from)
            self._prices.setdefault(key, []).append(price)

    def in_force(self, model_id: int, usage_type: str, at: datetime) -> PriceRef | None:
        key = (model_id, usage_type)
        starts = self._starts.get(key)
        if not starts:
            return None
        position = bisect.bisect_right(starts, at)
        return self._prices[key][position - 1] if position else None


def rate(
    *,
    book: PriceBook,
    model_id: int,
    at: datetime,
    input_tokens: int | None,
    cached_input_tokens: int | None,
    cache_write_tokens: int | None,
    output_tokens: int | None,
    reasoning_tokens: int | None,
) -> Rating:
    """Cost of one event. Input includes cache reads and writes (the gateway's normalization): uncached input
    is input - cached - cache writes. Cache reads and writes fall back to the input price when the catalog
    has none for them. Reasoning is charged apart only when priced; it is then a part of output. A missing
    price charges nothing for that type (self-hosted models are costed by GPU-hours)."""
    total_input = input_tokens or 0
    cached = cached_input_tokens or 0
    cache_write = cache_write_tokens or 0
    output = output_tokens or 0
    reasoning = reasoning_tokens or 0
    if cached + cache_write > total_input:
        return Rating(ZERO, (), "inconsistent_tokens")
    input_price = book.in_force(model_id, "input", at)
    reasoning_price = book.in_force(model_id, "reasoning", at) if reasoning else None
    if reasoning_price is not None and reasoning > output:
        return Rating(ZERO, (), "inconsistent_tokens")
    charges: list[tuple[int, PriceRef | None]] = [
        (total_input - cached - cache_write, input_price),
        (cached, book.in_force(model_id, "cached_input", at) or input_price),
        (cache_write, book.in_force(model_id, "cache_write", at) or input_price),
        (output - reasoning if reasoning_price is not None else output, book.in_force(model_id, "output", at)),
        (reasoning if reasoning_price is not None else 0, reasoning_price),
    ]
    cost = ZERO
    used: list[int] = []
    for tokens, price in charges:
        if tokens and price is not None:
            cost += tokens * price.price_per_million
            if price.price_id not in used:
                used.append(price.price_id)
    return Rating(cost.scaleb(-6), tuple(sorted(used)))
