"""Console pages: each resolves who may see what, reads the selectors the API answers from, and renders a template.
Figures are never computed here twice: a page shows what the selector returned, shaped for a table or a chart."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from catalog import selectors as catalog_selectors
from portal.clusters import selectors as cluster_selectors
from portal.console import charts
from portal.console.ranges import DateRange, RangeInvalid, date_range
from portal.core.audit import audit_event_list
from portal.core.errors import NotFound
from portal.deployments import selectors as deployment_selectors
from portal.gateway import selectors as gateway_selectors
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.models import Role, Team, User
from portal.usage import selectors as usage_selectors
from portal.usage.api.serializers import HEALTH_BUCKETS, HEALTH_GROUPINGS, cost_report_csv, cost_report_output
from portal.usage.partitions import month_start

TOP = 10
STACKED_TEAMS = 8
API_PREFIX = "/api/v1/"
LIST_CSV_QUERY = "format=csv&page_size=200"  # the API's largest page: a table's whole list in one file up to that
AUDIT_ROWS = 50
EVENT_ROWS = 50

Page = Callable[..., HttpResponse]


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # behind login_required
    return user


def _platform_admin(request: HttpRequest) -> bool:
    """Staff are platform admins, as for the API's staff sessions (portal/api/authentication.py)."""
    return bool(_user(request).is_staff)


