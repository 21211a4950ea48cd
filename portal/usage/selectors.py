"""Reads of usage metering: price books and model names for rating, collector bindings, cost reports from the
rollups, budget status, and quarantined events."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.db import connection
from django.db.models import Case, CharField, Count, F, Max, Min, QuerySet, Sum, Value, When

from catalog import selectors as catalog_selectors
from portal.clusters import selectors as cluster_selectors
from portal.deployments import selectors as deployment_selectors
from portal.deployments.contracts import ServedNameRef
from portal.gateway import selectors as gateway_selectors
from portal.gateway.contracts import CredentialRef
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.contracts import ALERT_ONLY, BudgetEnforcement
from portal.usage import store
from portal.usage.contracts import BudgetStatus, PriceRef
from portal.usage.models import (
    LATENCY_BOUNDS_MS,
    BudgetAlert,
    BudgetState,
    CollectorSource,
    GpuAccrualCursor,
    GpuUsageDaily,
    PriceRerate,
    TeamBudgetSettings,
    UsageDaily,
    UsageHourly,
    UsageModelDaily,
    UsageRequestHealth,
    UsageRollupDelta,
    UsageTeamDaily,
)
from portal.usage.partitions import month_start, next_month
from portal.usage.rating import PriceBook

if TYPE_CHECKING:  # types only: teams are read through tenancy's selectors
    from portal.tenancy.models import Team

ZERO = Decimal(0)
TOKEN_COLUMNS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
COUNT_COLUMNS = ("requests", "failed_requests", "unmetered_requests", *TOKEN_COLUMNS)
GROUPINGS = ("day", "model", "credential")
PLATFORM_GROUPINGS = (*GROUPINGS, "team")


# --- rating inputs ----------------------------------------------------------------------------------------


def collector_source_prefixes(*, token_id: int) -> tuple[str, ...]:
    return tuple(CollectorSource.objects.filter(token_id=token_id).values_list("source_prefix", flat=True))


def source_allowed(source: str, prefixes: Iterable[str]) -> bool:
    return any(prefix == "*" or source.startswith(prefix) for prefix in prefixes)


@dataclass(frozen=True)
class ModelRef:
    model_id: int
    slug: str


def model_names(*, names: Iterable[str]) -> dict[str, ModelRef]:
    """The catalog models these names (as a gateway reports them) stand for: a model's slug, its versions' served
    model names and provider model ids. The slug wins over a version name that happens to be another model's slug.
    Only the names asked for are read (a batch reports a handful)."""
    return {
        name: ModelRef(model_id, slug)
        for name, (model_id, slug) in catalog_selectors.model_ids_by_names(names=names).items()
    }


def served_names(*, names: Iterable[str]) -> dict[str, list[ServedNameRef]]:
    """Which team deployments served under these names, and when (see deployments.ServedName)."""
    return deployment_selectors.served_names(names=names)


def price_book(*, model_ids: Iterable[int]) -> PriceBook:
    """Every price of these models, each with its start, for lookups by event time."""
    return PriceBook(
        (row.model_id, PriceRef(row.price_id, row.usage_type, row.price_per_million, row.effective_from))
        for row in catalog_selectors.model_price_rows(model_ids=model_ids)
    )


# What ingestion reads from other tables on every batch (the collector's source bindings; the catalog's names, the
# team deployments' served names and the prices rating needs), per process, for as long as none of it changes:
# triggers on the tables it comes from (usage migration 0015) set usage_lookup_generation to a number never used
# before, when the writing transaction commits, and each batch reads that number first (one small query, where the reads cost
# about 3.5 ms of CPU a batch). The number is read before the rows, so rows are never older than the number they
# are kept under: a change that commits in between is read now and read again at the next batch. Unknown names are
# kept too (as absent): the cache is emptied past _LOOKUP_CACHE_NAMES, as names come from clients' requests.
_LOOKUP_CACHE_NAMES = 10_000


@dataclass
class IngestLookups:
    """The lookups of one generation; take it with ingest_lookups() once per batch."""

    generation: int | None
    prefixes: dict[int, tuple[str, ...]] = field(default_factory=dict)
    names: dict[str, ModelRef | None] = field(default_factory=dict)
    served: dict[str, list[ServedNameRef]] = field(default_factory=dict)
    books: dict[frozenset[int], PriceBook] = field(default_factory=dict)

    def source_prefixes(self, *, token_id: int) -> tuple[str, ...]:
        """collector_source_prefixes, kept."""
        prefixes = self.prefixes.get(token_id)
        if prefixes is None:
            prefixes = self.prefixes[token_id] = collector_source_prefixes(token_id=token_id)
        return prefixes

    def rating(
        self, *, names: Collection[str]
    ) -> tuple[dict[str, ModelRef], dict[str, list[ServedNameRef]], PriceBook]:
        """model_names, served_names and the price book of every model they stand for, kept."""
        missing = [name for name in names if name not in self.names]
        if missing:
            found = model_names(names=missing)
            self.names.update({name: found.get(name) for name in missing})
        missing = [name for name in names if name not in self.served]
        if missing:
            served_now = served_names(names=missing)
            self.served.update({name: served_now.get(name, []) for name in missing})
        models = {name: model for name in names if (model := self.names[name]) is not None}
        served = {name: holders for name in names if (holders := self.served[name])}
        candidates = frozenset(
            [model.model_id for model in models.values()]
            + [holder.model_id for holders in served.values() for holder in holders]
        )
        book = self.books.get(candidates)
        if book is None:
            book = self.books[candidates] = price_book(model_ids=candidates)
        return models, served, book


_ingest_lookups = IngestLookups(None)


def lookup_generation() -> tuple[int | None, bool]:
    """(the generation committed, whether this transaction itself changed what the lookups read)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT value, current_setting('portal.lookups_changed', true) = 'yes' "
            "FROM usage_lookup_generation WHERE id = 1"
        )
        row = cursor.fetchone()
    return (int(row[0]), bool(row[1])) if row else (None, False)


