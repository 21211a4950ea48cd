"""Admin UI of the gateway: read-only views of credentials, policies and provider backends (never their secrets).
Changes go through the API, whose services audit them and push them to the gateways."""

from __future__ import annotations

from django.contrib import admin

from portal.core.admin import ReadOnlyAdmin
from portal.gateway.models import ClusterGatewayPolicy, Credential, ProviderBackend, TeamGatewayPolicy


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
