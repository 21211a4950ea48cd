"""What usage metering hands to other apps, workers and its own API: frozen, Django-free values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple


class UsageRecord(NamedTuple):
    """One usage event after validation, before attribution and rating. A named tuple, not a frozen dataclass:
    immutable all the same, and built at about a fifth of the cost (a frozen dataclass sets each of its sixteen
    fields through object.__setattr__, about 3 µs an event on this machine; the readers build one per event and
    pass the fields by position)."""

    index: int  # type: ignore[assignment]  # the event's place in its batch; shadows tuple.index, never called
    event_id: str
    source: str
    event_time: datetime
    client_id: str
    model_names: tuple[str, ...]
    provider: str = ""
    route: str = ""
    status_code: int | None = None
    duration_ms: int | None = None
    time_to_first_token_ms: int | None = None
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def model_name(self) -> str:
        return self.model_names[0] if self.model_names else ""


def _dropping_columns(name: str) -> Any:
    method = getattr(list, name)

    def changed(self: ReadRecords, *args: Any, **kwargs: Any) -> Any:
        self.columns = None
        return method(self, *args, **kwargs)

    changed.__name__ = name
    return changed


class ReadRecords(list["UsageRecord | EventRejection"]):
    """Records a reader built a column at a time, with those columns kept: `columns` holds one sequence per
    UsageRecord field, in field order, each value that of the record at the same position. Rating takes them as they
    are instead of transposing the records back (zip(*records): about 1 µs an event). Any change to the list drops
    them (None), so they never describe another list."""

    __slots__ = ("columns",)

    def __init__(self, records: Iterable[UsageRecord], columns: Sequence[Sequence[Any]]) -> None:
        super().__init__(records)
        self.columns: Sequence[Sequence[Any]] | None = columns

    append = _dropping_columns("append")
    extend = _dropping_columns("extend")
    insert = _dropping_columns("insert")
    pop = _dropping_columns("pop")
    remove = _dropping_columns("remove")
    clear = _dropping_columns("clear")
    sort = _dropping_columns("sort")
    reverse = _dropping_columns("reverse")
    __setitem__ = _dropping_columns("__setitem__")
    __delitem__ = _dropping_columns("__delitem__")
    __iadd__ = _dropping_columns("__iadd__")
    __imul__ = _dropping_columns("__imul__")


@dataclass(frozen=True)
class EventRejection:
    """An event refused whole: never stored, reported to the producer with its index and why."""

    index: int
    event_id: str
    reason: str
    field: str = ""
    message: str = ""


@dataclass(frozen=True)
class EventNote:
    """An accepted event reported back: a duplicate, or one kept in quarantine."""

    index: int
    event_id: str
    reason: str = ""


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: tuple[EventNote, ...]
    quarantined: tuple[EventNote, ...]
    rejected: tuple[EventRejection, ...]

    @property
    def received(self) -> int:
        return self.accepted + len(self.duplicates) + len(self.rejected)


@dataclass(frozen=True)
class PriceRef:
    price_id: int
    usage_type: str
    price_per_million: Decimal
    effective_from: datetime


@dataclass(frozen=True)
class Rating:
    cost: Decimal
    price_ids: tuple[int, ...]
    # Set when the event cannot be rated as it stands (kept in quarantine with this reason).
    problem: str = ""


@dataclass(frozen=True)
class BudgetStatus:
    team_slug: str
    month: date
    currency: str
    budget: Decimal
    spend: Decimal
    token_cost: Decimal
    gpu_cost: Decimal
    projected_spend: Decimal
    percent: Decimal
    thresholds: tuple[int, ...]
    policy: str
    enforcement: str
    lifted_at: datetime | None
    alerts: tuple[tuple[int, datetime, datetime | None], ...]
