"""Admin UI of the gateway: credentials and provider backends are read here, never their secrets."""

from __future__ import annotations

from django.contrib import admin

from portal.gateway.models import ClusterGatewayPolicy, Credential, ProviderBackend, TeamGatewayPolicy


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("key_prefix", "name", "team", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("team",)
    search_fields = ("name", "key_id", "team__slug")
    exclude = ("key_hash", "key_ciphertext")
    readonly_fields = ("team", "key_id", "key_prefix", "created_by", "last_used_at", "replaced_by", "rotated_at")


@admin.register(ProviderBackend)
class ProviderBackendAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "cluster", "provider", "hostname", "region")
    exclude = ("credential_ciphertext",)


@admin.register(TeamGatewayPolicy)
class TeamGatewayPolicyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("team", "budget_enforcement", "generation", "updated_at")
    readonly_fields = ("generation",)


@admin.register(ClusterGatewayPolicy)
class ClusterGatewayPolicyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("cluster", "generation", "observed_generation", "phase", "last_reconciled_at")
    readonly_fields = ("generation", "observed_generation", "applied_fingerprint", "applied_manifests")
