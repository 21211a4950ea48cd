"""Admin UI of usage metering: collector bindings, rollups, GPU-hours, budgets and alerts (read-mostly)."""

from __future__ import annotations

from django.contrib import admin

from portal.usage.models import BudgetAlert, BudgetState, CollectorSource, GpuUsage, UsageDaily


@admin.register(CollectorSource)
class CollectorSourceAdmin(admin.ModelAdmin):
    list_display = ["token", "source_prefix", "created_at"]
    search_fields = ["source_prefix", "token__prefix", "token__name"]
    raw_id_fields = ["token"]


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(UsageDaily)
class UsageDailyAdmin(_ReadOnlyAdmin):
    list_display = ["day", "team", "model_slug", "client_id", "requests", "input_tokens", "output_tokens", "cost"]
    list_filter = ["day"]
    search_fields = ["team__slug", "model_slug", "client_id"]


@admin.register(GpuUsage)
class GpuUsageAdmin(_ReadOnlyAdmin):
    list_display = ["started_at", "ended_at", "team", "deployment_name", "accelerator_type", "gpu_hours", "cost"]
    search_fields = ["team__slug", "deployment_name"]


@admin.register(BudgetState)
class BudgetStateAdmin(_ReadOnlyAdmin):
    list_display = ["month", "team", "budget", "spend", "projected_spend", "enforcement", "lifted_at", "released_at"]
    list_filter = ["enforcement", "month"]
    search_fields = ["team__slug"]


@admin.register(BudgetAlert)
class BudgetAlertAdmin(_ReadOnlyAdmin):
    list_display = ["month", "team", "threshold", "spend", "budget", "action", "created_at", "delivered_at"]
    list_filter = ["threshold", "month"]
    search_fields = ["team__slug"]
