"""Usage endpoints: CloudEvents and OTLP/HTTP ingestion (collector tokens), cost reports, budgets, re-rating."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiTypes, extend_schema
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from rest_framework import exceptions, renderers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api.authentication import acting_user, caller_of, is_platform_admin
from portal.api.pagination import PortalPagination
from portal.api.permissions import IsPlatformAdmin
from portal.api.renderers import LIST_RENDERERS, csv_list_schema
from portal.api.team_access import team_for_request
from portal.api.views import PortalGenericView, PortalView, validated
from portal.core.errors import NotFound
from portal.core.problems import PROBLEM_CONTENT_TYPE, problem
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.models import Role, Team
from portal.tokens.models import Scope
from portal.usage import events, metrics, otlp_wire, selectors, services
from portal.usage.api import serializers
from portal.usage.api.throttling import CollectorRateThrottle
from portal.usage.contracts import BudgetStatus, EventRejection, IngestResult, UsageRecord

logger = logging.getLogger(__name__)

CLOUDEVENTS_TYPES = ("application/json", "application/cloudevents-batch+json", "application/cloudevents+json")
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")


class HasUsageWriteScope(BasePermission):
    """Collector tokens only: a service token holding 'usage:write', acting as itself."""

    message = "Only usage collector tokens (scope 'usage:write') may post usage"

    def has_permission(self, request: Request, view: APIView) -> bool:
        caller = caller_of(request)
        return (
            caller is not None
            and caller.token is not None
            and caller.on_behalf_of is None
            and Scope.USAGE_WRITE in caller.scopes
        )


def _problem_response(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        problem(status_code=status, code=code, title=title, detail=detail),
        status=status,
        headers=headers,
        content_type=PROBLEM_CONTENT_TYPE,
    )


# Schemas of what the ingestion endpoints read (shared/reference/usage-metering.md §4.2): a CloudEvents batch is a JSON
# array of events; an OTLP/JSON export is an ExportLogsServiceRequest with its resourceLogs.
CLOUDEVENTS_BATCH = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["specversion", "id", "source", "type"],
        "properties": {
            "specversion": {"type": "string"},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "data": {"type": "object"},
        },
    },
}
OTLP_JSON_REQUEST = {
    "type": "object",
    "properties": {"resourceLogs": {"type": "array", "items": {"type": "object"}}},
}
CSV_REPORT = {"type": "string", "description": "The series as CSV, one row per group, with a currency column"}


class _IngestView(PortalView):
    permission_classes = [HasUsageWriteScope]
    problem_statuses = (503,)
    throttle_classes = [CollectorRateThrottle]
    parser_classes: list[Any] = []  # the body is read here: gzip and protobuf are not DRF parsers' business
    endpoint = ""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # Collectors may send Accept: application/x-protobuf; answers are still produced.
        try:
            return super().perform_content_negotiation(request, force)
        except exceptions.NotAcceptable:
            return (renderers.JSONRenderer(), "application/json")

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, services.IngestionUnavailable | OperationalError | InterfaceError):
            logger.warning("usage ingestion unavailable: %s", exc)
            response = _problem_response(
                503,
                "ingestion_unavailable",
                "Ingestion unavailable",
                "Usage events cannot be stored right now; retry the same batch later",
                {"Retry-After": str(settings.USAGE_RETRY_AFTER_SECONDS)},
            )
        elif isinstance(exc, events.PayloadError):
            response = _problem_response(exc.status, exc.code, "Unreadable usage payload", exc.message)
        else:
            response = super().handle_exception(exc)
        metrics.BATCHES.labels(self.endpoint, str(response.status_code)).inc()
        return response

    def _decoded_body(self, request: Request) -> bytes:
        raw = request._request.body
        return events.decode_body(
            raw,
            content_encoding=request.META.get("HTTP_CONTENT_ENCODING", ""),
            max_bytes=settings.USAGE_MAX_BATCH_BYTES,
        )

    def _window(self) -> dict[str, Any]:
        return {
            "now": datetime.now(UTC),
            "max_age": timedelta(days=settings.USAGE_MAX_EVENT_AGE_DAYS),
            "max_skew": timedelta(seconds=settings.USAGE_MAX_CLOCK_SKEW_SECONDS),
            "max_events": settings.USAGE_MAX_BATCH_EVENTS,
        }

    def _ingest(self, request: Request, parsed: list[UsageRecord | EventRejection]) -> IngestResult:
        caller = caller_of(request)
        if caller is None or caller.token is None:  # the permission class guarantees both
            raise exceptions.NotAuthenticated()
        result = services.usage_ingest(token_id=caller.token.pk, parsed=parsed, endpoint=self.endpoint)
        metrics.BATCHES.labels(self.endpoint, "200").inc()
        return result


def _media_type(request: Request) -> str:
    return request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()


class UsageEventsView(_IngestView):
    endpoint = "cloudevents"

    @extend_schema(
        request={"application/cloudevents-batch+json": CLOUDEVENTS_BATCH},
        responses=serializers.IngestResultOutput,
        summary="Post a batch of usage CloudEvents (collector tokens; gzip accepted; not atomic)",
    )
    def post(self, request: Request) -> Response:
        media_type = _media_type(request)
        if media_type not in CLOUDEVENTS_TYPES:
            raise events.PayloadError(
                f"Content-Type must be one of {', '.join(CLOUDEVENTS_TYPES)}", code="unsupported_media_type", status=415
            )
        parsed = events.read_cloudevents(self._decoded_body(request), **self._window())
        return Response(serializers.ingest_result_output(self._ingest(request, parsed)))


class OtlpLogsView(_IngestView):
    endpoint = "otlp"

    @extend_schema(
        request={"application/x-protobuf": OpenApiTypes.BINARY, "application/json": OTLP_JSON_REQUEST},
        responses={
            (200, "application/json"): serializers.OtlpExportOutput,
            (200, "application/x-protobuf"): OpenApiTypes.BINARY,
        },
        summary="OTLP/HTTP logs export of the gateway's access log (collector tokens; protobuf or JSON, gzip)",
    )
    def post(self, request: Request) -> Response | HttpResponse:
        media_type = _media_type(request)
        if media_type not in (*PROTOBUF_TYPES, "application/json"):
            raise events.PayloadError(
                "Content-Type must be application/x-protobuf or application/json",
                code="unsupported_media_type",
                status=415,
            )
        body = self._decoded_body(request)
        protobuf = media_type in PROTOBUF_TYPES
        if protobuf:
            parsed = otlp_wire.read_otlp_protobuf(body, **self._window())
        else:
            parsed = events.parse_otlp(events.parse_json(body), **self._window())
        result = self._ingest(request, parsed)
        message_text = "; ".join(
            f"record {rejection.index}: {rejection.reason} ({rejection.field})" for rejection in result.rejected[:20]
        )
        if protobuf:
            answer = logs_service_pb2.ExportLogsServiceResponse()
            if result.rejected:
                answer.partial_success.rejected_log_records = len(result.rejected)
                answer.partial_success.error_message = message_text
            return HttpResponse(answer.SerializeToString(), content_type="application/x-protobuf")
        body_out: dict[str, Any] = {}
        if result.rejected:
            body_out["partialSuccess"] = {"rejectedLogRecords": str(len(result.rejected)), "errorMessage": message_text}
        return Response(body_out)


# --- reports ----------------------------------------------------------------------------------------------


class TeamCostsView(PortalView):
    renderer_classes = [renderers.JSONRenderer, serializers.CostReportCsvRenderer]

    @extend_schema(
        parameters=[serializers.CostReportQuery],
        responses={
            (200, "application/json"): serializers.CostReportOutput,
            (200, "text/csv"): CSV_REPORT,
        },
        summary="A team's token and GPU cost by day, model or credential (members read), JSON or CSV",
    )
    def get(self, request: Request, team: str) -> Response:
        team_object = team_for_request(request, team)
        query = validated(serializers.CostReportQuery, request.query_params)
        report = selectors.cost_report(
            team_ids=[team_object.pk], start=query["from"], end=query["to"], group_by=query["group_by"]
        )
        return Response(serializers.cost_report_output(report, team=team_object.slug))


class PlatformCostsView(PortalView):
    permission_classes = [IsPlatformAdmin]
    renderer_classes = [renderers.JSONRenderer, serializers.CostReportCsvRenderer]

    @extend_schema(
        parameters=[serializers.PlatformCostReportQuery],
        responses={
            (200, "application/json"): serializers.CostReportOutput,
            (200, "text/csv"): CSV_REPORT,
        },
        summary="Cost across every team (platform admins), JSON or CSV",
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.PlatformCostReportQuery, request.query_params)
        start, end, group_by = query["from"], query["to"], query["group_by"]
        team_slug = query.get("team")
        team_ids = None
        if team_slug:
            team_object = tenancy_selectors.team_get_by_slug(slug=team_slug)
            if team_object is None:
                raise NotFound(f"Team '{team_slug}' not found", code="team_not_found")
            team_ids = [team_object.pk]
        report = selectors.cost_report(team_ids=team_ids, start=start, end=end, group_by=group_by)
        return Response(serializers.cost_report_output(report, team=team_slug or None))


# --- request health -------------------------------------------------------------------------------------


class RequestHealthView(PortalGenericView):
    """The console's request-health table: platform admins see every team, members their own teams; a team that
    is not the caller's is a 404, as everywhere."""

    renderer_classes = LIST_RENDERERS
    queryset = Team.objects.none()  # for the schema generator; the view reads through selectors

    @csv_list_schema(
        serializers.RequestHealthOutput,
        summary="Requests, errors and latency per bucket and team, model or deployment, JSON or CSV",
        parameters=[serializers.RequestHealthQuery],
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.RequestHealthQuery, request.query_params)
        team_ids: list[int] | None
        if query.get("team"):
            team_ids = [team_for_request(request, query["team"]).pk]
        elif is_platform_admin(request):
            team_ids = None
        else:
            teams = tenancy_selectors.team_list_visible(user=acting_user(request), platform_admin=False)
            team_ids = list(teams.values_list("pk", flat=True))
        start, end = query["from"], query["to"]
        rows = selectors.request_health(
            team_ids=team_ids,
            start=datetime(start.year, start.month, start.day, tzinfo=UTC),
            end=datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1),
            group_by=query["group_by"],
            bucket=query["bucket"],
        )
        page: list[selectors.RequestHealthRow] | None = self.paginate_queryset(rows)  # type: ignore[arg-type]  # a list pages too
        return self.get_paginated_response(serializers.RequestHealthOutput(page or [], many=True).data)