def ingest_lookups() -> IngestLookups:
    """This process's lookups for the generation in force now (one small query; see above). Inside a transaction
    that changed what they read, fresh ones that are not kept."""
    global _ingest_lookups
    generation, changed_here = lookup_generation()
    if generation is None or changed_here:
        return IngestLookups(None)
    cache = _ingest_lookups
    if cache.generation != generation or len(cache.names) > _LOOKUP_CACHE_NAMES:
        cache = _ingest_lookups = IngestLookups(generation)
    return cache


# Known credentials, per process: a client id always belongs to the same credential and team, so a found
# credential is kept for a while; an unknown one is asked again in the next batch (it may just have been issued).
_CREDENTIAL_CACHE_SECONDS = 300.0
_credential_cache: dict[str, tuple[float, CredentialRef]] = {}


def credentials_by_client_id(client_ids: Iterable[str]) -> dict[str, CredentialRef | None]:
    """Attribution is only ever through the gateway's credential record: the ids not cached are resolved in one
    query per batch."""
    now = time.monotonic()
    found: dict[str, CredentialRef | None] = {}
    missing: list[str] = []
    for client_id in set(client_ids):
        cached = _credential_cache.get(client_id)
        if cached is not None and now - cached[0] < _CREDENTIAL_CACHE_SECONDS:
            found[client_id] = cached[1]
        else:
            missing.append(client_id)
    resolved = gateway_selectors.credentials_by_client_ids(missing) if missing else {}
    if len(_credential_cache) + len(resolved) > 100_000:
        _credential_cache.clear()
    for client_id in missing:
        credential = resolved.get(client_id)
        found[client_id] = credential
        if credential is not None:
            _credential_cache[client_id] = (now, credential)
    return found


def forget_cached_credentials() -> None:
    _credential_cache.clear()


def backdated_prices(*, grace: timedelta) -> list[tuple[int, str, datetime]]:
    """Prices that took effect before they were entered (by more than `grace`) and were not re-rated yet:
    (price id, model slug, effective from)."""
    return catalog_selectors.prices_backdated(grace=grace, excluding=PriceRerate.objects.values("price_id"))


def model_exists(*, slug: str) -> ModelRef | None:
    model_id = catalog_selectors.model_id_by_slug(slug=slug)
    return ModelRef(model_id, slug) if model_id is not None else None


# --- raw events -------------------------------------------------------------------------------------------


def raw_event_totals(*, team_id: int | None = None, since: datetime | None = None) -> dict[str, Any]:
    """Counts and cost straight from the raw table (tests and the benchmark check rollups against it)."""
    totals = store.raw_totals(team_id=team_id, since=since)
    cost_pico = totals.pop("cost_pico")
    return {**totals, "cost": Decimal(cost_pico).scaleb(-12)}


