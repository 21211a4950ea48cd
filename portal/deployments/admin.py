"""Admin UI of deployments: desired spec and observed status side by side; changes go through the API."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from portal.deployments.models import Deployment, DeploymentEvent


class EventInline(admin.TabularInline):
    model = DeploymentEvent
    extra = 0
    can_delete = False
    readonly_fields = ["occurred_at", "phase", "reason", "message", "generation"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "team",
        "model_version",
        "cluster",
        "accelerator_type",
        "max_replicas",
        "phase",
        "generation",
        "observed_generation",
        "last_reconciled_at",
    ]
    list_filter = ["phase", "cluster", "accelerator_type"]
    search_fields = ["name", "team__slug", "served_model_name", "model_version__model__slug"]
    readonly_fields = [field.name for field in Deployment._meta.fields]
    inlines = [EventInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # placement and quota admission happen in the service, through the API


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(admin.ModelAdmin):
    list_display = ["occurred_at", "deployment", "phase", "reason", "generation"]
    list_filter = ["phase", "reason"]
    search_fields = ["deployment__name", "deployment__team__slug", "message"]
    readonly_fields = ["deployment", "occurred_at", "phase", "reason", "message", "generation"]
