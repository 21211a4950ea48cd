"""Admin UI of the API plumbing: stored responses of idempotent POSTs (their bodies are never shown)."""

from __future__ import annotations

from django.contrib import admin

from portal.api.models import IdempotencyRecord
from portal.core.admin import ReadOnlyAdmin


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ["key", "principal_key", "method", "path", "response_status", "created_at", "completed_at"]
    search_fields = ["key", "principal_key", "path"]
    exclude = ["response_body"]