def quarantined_events(*, limit: int = 200, since: datetime | None = None) -> list[dict[str, Any]]:
    moment = since or datetime.now(UTC) - timedelta(days=settings.USAGE_MAX_EVENT_AGE_DAYS)
    return store.quarantined_listing(since=moment, limit=limit)


def stored_events() -> list[dict[str, Any]]:
    """Every stored raw event, oldest first, with its source and state (tests that follow an event end to end)."""
    return store.stored_events()


# --- cost reports -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostReport:
    start: date
    end: date  # inclusive
    group_by: str
    currency: str
    totals: dict[str, Any]
    series: list[dict[str, Any]]
    gpu: list[dict[str, Any]]


def _rollups(*, team_ids: list[int] | None, start: date, end: date) -> QuerySet[UsageDaily]:
    rows = UsageDaily.objects.filter(day__gte=start, day__lte=end)
    if team_ids is not None:
        rows = rows.filter(team_id__in=team_ids)
    return rows


def _gpu(*, team_ids: list[int] | None, start: date, end: date) -> QuerySet[GpuUsageDaily]:
    """GPU accrual over whole UTC days, from its daily rollup (each day the sum of that day's GpuUsage rows)."""
    rows = GpuUsageDaily.objects.filter(day__gte=start, day__lte=end)
    if team_ids is not None:
        rows = rows.filter(team_id__in=team_ids)
    return rows


def _sums() -> dict[str, Any]:
    sums: dict[str, Any] = {column: Sum(column) for column in COUNT_COLUMNS}
    sums["token_cost"] = Sum("cost")
    return sums


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    for column in COUNT_COLUMNS:
        row[column] = row.get(column) or 0
    row["token_cost"] = row.get("token_cost") or ZERO
    return row


def cost_report(*, team_ids: list[int] | None, start: date, end: date, group_by: str) -> CostReport:
    """Totals and one series, from the daily rollups and GPU-hour accrual (never from raw events)."""
    return CostReport(
        start=start,
        end=end,
        group_by=group_by,
        currency=settings.PORTAL_CURRENCY,
        totals=cost_totals(team_ids=team_ids, start=start, end=end),
        series=cost_series(team_ids=team_ids, start=start, end=end, group_by=group_by),
        gpu=gpu_by_deployment(team_ids=team_ids, start=start, end=end),
    )


def _team_days(*, team_ids: list[int] | None, start: date, end: date) -> QuerySet[UsageTeamDaily]:
    """One row per team and day (tokens, their cost, GPU-hours and their cost): every grouping coarser than a model
    or a key reads these, a hundredth of the daily rollup's rows at a company's scale."""
    rows = UsageTeamDaily.objects.filter(day__gte=start, day__lte=end)
    if team_ids is not None:
        rows = rows.filter(team_id__in=team_ids)
    return rows


def _sums_with_gpu() -> dict[str, Any]:
    return {**_sums(), "gpu_hours": Sum("gpu_hours"), "gpu_cost": Sum("gpu_cost")}


def _clean_with_gpu(row: dict[str, Any]) -> dict[str, Any]:
    _clean(row)
    row["gpu_hours"] = row.get("gpu_hours") or ZERO
    row["gpu_cost"] = row.get("gpu_cost") or ZERO
    row["total_cost"] = row["token_cost"] + row["gpu_cost"]
    return row


def cost_totals(*, team_ids: list[int] | None, start: date, end: date) -> dict[str, Any]:
    """The totals of `cost_report`: requests, tokens, token, GPU and total cost over the range."""
    return _clean_with_gpu(dict(_team_days(team_ids=team_ids, start=start, end=end).aggregate(**_sums_with_gpu())))


