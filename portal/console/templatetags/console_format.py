"""How the console writes figures: money with its currency and two decimals, percents, GPU-hours, and times as
UTC ISO in a <time> element that the browser rewrites in the viewer's time zone (static/console/console.js)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from django import template
from django.utils.html import format_html, format_html_join

from portal.usage.contracts import BudgetStatus

register = template.Library()

CENT = Decimal("0.01")


def two_decimals(value: Decimal | int | str | None) -> str:
    """Rounded half up to the cent and grouped by thousands: 1234.565 -> '1,234.57'."""
    amount = Decimal(value or 0).quantize(CENT, rounding=ROUND_HALF_UP)
    return f"{amount:,.2f}"


@register.filter
def money(value: Decimal | int | str | None, currency: str) -> str:
    return f"{currency} {two_decimals(value)}"


@register.filter
def percent(value: Decimal | int | str | None) -> str:
    return f"{two_decimals(value)} %"


@register.filter
def ratio_percent(value: Decimal | float | None) -> str:
    """A ratio of 0 to 1 (an error rate) as a percent with two decimals."""
    return percent(Decimal(str(value or 0)) * 100)


@register.filter
def milliseconds(value: float | None) -> str:
    """A latency in whole milliseconds (percentiles are interpolated inside histogram buckets); a dash when none."""
    return "—" if value is None else f"{round(value):,}"


@register.filter
def decimal2(value: Decimal | int | str | None) -> str:
    return two_decimals(value)


@register.filter
def integer(value: int | None) -> str:
    return f"{value or 0:,}"


@register.filter
def bar_width(value: Decimal | int | None) -> str:
    """A percent as a CSS width, capped at 100 (the text next to the bar says the real figure)."""
    return f"{min(max(Decimal(value or 0), Decimal(0)), Decimal(100)):.2f}%"


@register.simple_tag
def moment(value: datetime | date | str | None) -> str:
    if not isinstance(value, date):  # None, or a missing attribute (an empty string in a template)
        return "—"
    if isinstance(value, datetime):
        iso = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return format_html(
            '<time datetime="{}" data-local>{}</time>', iso, value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        )
    return format_html('<time datetime="{}">{}</time>', value.isoformat(), value.isoformat())


@register.simple_tag
def burn(status: BudgetStatus) -> str:
    """A budget's burn: a bar to its percent with a tick at each threshold, coloured over the first threshold and over
    the budget, and the percent as text (a tag, not an included template: the overview draws one per team)."""
    if status.percent >= 100:
        level = "over"
    elif status.thresholds and status.percent >= status.thresholds[0]:
        level = "warn"
    else:
        level = "ok"
    ticks = format_html_join(
        "", '<i style="left: {}" title="{} %"></i>', ((bar_width(value), value) for value in status.thresholds)
    )
    return format_html(
        '<div class="burn burn-{}">\n  <span class="bar" aria-hidden="true"><span style="width: {}"></span>{}</span>\n'
        '  <span data-field="percent">{}</span>\n</div>',
        level,
        bar_width(status.percent),
        ticks,
        percent(status.percent),
    )
