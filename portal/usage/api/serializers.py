"""Input and output shapes of the usage API; money is a decimal string, never a float."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rest_framework import renderers, serializers

from portal.api.serializers import StrictInput
from portal.usage.contracts import BudgetStatus, IngestResult
from portal.usage.selectors import COUNT_COLUMNS, CostReport

MONEY_FIELDS = ("token_cost", "gpu_cost", "total_cost", "cost", "gpu_hours")


class BudgetUpdateInput(StrictInput):
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000), min_length=1, max_length=10
    )


class BudgetLiftInput(StrictInput):
    reason = serializers.CharField(max_length=500)


class QuarantineReleaseInput(StrictInput):
    since = serializers.DateTimeField()


class RerateInput(StrictInput):
    model = serializers.CharField(max_length=63)
    since = serializers.DateTimeField()
    until = serializers.DateTimeField(required=False, allow_null=True, default=None)


def money(value: Decimal | None) -> str:
    """An exact decimal string: every significant digit kept, at least two decimals."""
    if value is None:
        value = Decimal(0)
    text = format(value, "f")
    if "." in text:
        whole, fraction = text.split(".")
        fraction = fraction.rstrip("0")
        return f"{whole}.{fraction.ljust(2, '0')}"
    return f"{text}.00"


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def ingest_result_output(result: IngestResult) -> dict[str, Any]:
    return {
        "received": result.received,
        "accepted": result.accepted,
        "duplicates": len(result.duplicates),
        "quarantined": len(result.quarantined),
        "rejected": len(result.rejected),
        "duplicate_events": [{"index": note.index, "id": note.event_id} for note in result.duplicates],
        "quarantined_events": [
            {"index": note.index, "id": note.event_id, "reason": note.reason} for note in result.quarantined
        ],
        "rejected_events": [
            {
                "index": rejection.index,
                "id": rejection.event_id,
                "reason": rejection.reason,
                "field": rejection.field,
                "message": rejection.message,
            }
            for rejection in result.rejected
        ],
    }


def plain_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) for key, value in row.items()}


def cost_report_output(report: CostReport, *, team: str | None) -> dict[str, Any]:
    return {
        "team": team,
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "group_by": report.group_by,
        "currency": report.currency,
        "source": "rollups",
        "totals": plain_row(report.totals),
        "series": [plain_row(row) for row in report.series],
        "gpu": [plain_row(row) for row in report.gpu],
    }


CSV_KEYS = {
    "day": ("day",),
    "model": ("model",),
    "credential": ("team", "client_id", "credential_id"),
    "team": ("team",),
}


def cost_report_csv(body: Mapping[str, Any]) -> str:
    keys = CSV_KEYS.get(body.get("group_by", ""), ())
    money_columns = ["token_cost"]
    if body.get("group_by") in ("day", "team"):
        money_columns += ["gpu_hours", "gpu_cost", "total_cost"]
    columns = [*keys, *COUNT_COLUMNS, *money_columns, "currency"]
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(columns)
    for row in body.get("series", []):
        writer.writerow([*(row.get(column, "") for column in columns[:-1]), body.get("currency", "")])
    return output.getvalue()


class CostReportCsvRenderer(renderers.BaseRenderer):
    """`?format=csv` or `Accept: text/csv`: the report's series as CSV; anything else (errors) as JSON."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, Mapping) and "series" in data and "group_by" in data:
            return cost_report_csv(data).encode()
        return renderers.JSONRenderer().render(data)


def budget_output(status: BudgetStatus) -> dict[str, Any]:
    return {
        "team": status.team_slug,
        "month": status.month.strftime("%Y-%m"),
        "currency": status.currency,
        "budget": money(status.budget),
        "spend": money(status.spend),
        "token_cost": money(status.token_cost),
        "gpu_cost": money(status.gpu_cost),
        "percent": money(status.percent.quantize(Decimal("0.01"))),
        "projected_spend": money(status.projected_spend.quantize(Decimal("0.000001"))),
        "thresholds": list(status.thresholds),
        "policy": status.policy,
        "enforcement": status.enforcement,
        "lifted_at": status.lifted_at.isoformat() if status.lifted_at else None,
        "alerts": [
            {
                "threshold": threshold,
                "at": created.isoformat(),
                "delivered_at": delivered.isoformat() if delivered else None,
            }
            for threshold, created, delivered in status.alerts
        ],
    }