# --- budgets ----------------------------------------------------------------------------------------------


def _budget_response(team: Team) -> Response:
    return Response(serializers.budget_output(selectors.budget_status(team=team, now=datetime.now(UTC))))


class BudgetListView(PortalGenericView):
    permission_classes = [IsPlatformAdmin]
    renderer_classes = LIST_RENDERERS
    queryset = Team.objects.none()  # for the schema generator; the view reads through selectors

    @csv_list_schema(
        serializers.BudgetOutput,
        summary="Every team's budget this month, highest burn first (platform admins), JSON or CSV",
    )
    def get(self, request: Request) -> Response:
        teams = list(tenancy_selectors.team_list_visible(user=acting_user(request), platform_admin=True))
        burning = selectors.budget_burn_list(teams=teams, now=datetime.now(UTC))
        page: list[BudgetStatus] | None = self.paginate_queryset(burning)  # type: ignore[arg-type]  # a list pages too
        return self.get_paginated_response([serializers.budget_output(status) for status in page or []])


class BudgetView(PortalView):
    @extend_schema(responses=serializers.BudgetOutput, summary="A team's budget this month (team admins)")
    def get(self, request: Request, team: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.ADMIN)
        return _budget_response(team_object)

    @extend_schema(
        request=serializers.BudgetUpdateInput,
        responses=serializers.BudgetOutput,
        summary="Set the team's alert thresholds in percent (team admins); amount and policy are in the quota",
    )
    def patch(self, request: Request, team: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.ADMIN)
        data = validated(serializers.BudgetUpdateInput, request.data)
        services.budget_thresholds_set(actor=acting_user(request), team=team_object, thresholds=data["thresholds"])
        return _budget_response(team_object)


