"""Admin UI of API tokens: tokens are listed by prefix (the hash is never shown) and revoked through the service;
they are issued through the API or `manage.py issue_token`, which show the token once."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from portal.core.admin import ReadOnlyAdmin
from portal.tokens import services
from portal.tokens.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["prefix", "name", "principal", "scopes", "expires_at", "revoked_at", "last_used_at", "created_at"]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["prefix", "name", "principal__username", "principal__backstage_ref"]
    exclude = ["token_hash"]
    actions = ["revoke"]

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            services.api_token_revoke(actor=request.user, token_id=token.pk, principal=None)  # type: ignore[arg-type]
        self.message_user(request, f"{queryset.count()} token(s) revoked", messages.SUCCESS)