def console_page(view: Page) -> Page:
    """Signed in through the console or the admin; a page the viewer may not see, or that does not exist, is a 404
    page; a bad range is a 400 page naming the field and the reason, and nothing is read."""

    @login_required(login_url="console:login")
    @wraps(view)
    def page(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound as error:
            return render(request, "console/problem.html", {"title": "Not found", "detail": error.detail}, status=404)
        except RangeInvalid as error:
            detail = f"{error.problem.field}: {error.problem.message}"
            context = {"title": "Invalid date range", "detail": detail, "field": error.problem.field}
            return render(request, "console/problem.html", context, status=400)

    return page


def _require_platform_admin(request: HttpRequest) -> None:
    if not _platform_admin(request):
        raise NotFound("This page is for platform admins", code="not_found")


def _range(request: HttpRequest) -> DateRange:
    return date_range(request.GET, today=datetime.now(UTC).date())


def _visible_team_ids(request: HttpRequest) -> list[int] | None:
    """None for platform admins (every team), else the viewer's own teams."""
    if _platform_admin(request):
        return None
    teams = tenancy_selectors.team_list_visible(user=_user(request), platform_admin=False)
    return list(teams.values_list("pk", flat=True))


def _team(request: HttpRequest, slug: str) -> Team:
    return tenancy_selectors.team_get_visible(slug=slug, user=_user(request), platform_admin=_platform_admin(request))


def _csv_link(request: HttpRequest, days: DateRange, *, group_by: str, team: Team | None = None) -> str:
    """The API's CSV of the same report. Staff sessions read the API directly; members' sessions are not API
    callers (the API takes sessions from staff only), so their link is the console's door to the same CSV."""
    query = urlencode({**days.query, "group_by": group_by, "format": "csv"})
    if team is None:
        return f"{reverse('costs')}?{query}"
    if _platform_admin(request):
        return f"{reverse('team-costs', kwargs={'team': team.slug})}?{query}"
    return f"{reverse('console:team-costs-csv', kwargs={'team_slug': team.slug})}?{query}"


def _list_csv_link(request: HttpRequest, url_name: str, /, query: dict[str, str] | None = None, **kwargs: str) -> str:
    """The API's CSV of a list (`?format=csv`), with the page's filters in `query`: staff read the API directly,
    members through the console's door to the same view (`portal.api.renderers.console_list_csv`, routed by the
    project's URL map)."""
    api_path = reverse(url_name, kwargs=kwargs)
    filters = f"&{urlencode(query)}" if query else ""
    if _platform_admin(request):
        return f"{api_path}?{LIST_CSV_QUERY}{filters}"
    door = reverse("console-list-csv", kwargs={"api_path": api_path.removeprefix(API_PREFIX)})
    return f"{door}?{LIST_CSV_QUERY}{filters}"


def _audit_query(team: Team, days: DateRange) -> dict[str, str]:
    """The audit API's filters for a team's trail over the page's range ([since, until), as the API reads them)."""
    return {"team": team.slug, "since": days.begin_at.isoformat(), "until": days.end_at.isoformat()}


def _base(request: HttpRequest, days: DateRange, **extra: Any) -> dict[str, Any]:
    return {
        "days": days,
        "currency": settings.PORTAL_CURRENCY,
        "platform_admin": _platform_admin(request),
        "my_teams": tenancy_selectors.team_list_visible(user=_user(request), platform_admin=False),
        "chart_asset": charts.asset_available(),
        **extra,
    }


# --- company overview -------------------------------------------------------------------------------------


def _previous_month(today: date) -> tuple[date, date]:
    end = month_start(today) - timedelta(days=1)
    return end.replace(day=1), end


@console_page
def overview(request: HttpRequest) -> HttpResponse:
    if not _platform_admin(request):
        return render(request, "console/my_teams.html", _base(request, _range(request)))
    days = _range(request)
    now = datetime.now(UTC)
    today = now.date()
    totals = usage_selectors.cost_totals(team_ids=None, start=days.start, end=days.end)
    month_to_date = DateRange(month_start(today), today)
    this_month = (
        totals
        if days == month_to_date
        else usage_selectors.cost_totals(team_ids=None, start=month_to_date.start, end=today)
    )
    last_start, last_end = _previous_month(today)
    last_month = usage_selectors.cost_totals(team_ids=None, start=last_start, end=last_end)
    by_team = usage_selectors.cost_series(team_ids=None, start=days.start, end=days.end, group_by="team")
    by_model = usage_selectors.cost_series(team_ids=None, start=days.start, end=days.end, group_by="model")
    by_day = usage_selectors.cost_series(team_ids=None, start=days.start, end=days.end, group_by="day")
    # The stack's leaders from the team report, the other teams summed per day by the database.
    team_totals = {row["team"]: row["total_cost"] for row in by_team}
    leaders = charts.leading_teams(team_totals, top=STACKED_TEAMS)
    day_team = usage_selectors.cost_by_day_and_team(team_ids=None, start=days.start, end=days.end, teams=leaders)
    teams = list(tenancy_selectors.team_list_visible(user=_user(request), platform_admin=True))
    budgets = usage_selectors.budget_burn_list(teams=teams, now=now)
    spend_stack = charts.stacked_by_team(day_team, top=STACKED_TEAMS, team_totals=team_totals)
    context = _base(
        request,
        days,
        this_month=this_month["total_cost"],
        this_month_start=month_to_date.start,
        projected=usage_selectors.projected_month_end(spend=this_month["total_cost"], month=today, now=now),
        last_month=last_month["total_cost"],
        last_month_start=last_start,
        totals=totals,
        top_teams=by_team[:TOP],
        top_models=by_model[:TOP],
        by_day=by_day,
        spend_stack=spend_stack,
        budgets=budgets,
        csv_budgets=_list_csv_link(request, "budgets"),
        csv_not_ready=_list_csv_link(request, "deployment-not-ready-list"),
        ingestion=usage_selectors.ingestion_health(now=now),
        not_ready=list(deployment_selectors.deployments_not_ready()[:100]),
        quota_requests_pending=tenancy_selectors.quota_request_list(status="pending").count(),
        csv_team=_csv_link(request, days, group_by="team"),
        csv_model=_csv_link(request, days, group_by="model"),
        csv_day=_csv_link(request, days, group_by="day"),
        chart_spend=charts.stacked_chart(spend_stack),
        chart_tokens=charts.token_chart(by_day),
    )
    return render(request, "console/overview.html", context)


# --- team -------------------------------------------------------------------------------------------------


@console_page
def team(request: HttpRequest, team_slug: str) -> HttpResponse:
    team_object = _team(request, team_slug)
    days = _range(request)
    now = datetime.now(UTC)
    platform_admin = _platform_admin(request)
    role = None if platform_admin else tenancy_selectors.membership_role(team=team_object, user=_user(request))
    by_day = usage_selectors.cost_report(team_ids=[team_object.pk], start=days.start, end=days.end, group_by="day")
    by_model = usage_selectors.cost_series(team_ids=[team_object.pk], start=days.start, end=days.end, group_by="model")
    by_key = usage_selectors.cost_series(
        team_ids=[team_object.pk], start=days.start, end=days.end, group_by="credential"
    )
    gpu_by_deployment: dict[str, dict[str, Decimal]] = {}
    for row in by_day.gpu:
        totals = gpu_by_deployment.setdefault(row["deployment"], {"gpu_hours": Decimal(0), "cost": Decimal(0)})
        totals["gpu_hours"] += row["gpu_hours"]
        totals["cost"] += row["cost"]
    deployments = [
        (deployment, gpu_by_deployment.get(deployment.name))
        for deployment in deployment_selectors.deployment_list(team=team_object)
    ]
    # The budget is the API's team-admin read (GET /teams/{team}/budget); the audit trail its platform-admin read.
    sees_budget = platform_admin or tenancy_selectors.role_at_least(role, Role.ADMIN)
    context = _base(
        request,
        days,
        team=team_object,
        role=role,
        totals=by_day.totals,
        by_day=by_day.series,
        by_model=by_model,
        by_key=by_key,
        deployments=deployments,
        budget=usage_selectors.budget_status(team=team_object, now=now) if sees_budget else None,
        credentials=list(gateway_selectors.credential_list(team=team_object)),
        credential_state=gateway_selectors.credential_state,
        members=list(tenancy_selectors.team_member_list(team=team_object)),
        audit=(
            list(audit_event_list(team_slug=team_object.slug, since=days.begin_at, until=days.end_at)[:AUDIT_ROWS])
            if platform_admin
            else None
        ),
        csv_audit=_list_csv_link(request, "audit-events", _audit_query(team_object, days)) if platform_admin else None,
        csv_day=_csv_link(request, days, group_by="day", team=team_object),
        csv_model=_csv_link(request, days, group_by="model", team=team_object),
        csv_key=_csv_link(request, days, group_by="credential", team=team_object),
        csv_deployments=_list_csv_link(request, "deployment-list", team=team_object.slug),
        csv_keys=_list_csv_link(request, "credential-list", team=team_object.slug),
        csv_members=_list_csv_link(request, "team-members", team=team_object.slug),
        chart_cost=charts.cost_chart(by_day.series),
    )
    context["credentials"] = [
        (credential, gateway_selectors.credential_state(credential, now=now)) for credential in context["credentials"]
    ]
    return render(request, "console/team.html", context)


@console_page
def team_costs_csv(request: HttpRequest, team_slug: str) -> HttpResponse:
    """The team cost API's CSV for members signed in to the console: the same selector, the same serializer and
    the same CSV writer as `GET /api/v1/teams/{team}/costs?format=csv`, byte for byte."""
    team_object = _team(request, team_slug)
    days = _range(request)
    group_by = request.GET.get("group_by") or "day"
    if group_by not in usage_selectors.GROUPINGS:
        detail = f"group_by: must be one of {', '.join(usage_selectors.GROUPINGS)}"
        return render(request, "console/problem.html", {"title": "Invalid grouping", "detail": detail}, status=400)
    report = usage_selectors.cost_report(team_ids=[team_object.pk], start=days.start, end=days.end, group_by=group_by)
    body = cost_report_csv(cost_report_output(report, team=team_object.slug))
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{team_object.slug}-costs-{group_by}.csv"'
    return response


# --- one deployment ---------------------------------------------------------------------------------------


@console_page
def deployment(request: HttpRequest, team_slug: str, deployment_name: str) -> HttpResponse:
    team_object = _team(request, team_slug)
    days = _range(request)
    found = deployment_selectors.deployment_get(team=team_object, name=deployment_name)
    gpu_days = usage_selectors.deployment_gpu_by_day(deployment_id=found.pk, start=days.start, end=days.end)
    context = _base(
        request,
        days,
        team=team_object,
        deployment=found,
        gpu_days=gpu_days,
        gpu_hours=sum((row["gpu_hours"] for row in gpu_days), Decimal(0)),
        gpu_cost=sum((row["cost"] for row in gpu_days), Decimal(0)),
        events=list(deployment_selectors.deployment_events(deployment=found)[:EVENT_ROWS]),
        csv_events=_list_csv_link(request, "deployment-events", team=team_object.slug, name=found.name),
        csv_day=_csv_link(request, days, group_by="day", team=team_object),
        chart_gpu=charts.gpu_chart(gpu_days),
    )
    return render(request, "console/deployment.html", context)


# --- one catalog model ------------------------------------------------------------------------------------


@console_page
def model(request: HttpRequest, model_slug: str) -> HttpResponse:
    platform_admin = _platform_admin(request)
    found = catalog_selectors.catalog_model_get_visible(
        slug=model_slug, user=_user(request), platform_admin=platform_admin
    )
    days = _range(request)
    team_ids = _visible_team_ids(request)
    spend = usage_selectors.model_cost_by_team(model_slug=found.slug, team_ids=team_ids, start=days.start, end=days.end)
    context = _base(
        request,
        days,
        model=found,
        versions=sorted(found.versions.all(), key=lambda version: version.version),
        deployments=list(deployment_selectors.deployment_list_for_model(model_id=found.pk, team_ids=team_ids)),
        spend=spend,
        spend_total=sum((row["token_cost"] for row in spend), Decimal(0)),
        csv_model=_csv_link(request, days, group_by="model") if platform_admin else None,
        csv_versions=_list_csv_link(request, "catalog-model-versions", model=found.slug),
        csv_deployments=_list_csv_link(request, "model-deployments", model=found.slug),
        chart_spend=charts.team_bar_chart(spend),
    )
    return render(request, "console/model.html", context)


# --- fleet ------------------------------------------------------------------------------------------------


@console_page
def fleet(request: HttpRequest) -> HttpResponse:
    _require_platform_admin(request)
    days = _range(request)
    clusters = list(cluster_selectors.cluster_list())
    allocated = deployment_selectors.gpus_allocated_by_cluster_and_type()
    usage = usage_selectors.gpu_usage_by_pool(start=days.start, end=days.end)
    policies = gateway_selectors.gateway_policies_by_cluster_id()
    pools = []
    for cluster in clusters:
        for pool in cluster.pools.all():
            capacity = cluster_selectors.pool_capacity(pool=pool, allocated=allocated)
            pool_usage = usage.get((cluster.name, pool.accelerator_type), {})
            pools.append(
                {
                    "cluster": cluster,
                    "pool": pool,
                    "capacity": capacity,
                    "percent": Decimal(capacity.allocated * 100) / capacity.total if capacity.total else Decimal(0),
                    "gpu_hours": pool_usage.get("gpu_hours") or Decimal(0),
                    "cost": pool_usage.get("cost") or Decimal(0),
                }
            )
    # The accelerator-types API's rows (GET /api/v1/accelerator-types), from the same holdings as the pools above.
    types = cluster_selectors.accelerator_type_capacity(allocated=allocated)
    context = _base(
        request,
        days,
        clusters=[(cluster, policies.get(cluster.pk)) for cluster in clusters],
        pools=pools,
        types=types,
        csv_team=_csv_link(request, days, group_by="team"),
        csv_clusters=_list_csv_link(request, "cluster-list"),
        csv_types=_list_csv_link(request, "accelerator-type-list"),
        chart_pools=charts.pool_chart(pools),
    )
    return render(request, "console/fleet.html", context)


# --- request health ---------------------------------------------------------------------------------------

# HEALTH_GROUPINGS and HEALTH_BUCKETS are the request-health API's (GET /api/v1/request-health), whose CSV the table
# links to with the page's choices.


@console_page
def requests(request: HttpRequest) -> HttpResponse:
    days = _range(request)
    group_by = request.GET.get("group_by") or "team"
    if group_by not in HEALTH_GROUPINGS:
        detail = f"group_by: must be one of {', '.join(HEALTH_GROUPINGS)}"
        return render(request, "console/problem.html", {"title": "Invalid grouping", "detail": detail}, status=400)
    bucket = request.GET.get("bucket") or "day"
    if bucket not in HEALTH_BUCKETS:
        detail = f"bucket: must be one of {', '.join(HEALTH_BUCKETS)}"
        return render(request, "console/problem.html", {"title": "Invalid bucket", "detail": detail}, status=400)
    # From the status, duration and time-to-first-token fields of usage events, kept in the hourly request-health rollup.
    rows = usage_selectors.request_health(
        team_ids=_visible_team_ids(request),
        start=days.begin_at,
        end=days.end_at,
        group_by=group_by,  # type: ignore[arg-type]  # checked against HEALTH_GROUPINGS above
        bucket=bucket,  # type: ignore[arg-type]  # checked against HEALTH_BUCKETS above
    )
    context = _base(
        request,
        days,
        rows=rows,
        group_by=group_by,
        bucket=bucket,
        groupings=HEALTH_GROUPINGS,
        buckets=HEALTH_BUCKETS,
        chart_errors=charts.health_chart(rows),
        csv_health=_list_csv_link(request, "request-health", {**days.query, "group_by": group_by, "bucket": bucket}),
    )
    return render(request, "console/requests.html", context)