def cost_series(*, team_ids: list[int] | None, start: date, end: date, group_by: str) -> list[dict[str, Any]]:
    """The series of `cost_report`: one row per day, model, credential or team. Days and teams are read from the
    team-day rollup, models across every team from the model-day rollup, the rest from the daily rollup."""
    series: list[dict[str, Any]]
    if group_by == "day":
        rows = _team_days(team_ids=team_ids, start=start, end=end).values("day").annotate(**_sums_with_gpu())
        series = [_clean_with_gpu(row) for row in rows.order_by("day")]
    elif group_by == "model":
        models: QuerySet[Any] = (
            UsageModelDaily.objects.filter(day__gte=start, day__lte=end)
            if team_ids is None
            else _rollups(team_ids=team_ids, start=start, end=end)
        )
        series = [
            _clean(row) for row in models.values("model_slug").annotate(**_sums()).order_by("-token_cost", "model_slug")
        ]
        for row in series:
            row["model"] = row.pop("model_slug")
    elif group_by == "credential":
        series = [
            _clean(row)
            for row in _rollups(team_ids=team_ids, start=start, end=end)
            .values("credential_id", "client_id", "team__slug")
            .annotate(**_sums())
            .order_by("-token_cost", "client_id")
        ]
        for row in series:
            row["team"] = row.pop("team__slug")
    elif group_by == "team":
        rows = _team_days(team_ids=team_ids, start=start, end=end).values("team__slug").annotate(**_sums_with_gpu())
        series = [_clean_with_gpu(row) for row in rows.order_by("-token_cost", "team__slug")]
        for row in series:
            row["team"] = row.pop("team__slug")
    else:  # pragma: no cover - views validate group_by
        raise ValueError(group_by)
    return series


def gpu_by_deployment(*, team_ids: list[int] | None, start: date, end: date) -> list[dict[str, Any]]:
    """The GPU rows of `cost_report`: GPU-hours and cost per team and deployment over the range."""
    gpu_rows = _gpu(team_ids=team_ids, start=start, end=end)
    return [
        {
            "team": row["team__slug"],
            "deployment": row["deployment_name"],
            "cluster": row["cluster_name"],
            "accelerator_type": row["accelerator_type"],
            "gpu_hours": row["gpu_hours"],
            "cost": row["cost"],
        }
        for row in gpu_rows.values("team__slug", "deployment_name", "cluster_name", "accelerator_type")
        .annotate(gpu_hours=Sum("gpu_hours"), cost=Sum("cost"))
        .order_by("team__slug", "deployment_name")
    ]


# --- budgets ----------------------------------------------------------------------------------------------


def team_thresholds(*, team: Team) -> tuple[int, ...]:
    own = TeamBudgetSettings.objects.filter(team=team).values_list("thresholds", flat=True).first()
    return tuple(sorted(own)) if own else tuple(settings.USAGE_BUDGET_THRESHOLDS)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    first = month_start(month)
    following = next_month(first)
    return (
        datetime(first.year, first.month, 1, tzinfo=UTC),
        datetime(following.year, following.month, 1, tzinfo=UTC),
    )


def team_month_spend(*, team_id: int, month: date) -> tuple[Decimal, Decimal]:
    """Token cost (from daily rollups) and GPU cost of one team in one month."""
    first = month_start(month)
    last = next_month(first) - timedelta(days=1)
    token_cost = UsageDaily.objects.filter(team_id=team_id, day__gte=first, day__lte=last).aggregate(total=Sum("cost"))[
        "total"
    ]
    gpu_cost = _gpu(team_ids=[team_id], start=first, end=last).aggregate(total=Sum("cost"))["total"]
    return token_cost or ZERO, gpu_cost or ZERO


def projected_month_end(*, spend: Decimal, month: date, now: datetime) -> Decimal:
    """Spend so far extrapolated at the month's run rate to its end (the spend itself once it is over)."""
    begin, end = month_bounds(month)
    if now >= end:
        return spend
    elapsed = Decimal(max((now - begin).total_seconds(), 3600.0))  # at least an hour, to damp the first minutes
    whole = Decimal((end - begin).total_seconds())
    return spend * whole / elapsed


def budget_state_get(*, team: Team, month: date) -> BudgetState | None:
    return BudgetState.objects.filter(team=team, month=month_start(month)).first()


def budget_alerts(*, team: Team, month: date) -> QuerySet[BudgetAlert]:
    return BudgetAlert.objects.filter(team=team, month=month_start(month)).order_by("threshold")


