"""Admin UI of usage metering: collector bindings (added through the service, audited), and rollups, rollup deltas
waiting for the compactor, request health, event sources and price sets, GPU-hours, budgets and alerts, read-only,
money with its currency and budgets with how much of them is spent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from portal.core.admin import ReadOnlyAdmin, ServiceWriteAdmin, money, percent
from portal.usage import services
from portal.usage.models import (
    BudgetAlert,
    BudgetState,
    CollectorSource,
    GpuUsage,
    GpuUsageDaily,
    UsageDaily,
    UsageHourly,
    UsagePriceSet,
    UsageRequestHealth,
    UsageRollupDelta,
    UsageSource,
)


@admin.register(CollectorSource)
class CollectorSourceAdmin(ServiceWriteAdmin):
    list_display = ["token", "source_prefix", "created_at"]
    search_fields = ["source_prefix", "token__prefix", "token__name"]
    fields = ["token", "source_prefix"]
    raw_id_fields = ["token"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)  # a binding is added, never edited

    def service_create(self, request: HttpRequest, values: dict[str, Any]) -> CollectorSource:
        return services.collector_source_bind(
            actor=request.user,  # type: ignore[arg-type]
            token_id=values["token"].pk,
            source_prefix=values["source_prefix"],
        )


@admin.register(UsageDaily)
class UsageDailyAdmin(ReadOnlyAdmin):
    list_display = ["day", "team", "model_slug", "client_id", "requests", "input_tokens", "output_tokens", "amount"]
    list_filter = ["day"]
    search_fields = ["team__slug", "model_slug", "client_id"]

    @admin.display(description="cost", ordering="cost")
    def amount(self, row: UsageDaily) -> str:
        return money(row.cost)


@admin.register(UsageHourly)
class UsageHourlyAdmin(ReadOnlyAdmin):
    list_display = ["hour", "team", "model_slug", "client_id", "requests", "input_tokens", "output_tokens", "amount"]
    list_filter = ["hour"]
    search_fields = ["team__slug", "model_slug", "client_id"]

    @admin.display(description="cost", ordering="cost")
    def amount(self, row: UsageHourly) -> str:
        return money(row.cost)


@admin.register(UsageRollupDelta)
class UsageRollupDeltaAdmin(ReadOnlyAdmin):
    """Deltas not folded yet: the compactor's backlog (a long list means the `usage` workers are behind)."""

    list_display = ["id", "hour", "team_id", "model_slug", "client_id", "requests", "input_tokens", "amount"]
    search_fields = ["model_slug", "client_id"]

    @admin.display(description="cost", ordering="cost_pico")
    def amount(self, row: UsageRollupDelta) -> str:
        return money(Decimal(row.cost_pico).scaleb(-12))


@admin.register(UsageRequestHealth)
class UsageRequestHealthAdmin(ReadOnlyAdmin):
    list_display = ["hour", "team", "model_slug", "deployment_id", "requests", "errors"]
    list_filter = ["hour"]
    search_fields = ["team__slug", "model_slug"]


@admin.register(UsageSource)
class UsageSourceAdmin(ReadOnlyAdmin):
    list_display = ["id", "name"]
    search_fields = ["name"]


@admin.register(UsagePriceSet)
class UsagePriceSetAdmin(ReadOnlyAdmin):
    list_display = ["id", "price_ids"]


@admin.register(GpuUsage)
class GpuUsageAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "ended_at", "team", "deployment_name", "accelerator_type", "gpu_hours", "amount"]
    search_fields = ["team__slug", "deployment_name"]

    @admin.display(description="cost", ordering="cost")
    def amount(self, row: GpuUsage) -> str:
        return money(row.cost)


@admin.register(GpuUsageDaily)
class GpuUsageDailyAdmin(ReadOnlyAdmin):
    list_display = ["day", "team", "deployment_name", "cluster_name", "accelerator_type", "gpu_hours", "amount"]
    search_fields = ["team__slug", "deployment_name"]

    @admin.display(description="cost", ordering="cost")
    def amount(self, row: GpuUsageDaily) -> str:
        return money(row.cost)


@admin.register(BudgetState)
class BudgetStateAdmin(ReadOnlyAdmin):
    list_display = [
        "month",
        "team",
        "budget_amount",
        "spent",
        "spent_percent",
        "projected",
        "enforced_at",
        "lifted_at",
        "released_at",
    ]
    list_filter = ["month"]
    search_fields = ["team__slug"]

    @admin.display(description="budget", ordering="budget")
    def budget_amount(self, state: BudgetState) -> str:
        return money(state.budget)

    @admin.display(description="spend", ordering="spend")
    def spent(self, state: BudgetState) -> str:
        return money(state.spend)

    @admin.display(description="% of budget")
    def spent_percent(self, state: BudgetState) -> str:
        return percent(state.spend, state.budget)

    @admin.display(description="projected spend", ordering="projected_spend")
    def projected(self, state: BudgetState) -> str:
        return money(state.projected_spend)


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdmin):
    list_display = ["month", "team", "threshold", "spent", "budget_amount", "action", "created_at", "delivered_at"]
    list_filter = ["threshold", "month"]
    search_fields = ["team__slug"]

    @admin.display(description="spend", ordering="spend")
    def spent(self, alert: BudgetAlert) -> str:
        return money(alert.spend)

    @admin.display(description="budget", ordering="budget")
    def budget_amount(self, alert: BudgetAlert) -> str:
        return money(alert.budget)
