"""Reading figures back out of a rendered console page: cells marked with data-field in a row marked with its key."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from portal.console.templatetags.console_format import money


def table(html: str, table_id: str) -> str:
    found = re.search(rf'<table id="{re.escape(table_id)}".*?</table>', html, re.S)
    assert found is not None, f"no table #{table_id}"
    return found.group(0)


def row(html: str, table_id: str, attribute: str, key: str) -> dict[str, str]:
    """The data-field cells of one row, by field name, as the page shows them."""
    found = re.search(rf'<tr data-{attribute}="{re.escape(key)}".*?</tr>', table(html, table_id), re.S)
    assert found is not None, f"no row {attribute}={key} in #{table_id}"
    return dict(re.findall(r'data-field="([a-z0-9_]+)">([^<]*)<', found.group(0)))


def row_text(html: str, element_id: str) -> dict[str, str]:
    """The data-field texts under an element (a definition list), tags inside a field stripped."""
    found = re.search(rf'id="{re.escape(element_id)}".*?</(dl|table)>', html, re.S)
    assert found is not None, f"no #{element_id}"
    fields = re.findall(r'data-field="([a-z_]+)">(.*?)</dd>', found.group(0), re.S)
    return {name: re.sub(r"<[^>]+>", "", text).strip() for name, text in fields}


def row_keys(html: str, table_id: str, attribute: str) -> list[str]:
    return re.findall(rf'<tr data-{attribute}="([^"]*)"', table(html, table_id))


def figure(html: str, name: str) -> str:
    found = re.search(rf'data-figure="{re.escape(name)}"[^>]*>(?:<a [^>]*>)?([^<]*)<', html)
    assert found is not None, f"no figure {name}"
    return found.group(1)


def shown(value: str | Decimal, currency: str = "USD") -> str:
    """How the console shows an amount the API gives exactly: currency, half-up to the cent."""
    return money(Decimal(value), currency)


def cent(value: str | Decimal) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def this_month() -> tuple[date, date]:
    today = datetime.now(UTC).date()
    return today.replace(day=1), today


def last_month() -> tuple[date, date]:
    first, _ = this_month()
    end = first - timedelta(days=1)
    return end.replace(day=1), end