class BudgetLiftView(PortalView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(
        request=serializers.BudgetLiftInput,
        responses=serializers.BudgetOutput,
        summary="Lift this month's budget enforcement early (platform admins, audited)",
    )
    def post(self, request: Request, team: str) -> Response:
        team_object = team_for_request(request, team)
        data = validated(serializers.BudgetLiftInput, request.data)
        services.budget_lift(actor=acting_user(request), team=team_object, reason=data["reason"])
        return _budget_response(team_object)


# --- platform operations ----------------------------------------------------------------------------------


class RerateView(PortalView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(
        request=serializers.RerateInput,
        responses=serializers.RerateOutput,
        summary="Re-rate one model's stored events from a date with the catalog prices as they are now (audited)",
    )
    def post(self, request: Request) -> Response:
        data = validated(serializers.RerateInput, request.data)
        summary = services.usage_rerate(
            actor=acting_user(request), model_slug=data["model"], since=data["since"], until=data["until"]
        )
        return Response(summary)


class QuarantineView(PortalGenericView):
    permission_classes = [IsPlatformAdmin]
    pagination_class = PortalPagination
    filter_backends: list[Any] = []  # rows come from a selector (raw SQL over the partitioned events), no queryset

    @extend_schema(
        responses=serializers.QuarantinedEventOutput(many=True),
        summary="Quarantined usage events of the lateness window, newest first, paginated (platform admins)",
    )
    def get(self, request: Request) -> Response:
        rows = selectors.quarantined_events(limit=10_000)
        page: list[dict[str, Any]] | None = self.paginate_queryset(rows)  # type: ignore[arg-type]
        return self.get_paginated_response([serializers.plain_row(row) for row in page or []])


class QuarantineReleaseView(PortalView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(
        request=serializers.QuarantineReleaseInput,
        responses=serializers.QuarantineReleaseOutput,
        summary="Attribute and rate quarantined events again, e.g. after a late key or model (platform admins)",
    )
    def post(self, request: Request) -> Response:
        data = validated(serializers.QuarantineReleaseInput, request.data)
        return Response(services.usage_quarantine_release(actor=acting_user(request), since=data["since"]))
