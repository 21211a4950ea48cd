"""Input and output shapes of the usage API; money is a decimal string, never a float."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import renderers, serializers
from rest_framework.exceptions import ErrorDetail

from portal.api.serializers import QueryFilters, StrictInput
from portal.usage.contracts import BudgetStatus, IngestResult
from portal.usage.selectors import COUNT_COLUMNS, GROUPINGS, PLATFORM_GROUPINGS, CostReport

MONEY_FIELDS = ("token_cost", "gpu_cost", "total_cost", "cost", "gpu_hours")


MAX_REPORT_DAYS = 366


class ReportDateField(serializers.DateField):
    """A report's day: YYYY-MM-DD, between the years 2000 and 2999."""

    default_error_messages = {"invalid_date": "must be a date between 2000 and 2999, YYYY-MM-DD"}

    def to_internal_value(self, value: Any) -> date:
        if not isinstance(value, str):
            self.fail("invalid_date")
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            self.fail("invalid_date")
        if not 2000 <= parsed.year <= 2999:
            self.fail("invalid_date")
        return parsed


class CostReportQuery(QueryFilters):
    """`from` (a Python keyword, so added in get_fields) and `to` are UTC days, both included."""

    to = ReportDateField(required=False, help_text="Last day included (UTC), default today")
    group_by = serializers.ChoiceField(choices=GROUPINGS, required=False, default="day")
    format = serializers.ChoiceField(
        choices=["json", "csv"], required=False, help_text="Or Accept: text/csv (an unknown format is a 404)"
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        return {
            "from": ReportDateField(required=False, help_text="First day (UTC), default the 1st of this month"),
            **fields,
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        today = datetime.now(UTC).date()
        start = attrs.get("from") or today.replace(day=1)
        end = attrs.get("to") or today
        if end < start:
            raise serializers.ValidationError({"to": [ErrorDetail("must not be before 'from'", code="invalid_range")]})
        if (end - start).days >= MAX_REPORT_DAYS:
            raise serializers.ValidationError(
                {"to": [ErrorDetail(f"a report spans at most {MAX_REPORT_DAYS} days", code="range_too_long")]}
            )
        return {**attrs, "from": start, "to": end}


class PlatformCostReportQuery(CostReportQuery):
    group_by = serializers.ChoiceField(choices=PLATFORM_GROUPINGS, required=False, default="day")
    team = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text="Only this team")


HEALTH_GROUPINGS = ("team", "model", "deployment")
HEALTH_BUCKETS = ("day", "hour")


class RequestHealthQuery(CostReportQuery):
    """The console's request-health filters: UTC days `from`..`to` (both included), grouping and bucket."""

    group_by = serializers.ChoiceField(choices=HEALTH_GROUPINGS, required=False, default="team")
    bucket = serializers.ChoiceField(choices=HEALTH_BUCKETS, required=False, default="day")
    team = serializers.CharField(
        required=False, allow_blank=True, max_length=100, help_text="Only this team (default: every team you see)"
    )


class RequestHealthOutput(serializers.Serializer):
    """One group's requests in one bucket, from the hourly request-health rollup; a percentile is null where no
    request reported the measure."""

    bucket_start = serializers.DateTimeField()
    key = serializers.CharField(help_text="The team slug, model slug or deployment name")
    requests = serializers.IntegerField()
    # DRF's metaclass takes declared fields off the class, so this never shadows Serializer.errors at run time.
    errors = serializers.IntegerField()  # type: ignore[assignment]
    error_rate = serializers.FloatField(allow_null=True)
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)
    ttft_p50_ms = serializers.FloatField(allow_null=True)
    ttft_p95_ms = serializers.FloatField(allow_null=True)


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


# --- response shapes: the dicts above, described field by field for the OpenAPI document -----------------------


@extend_schema_field({"type": "string", "format": "decimal", "pattern": r"^-?\d+\.\d{2,}$", "example": "12.50"})
class MoneyField(serializers.CharField):
    """An exact decimal string (money(): every significant digit, at least two decimals), never a float."""


class CountsOutput(serializers.Serializer):
    requests = serializers.IntegerField()
    failed_requests = serializers.IntegerField()
    unmetered_requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    token_cost = MoneyField()


class CostTotalsOutput(CountsOutput):
    gpu_hours = MoneyField()
    gpu_cost = MoneyField()
    total_cost = MoneyField()