def budget_states_to_release(*, before: date) -> QuerySet[BudgetState]:
    """States of past months that brought an enforcement still applied at the gateway, unless this month's spend
    brought it again (this month's evaluation owns it then)."""
    enforced = gateway_selectors.team_budget_enforcements()
    enforced_this_month = BudgetState.objects.filter(
        month=month_start(before), enforced_at__isnull=False, lifted_at__isnull=True
    ).values_list("team_id", flat=True)
    return (
        BudgetState.objects.filter(
            month__lt=before, released_at__isnull=True, enforced_at__isnull=False, team_id__in=list(enforced)
        )
        .exclude(lifted_at__isnull=False)
        .exclude(team_id__in=enforced_this_month)
    )


def team_ids_with_budgets() -> list[int]:
    """Teams with a budget, and teams enforced now (a budget set to zero must release them)."""
    budgeted = set(tenancy_selectors.team_ids_with_a_budget())
    return sorted(budgeted | set(gateway_selectors.team_budget_enforcements()))


def alert_pending_ids() -> list[int]:
    return list(
        BudgetAlert.objects.filter(delivered_at__isnull=True, delivery_attempts__lt=10).values_list("pk", flat=True)
    )


def pending_delta_count() -> int:
    """Rollup deltas written and not folded yet (how far the rollups are behind)."""
    return UsageRollupDelta.objects.count()


def hourly_rollup_summary(*, team_id: int) -> dict[str, Any]:
    return dict(
        UsageHourly.objects.filter(team_id=team_id).aggregate(
            requests=Sum("requests"), cost=Sum("cost"), buckets=Count("id"), last=Max("hour")
        )
    )


def pool_prices() -> dict[tuple[int, str], Decimal]:
    """The hourly GPU price of every accelerator pool, by (cluster id, accelerator type)."""
    return cluster_selectors.pool_hourly_prices()


def gpu_accrual_due() -> list[int]:
    """Deployments whose GPU-hours may have grown: replicas running at the last accrual, or replica changes
    observed since (or never accrued yet). Idle and gone deployments cost nothing to check."""
    cursors = list(GpuAccrualCursor.objects.values_list("deployment_id", "sampled_at", "observed_replicas"))
    accrued_until = {deployment_id: sampled_at for deployment_id, sampled_at, _ in cursors}
    running = {deployment_id for deployment_id, _, replicas in cursors if replicas > 0}
    changed = {
        deployment_id
        for deployment_id, latest in deployment_selectors.replica_change_latest_by_deployment().items()
        if deployment_id not in accrued_until or accrued_until[deployment_id] < latest
    }
    return sorted(running | changed)


def budget_status(*, team: Team, now: datetime) -> BudgetStatus:
    """The team's budget this month, with spend live from the rollups and GPU accrual."""
    return budget_statuses(teams=[team], now=now)[0]


def budget_statuses(*, teams: list[Team], now: datetime) -> list[BudgetStatus]:
    """The budget of each team this month, in the order given: one query per table for all of them (the console's
    overview shows every team's burn; `budget_status` is this for one team)."""
    month = month_start(now)
    first = month
    last = next_month(first) - timedelta(days=1)
    team_ids = [team.pk for team in teams]
    quotas = tenancy_selectors.teams_budget_terms(team_ids=team_ids)
    month_costs = {
        row["team_id"]: row
        for row in _team_days(team_ids=team_ids, start=first, end=last)
        .values("team_id")
        .annotate(token_cost=Sum("cost"), gpu_cost=Sum("gpu_cost"))
    }
    states = {state.team_id: state for state in BudgetState.objects.filter(team_id__in=team_ids, month=first)}
    enforced = gateway_selectors.team_budget_enforcements(team_ids=team_ids)
    own_thresholds = dict(TeamBudgetSettings.objects.filter(team_id__in=team_ids).values_list("team_id", "thresholds"))
    alerts: dict[int, list[BudgetAlert]] = {}
    for alert in BudgetAlert.objects.filter(team_id__in=team_ids, month=first).order_by("threshold"):
        alerts.setdefault(alert.team_id, []).append(alert)
    statuses = []
    for team in teams:
        quota = quotas.get(team.pk)
        budget = quota.monthly_budget if quota is not None else ZERO
        costs = month_costs.get(team.pk) or {}
        token_cost = costs.get("token_cost") or ZERO
        gpu_cost = costs.get("gpu_cost") or ZERO
        spend = token_cost + gpu_cost
        state = states.get(team.pk)
        thresholds = own_thresholds.get(team.pk)
        statuses.append(
            BudgetStatus(
                team_slug=team.slug,
                month=month,
                currency=settings.PORTAL_CURRENCY,
                budget=budget,
                spend=spend,
                token_cost=token_cost,
                gpu_cost=gpu_cost,
                projected_spend=projected_month_end(spend=spend, month=month, now=now),
                percent=(spend * 100 / budget) if budget > 0 else ZERO,
                thresholds=tuple(sorted(thresholds)) if thresholds else tuple(settings.USAGE_BUDGET_THRESHOLDS),
                policy=quota.budget_policy if quota is not None else ALERT_ONLY,
                enforcement=enforced.get(team.pk, BudgetEnforcement.NONE).value,
                lifted_at=state.lifted_at if state is not None else None,
                alerts=tuple(
                    (alert.threshold, alert.created_at, alert.delivered_at) for alert in alerts.get(team.pk, ())
                ),
            )
        )
    return statuses


