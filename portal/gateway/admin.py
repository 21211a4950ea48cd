"""Admin UI of the gateway: read-only views of credentials, policies and provider backends (never their secrets).
Changes go through the API, whose services audit them and push them to the gateways."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from portal.gateway.models import ClusterGatewayPolicy, Credential, ProviderBackend, TeamGatewayPolicy


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Credential)
class CredentialAdmin(ReadOnlyAdmin):
    list_display = ("key_prefix", "name", "team", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("team",)
    search_fields = ("name", "key_id", "team__slug")
    exclude = ("key_hash", "key_ciphertext")


@admin.register(ProviderBackend)
class ProviderBackendAdmin(ReadOnlyAdmin):
    list_display = ("name", "cluster", "provider", "hostname", "region")
    exclude = ("credential_ciphertext",)


@admin.register(TeamGatewayPolicy)
class TeamGatewayPolicyAdmin(ReadOnlyAdmin):
    list_display = ("team", "budget_enforcement", "generation", "updated_at")


@admin.register(ClusterGatewayPolicy)
class ClusterGatewayPolicyAdmin(ReadOnlyAdmin):
    list_display = ("cluster", "generation", "observed_generation", "phase", "last_reconciled_at")
    exclude = ("applied_fingerprint",)
