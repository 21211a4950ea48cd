"""Admin UI of API access: tokens are listed by prefix; the hash is never shown."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from portal.api import services
from portal.api.models import ApiToken, IdempotencyRecord


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "principal", "scopes", "expires_at", "revoked_at", "last_used_at", "created_at"]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["prefix", "name", "principal__username", "principal__backstage_ref"]
    exclude = ["token_hash"]
    readonly_fields = [
        "principal",
        "prefix",
        "scopes",
        "created_by",
        "last_used_at",
        "revoked_at",
        "created_at",
        "updated_at",
    ]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tokens are issued through the API or `manage.py issue_token`, which show the token once.
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            services.api_token_revoke(actor=request.user, token_id=token.pk, principal=None)  # type: ignore[arg-type]
        self.message_user(request, f"{queryset.count()} token(s) revoked", messages.SUCCESS)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["key", "principal_key", "method", "path", "response_status", "created_at", "completed_at"]
    search_fields = ["key", "principal_key", "path"]
    exclude = ["response_body"]
    readonly_fields = [
        "principal_key",
        "key",
        "method",
        "path",
        "request_hash",
        "response_status",
        "response_content_type",
        "response_headers",
        "created_at",
        "completed_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