def budget_burn_list(*, teams: list[Team], now: datetime) -> list[BudgetStatus]:
    """The teams given that have a monthly budget, highest burn first (then by slug): the console's burn table and
    `GET /api/v1/budgets`."""
    statuses = [status for status in budget_statuses(teams=teams, now=now) if status.budget > 0]
    return sorted(statuses, key=lambda status: (-status.percent, status.team_slug))


# --- console reads (the same rollups and accrual as the cost reports) -------------------------------------


def cost_by_day_and_team(
    *, team_ids: list[int] | None, start: date, end: date, teams: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """Token, GPU and total cost per day and team, oldest day first: each day's rows add up to that day of
    `cost_report(group_by="day")`, each team's to its row of `cost_report(group_by="team")`. Given `teams` (slugs),
    every other team is summed per day into one row whose team is None (a stacked chart's "other teams")."""
    stack: Any = F("team__slug")
    if teams is not None:
        stack = Case(
            When(team__slug__in=list(teams), then=F("team__slug")), default=Value(None), output_field=CharField()
        )
    rows = (
        _team_days(team_ids=team_ids, start=start, end=end)
        .annotate(stack=stack)
        .values("day", "stack")
        .annotate(token_cost=Sum("cost"), gpu_cost=Sum("gpu_cost"))
        .order_by("day", "stack")
    )
    return [
        {
            "day": row["day"],
            "team": row["stack"],
            "token_cost": row["token_cost"],
            "gpu_cost": row["gpu_cost"],
            "total_cost": row["token_cost"] + row["gpu_cost"],
        }
        for row in rows
    ]


def model_cost_by_team(*, model_slug: str, team_ids: list[int] | None, start: date, end: date) -> list[dict[str, Any]]:
    """Requests, tokens and token cost of one model per team, highest cost first (the model rows of
    `cost_report(group_by="model")`, split by team)."""
    rows = (
        _rollups(team_ids=team_ids, start=start, end=end)
        .filter(model_slug=model_slug)
        .values("team__slug")
        .annotate(**_sums())
        .order_by("-token_cost", "team__slug")
    )
    series = [_clean(row) for row in rows]
    for row in series:
        row["team"] = row.pop("team__slug")
    return series


def deployment_gpu_by_day(*, deployment_id: int, start: date, end: date) -> list[dict[str, Any]]:
    """GPU-hours and their cost of one deployment per UTC day, oldest first (its rows of `cost_report().gpu`)."""
    rows = (
        _gpu(team_ids=None, start=start, end=end)
        .filter(deployment_id=deployment_id)
        .values("day")
        .annotate(gpu_hours=Sum("gpu_hours"), cost=Sum("cost"))
        .order_by("day")
    )
    return [{"day": row["day"], "gpu_hours": row["gpu_hours"] or ZERO, "cost": row["cost"] or ZERO} for row in rows]


def gpu_usage_by_pool(*, start: date, end: date) -> dict[tuple[str, str], dict[str, Decimal]]:
    """GPU-hours and cost per (cluster name, accelerator type) over the range, from the accrual."""
    return {
        (row["cluster_name"], row["accelerator_type"]): {"gpu_hours": row["gpu_hours"], "cost": row["cost"]}
        for row in _gpu(team_ids=None, start=start, end=end)
        .values("cluster_name", "accelerator_type")
        .annotate(gpu_hours=Sum("gpu_hours"), cost=Sum("cost"))
    }


@dataclass(frozen=True)
class IngestionHealth:
    quarantined: int  # events of the lateness window held in quarantine
    pending_buckets: int  # rollup deltas written by ingestion, re-rating or release and not yet folded
    oldest_pending_hour: datetime | None


def ingestion_health(*, now: datetime) -> IngestionHealth:
    """What the overview shows of ingestion: the quarantine's size (its partial index, not a scan of the events) and
    the rollup backlog (deltas the compactor has not folded yet), whose oldest hour is how far the reports lag."""
    since = now - timedelta(days=settings.USAGE_MAX_EVENT_AGE_DAYS)
    quarantined = store.quarantined_count(since=since)
    backlog = UsageRollupDelta.objects.aggregate(pending=Count("id"), oldest=Min("hour"))
    return IngestionHealth(
        quarantined=quarantined, pending_buckets=int(backlog["pending"] or 0), oldest_pending_hour=backlog["oldest"]
    )


# --- request health ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestHealthRow:
    """Requests, errors and latency of one group in one bucket, from the hourly request-health rollup; percentiles
    are None where no request reported the measure."""

    bucket_start: datetime
    key: str
    requests: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


def histogram_percentile(counts: Sequence[int], quantile: float) -> float | None:
    """The `quantile` of a LATENCY_BOUNDS_MS histogram, interpolated linearly inside its bucket (the last, open
    bucket answers its lower bound); None for an empty histogram."""
    total = sum(counts)
    if total == 0:
        return None
    rank = quantile * total
    lower = 0.0
    seen = 0
    for index, count in enumerate(counts):
        upper = float(LATENCY_BOUNDS_MS[index]) if index < len(LATENCY_BOUNDS_MS) else None
        if count and seen + count >= rank:
            if upper is None:
                return lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = upper if upper is not None else lower
    return lower


def _summed(total: list[int], more: Sequence[int]) -> list[int]:
    if not total:
        return list(more)
    return [a + b for a, b in zip(total, more, strict=False)] if more else total


def request_health(
    *,
    team_ids: Collection[int] | None,
    start: datetime,
    end: datetime,
    group_by: Literal["team", "model", "deployment"],
    bucket: Literal["hour", "day"],
) -> list[RequestHealthRow]:
    """Request health of [start, end) per hour or day and per team, model or deployment, from the hourly rollup (never
    raw events). `team_ids` None: every team. Grouped by deployment, requests to managed models (no deployment) are
    left out. Rows are ordered by bucket, then key."""
    rows = UsageRequestHealth.objects.filter(hour__gte=start, hour__lt=end)
    if team_ids is not None:
        rows = rows.filter(team_id__in=list(team_ids))
    if group_by == "deployment":
        rows = rows.exclude(deployment_id=0)
    values = list(
        rows.values_list(
            "hour", "team__slug", "model_slug", "deployment_id", "requests", "errors", "latency_buckets", "ttft_buckets"
        )
    )
    names: dict[int, str] = {}
    if group_by == "deployment":
        names = deployment_selectors.deployment_names_by_ids(deployment_ids={row[3] for row in values})
    groups: dict[tuple[datetime, str], list[Any]] = {}
    for hour, team_slug, model_slug, deployment_id, requests, errors, latency, ttft in values:
        moment = hour.astimezone(UTC)
        bucket_start = moment if bucket == "hour" else moment.replace(hour=0)
        if group_by == "team":
            key = team_slug
        elif group_by == "model":
            key = model_slug
        else:
            key = names.get(deployment_id, str(deployment_id))
        group = groups.setdefault((bucket_start, key), [0, 0, [], []])
        group[0] += requests
        group[1] += errors
        group[2] = _summed(group[2], latency or [])
        group[3] = _summed(group[3], ttft or [])
    return [
        RequestHealthRow(
            bucket_start=bucket_start,
            key=key,
            requests=requests,
            errors=errors,
            error_rate=errors / requests if requests else None,
            p50_ms=histogram_percentile(latency, 0.5),
            p95_ms=histogram_percentile(latency, 0.95),
            ttft_p50_ms=histogram_percentile(ttft, 0.5),
            ttft_p95_ms=histogram_percentile(ttft, 0.95),
        )
        for (bucket_start, key), (requests, errors, latency, ttft) in sorted(groups.items())
    ]