class CostRowOutput(CountsOutput):
    """One row of the series; which keys it has depends on group_by (day; model; team, client_id and credential_id
    for credential; team), and GPU columns come with day and team."""

    day = serializers.DateField(required=False)
    model = serializers.CharField(required=False)
    team = serializers.CharField(required=False, allow_null=True)
    client_id = serializers.CharField(required=False, allow_null=True)
    credential_id = serializers.IntegerField(required=False, allow_null=True)
    gpu_hours = MoneyField(required=False)
    gpu_cost = MoneyField(required=False)
    total_cost = MoneyField(required=False)


class GpuCostRowOutput(serializers.Serializer):
    team = serializers.CharField()
    deployment = serializers.CharField()
    cluster = serializers.CharField()
    accelerator_type = serializers.CharField()
    gpu_hours = MoneyField()
    cost = MoneyField()


class CostReportOutput(serializers.Serializer):
    team = serializers.CharField(allow_null=True, help_text="The team, or null for every team")
    to = serializers.DateField()
    group_by = serializers.ChoiceField(choices=PLATFORM_GROUPINGS)
    currency = serializers.CharField()
    source = serializers.ChoiceField(choices=["rollups"])  # type: ignore[assignment]  # a field, not Field.source
    totals = CostTotalsOutput()
    series = CostRowOutput(many=True)
    gpu = GpuCostRowOutput(many=True)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        return {"team": fields.pop("team"), "from": serializers.DateField(), **fields}


class BudgetAlertOutput(serializers.Serializer):
    threshold = serializers.IntegerField(help_text="Percent of the budget")
    at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)


class BudgetOutput(serializers.Serializer):
    team = serializers.CharField()
    month = serializers.CharField(help_text="YYYY-MM")
    currency = serializers.CharField()
    budget = MoneyField()
    spend = MoneyField()
    token_cost = MoneyField()
    gpu_cost = MoneyField()
    percent = MoneyField(help_text="Spend as a percent of the budget")
    projected_spend = MoneyField(help_text="This month's spend at the current pace")
    thresholds = serializers.ListField(child=serializers.IntegerField(), help_text="Alert thresholds in percent")
    policy = serializers.CharField(help_text="What happens when the budget is spent: alert, throttle or block")
    enforcement = serializers.CharField(help_text="What is enforced now")
    lifted_at = serializers.DateTimeField(allow_null=True)
    alerts = BudgetAlertOutput(many=True)


class EventNoteOutput(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the event in the batch")
    id = serializers.CharField()


class QuarantinedNoteOutput(EventNoteOutput):
    reason = serializers.CharField()


class RejectedEventOutput(EventNoteOutput):
    reason = serializers.CharField()
    field = serializers.CharField()
    message = serializers.CharField()


class IngestResultOutput(serializers.Serializer):
    received = serializers.IntegerField()
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    quarantined = serializers.IntegerField()
    rejected = serializers.IntegerField()
    duplicate_events = EventNoteOutput(many=True)
    quarantined_events = QuarantinedNoteOutput(many=True)
    rejected_events = RejectedEventOutput(many=True)


class OtlpPartialSuccessOutput(serializers.Serializer):
    rejectedLogRecords = serializers.CharField(help_text="An int64 as a string (OTLP/JSON)")
    errorMessage = serializers.CharField()


class OtlpExportOutput(serializers.Serializer):
    """ExportLogsServiceResponse in OTLP/JSON: empty when every record was accepted."""

    partialSuccess = OtlpPartialSuccessOutput(required=False)


class RerateOutput(serializers.Serializer):
    model = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField(allow_null=True)
    events_scanned = serializers.IntegerField()
    events_changed = serializers.IntegerField()
    cost_before = serializers.CharField(help_text="Decimal string")
    cost_after = serializers.CharField(help_text="Decimal string")


class QuarantinedEventOutput(serializers.Serializer):
    event_time = serializers.DateTimeField()
    source = serializers.CharField()  # type: ignore[assignment]  # a field, not Field.source
    event_id = serializers.CharField()
    client_id = serializers.CharField(allow_null=True)
    model_name = serializers.CharField(allow_null=True)
    reason = serializers.CharField()
    received_at = serializers.DateTimeField()


class QuarantineReleaseOutput(serializers.Serializer):
    events_scanned = serializers.IntegerField()
    events_released = serializers.IntegerField()
