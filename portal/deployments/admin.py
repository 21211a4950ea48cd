"""Admin UI of deployments: desired spec and observed status side by side, read-only; changes go through the API,
whose service admits them against the quota, records the event and nudges the reconciler."""

from __future__ import annotations

from django.contrib import admin

from portal.core.admin import ReadOnlyAdmin, ReadOnlyInline
from portal.deployments.models import Deployment, DeploymentEvent


class EventInline(ReadOnlyInline):
    model = DeploymentEvent
    show_change_link = False
    fields = readonly_fields = (
        "occurred_at",
        "phase",
        "reason",
        "message",
        "generation",
    )


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
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
    inlines = [EventInline]


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "deployment", "phase", "reason", "generation"]
    list_filter = ["phase", "reason"]
    search_fields = ["deployment__name", "deployment__team__slug", "message"]
