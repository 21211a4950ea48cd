"""Admin UI of the audit log: read-only, searchable."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from portal.core.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["occurred_at", "actor_label", "action", "target_type", "target_label", "team_slug"]
    list_filter = ["action", "target_type", "occurred_at"]
    search_fields = ["actor_label", "action", "target_label", "team_slug", "target_id"]
    date_hierarchy = "occurred_at"
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
