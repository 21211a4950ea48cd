"""Pricing one event's tokens with the prices in force at its time: exact integers (pico-units of the currency),
never float. Pure."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from portal.usage.contracts import PriceRef, Rating

ZERO = Decimal(0)
USAGE_TYPES = ("input", "cached_input", "cache_write", "output", "reasoning")
# Catalog prices are per 1M tokens with 6 decimal places, so tokens x price x 10^6 is the cost in 10^-12 units: an
# integer, exact, and cheap (no Decimal context per event).
PICO_PER_UNIT = 10**12
MAX_COST_PICO = 2**63 - 1  # what one stored event may cost (a bigint); more is a rating problem, never an overflow


def price_micro(price: PriceRef) -> int:
    """The price per 1M tokens in micro-units; the catalog stores 6 decimal places, so this is exact."""
    scaled = price.price_per_million.scaleb(6)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"price {price.price_id} has more than 6 decimal places")
    return int(scaled)


class Tariff:
    """One period's prices, ready to charge many events: the micro-prices of the five charged parts (cache reads and
    writes already fallen back to input when unpriced) and, for each of the 32 patterns of which parts are non-zero,
    the sorted ids of the prices used. Charging is then a few integer products and one tuple lookup per event."""

    __slots__ = (
        "cached_micro",
        "input_micro",
        "output_micro",
        "reasoning_micro",
        "reasoning_priced",
        "used",
        "write_micro",
    )  # fmt: skip

    def __init__(self, period: tuple[tuple[PriceRef | None, int], ...]) -> None:
        input_entry, cached_entry, write_entry, output_entry, reasoning_entry = period
        if cached_entry[0] is None:
            cached_entry = input_entry
        if write_entry[0] is None:
            write_entry = input_entry
        parts = (input_entry, cached_entry, write_entry, output_entry, reasoning_entry)
        self.input_micro, self.cached_micro, self.write_micro, self.output_micro, self.reasoning_micro = (
            micro for _, micro in parts
        )
        self.reasoning_priced = reasoning_entry[0] is not None
        self.used: list[tuple[int, ...]] = []
        for pattern in range(32):
            ids = {price.price_id for bit, (price, _) in enumerate(parts) if pattern >> bit & 1 and price is not None}
            self.used.append(tuple(sorted(ids)))

    def charge(
        self, input_tokens: int, cached: int, cache_write: int, output: int, reasoning: int
    ) -> tuple[int, tuple[int, ...], str]:
        """(cost in pico-units, price ids used, problem) of counts already read as integers (absent = 0); the rules
        are `rate`'s."""
        if cached + cache_write > input_tokens:
            return 0, (), "inconsistent_tokens"
        if reasoning and self.reasoning_priced:
            if reasoning > output:
                return 0, (), "inconsistent_tokens"
            output -= reasoning
        else:
            reasoning = 0  # unpriced reasoning is charged as the output it is part of
        uncached = input_tokens - cached - cache_write
        cost = (
            uncached * self.input_micro
            + cached * self.cached_micro
            + cache_write * self.write_micro
            + output * self.output_micro
            + reasoning * self.reasoning_micro
        )
        if cost > MAX_COST_PICO:
            return 0, (), "cost_out_of_range"
        pattern = (uncached > 0) | (cached > 0) << 1 | (cache_write > 0) << 2 | (output > 0) << 3 | (reasoning > 0) << 4
        return cost, self.used[pattern], ""


# Before a model's first price: every part unpriced, so consistent counts cost nothing and inconsistent ones are
# still refused.
UNPRICED = Tariff(((None, 0),) * len(USAGE_TYPES))


class PriceBook:
    """Every price of some models, answering "what was in force for this model and usage type at t". Each model's
    prices are cut into periods between any two changes, so one lookup finds all five usage types at once."""

    def __init__(self, prices: Iterable[tuple[int, PriceRef]]) -> None:
        by_model: dict[int, list[PriceRef]] = {}
        for model_id, price in prices:
            by_model.setdefault(model_id, []).append(price)
        self._starts: dict[int, list[datetime]] = {}
        self._tariffs: dict[int, list[Tariff]] = {}
        self._periods: dict[int, list[tuple[tuple[PriceRef | None, int], ...]]] = {}
        for model_id, refs in by_model.items():
            starts = sorted({price.effective_from for price in refs})
            periods = []
            for start in starts:
                in_force: list[tuple[PriceRef | None, int]] = []
                for usage_type in USAGE_TYPES:
                    current = max(
                        (p for p in refs if p.usage_type == usage_type and p.effective_from <= start),
                        key=lambda p: p.effective_from,
                        default=None,
                    )
                    in_force.append((current, price_micro(current) if current is not None else 0))
                periods.append(tuple(in_force))
            self._starts[model_id] = starts
            self._periods[model_id] = periods
            self._tariffs[model_id] = [Tariff(period) for period in periods]

    def period(self, model_id: int, at: datetime) -> tuple[tuple[PriceRef | None, int], ...] | None:
        """(price, micro-price) of each of USAGE_TYPES in force at `at`; None before the model's first price."""
        starts = self._starts.get(model_id)
        if not starts:
            return None
        position = bisect.bisect_right(starts, at)
        return self._periods[model_id][position - 1] if position else None

    def tariff(self, model_id: int, at: datetime) -> Tariff | None:
        """The period in force at `at` as a Tariff; None before the model's first price."""
        starts = self._starts.get(model_id)
        if not starts:
            return None
        position = bisect.bisect_right(starts, at)
        return self._tariffs[model_id][position - 1] if position else None

    def in_force(self, model_id: int, usage_type: str, at: datetime) -> PriceRef | None:
        period = self.period(model_id, at)
        return period[USAGE_TYPES.index(usage_type)][0] if period is not None else None


def rate_pico(
    book: PriceBook,
    model_id: int,
    at: datetime,
    input_tokens: int | None,
    cached_input_tokens: int | None,
    cache_write_tokens: int | None,
    output_tokens: int | None,
    reasoning_tokens: int | None,
) -> tuple[int, tuple[int, ...], str]:
    """(cost in pico-units, price ids used, problem) of one event; see `rate` for the rules."""
    tariff = book.tariff(model_id, at) or UNPRICED
    return tariff.charge(
        input_tokens or 0, cached_input_tokens or 0, cache_write_tokens or 0, output_tokens or 0, reasoning_tokens or 0
    )


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
    cost, price_ids, problem = rate_pico(
        book, model_id, at, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens
    )
    return Rating(Decimal(cost).scaleb(-12) if cost else ZERO, price_ids, problem)
