"""The date range every console page is filtered by: the cost API's `from` and `to`, with the same defaults and
limits, so that a page and the API's CSV it links to always cover the same days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.http import QueryDict

from portal.core.errors import FieldProblem

# The cost API's limit (portal/usage/api/views.py, MAX_REPORT_DAYS): a longer range would make the CSV link fail.
MAX_RANGE_DAYS = 366


class RangeInvalid(Exception):
    def __init__(self, problem: FieldProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date  # inclusive

    @property
    def query(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}

    @property
    def begin_at(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        """The first moment after the range."""
        return datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC) + timedelta(days=1)


def _date(params: QueryDict, name: str, default: date) -> date:
    raw = params.get(name)
    if not raw:
        return default
    try:
        parsed = date.fromisoformat(raw)
    except ValueError:
        raise RangeInvalid(FieldProblem(name, "must be a date, YYYY-MM-DD", "invalid_date")) from None
    if not 2000 <= parsed.year <= 2999:
        raise RangeInvalid(FieldProblem(name, "must be a date between 2000 and 2999", "invalid_date"))
    return parsed


def date_range(params: QueryDict, *, today: date) -> DateRange:
    """`from` (default the 1st of this month) to `to` (default today), both UTC days, as the cost API reads them."""
    start = _date(params, "from", today.replace(day=1))
    end = _date(params, "to", today)
    if end < start:
        raise RangeInvalid(FieldProblem("to", "must not be before 'from'", "invalid_range"))
    if (end - start).days >= MAX_RANGE_DAYS:
        raise RangeInvalid(FieldProblem("to", f"a range spans at most {MAX_RANGE_DAYS} days", "range_too_long"))
    return DateRange(start, end)
