"""Input and output shapes of the gateway API. No output shape carries a key, a hash or a provider credential,
except the one-time fields added by the views on issue, rotation and reveal."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal.api.serializers import KubernetesObjectField, QueryFilters, StrictInput
from portal.gateway import conf, selectors
from portal.gateway.models import Credential, ProviderBackend, ProviderKind
from portal.tenancy.contracts import BUDGET_ENFORCEMENT_CHOICES

DELIVERY_CHOICES = ("response", "reveal_link")


class CredentialListQuery(QueryFilters):
    current = serializers.BooleanField(
        required=False, default=False, help_text="Only credentials that still work (active or rotating)"
    )


class CredentialOutput(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    client_id = serializers.SerializerMethodField()
    state = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()
    replaced_by = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)  # type: ignore[var-annotated]

    class Meta:
        model = Credential
        fields = [
            "id",
            "team",
            "name",
            "key_prefix",
            "client_id",
            "allowed_models",
            "state",
            "expires_at",
            "revoked_at",
            "rotated_at",
            "replaced_by",
            "created_by",
            "created_at",
            "last_used_at",
        ]

    def get_client_id(self, credential: Credential) -> str:
        return selectors.client_id_of(team_slug=credential.team.slug, key_id=credential.key_id)

    @extend_schema_field(serializers.ChoiceField(choices=["active", "rotating", "expired", "revoked"]))
    def get_state(self, credential: Credential) -> str:
        return selectors.credential_state(credential)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_created_by(self, credential: Credential) -> str | None:
        return str(credential.created_by) if credential.created_by is not None else None


class CredentialIssuedOutput(CredentialOutput):
    key = serializers.CharField(required=False, help_text="Shown only in this response (delivery 'response')")
    reveal_url = serializers.URLField(required=False, help_text="One-time link (delivery 'reveal_link')")
    reveal_page_url = serializers.URLField(
        required=False, help_text="The same one-time link as a page for a browser (delivery 'reveal_link')"
    )
    reveal_expires_at = serializers.DateTimeField(required=False)

    class Meta(CredentialOutput.Meta):
        fields = [*CredentialOutput.Meta.fields, "key", "reveal_url", "reveal_page_url", "reveal_expires_at"]


class CredentialCreateInput(StrictInput):
    name = serializers.CharField(max_length=100)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=63), required=False, default=list, max_length=200
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    delivery = serializers.ChoiceField(choices=DELIVERY_CHOICES, required=False, default="response")


class CredentialRotateInput(StrictInput):
    overlap_seconds = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    delivery = serializers.ChoiceField(choices=DELIVERY_CHOICES, required=False, default="response")

    def validate_overlap_seconds(self, value: int | None) -> int | None:
        """Bounded here (the setting is read per request), so a huge number is a 400, not a timedelta overflow."""
        limit = int(conf.max_rotation_overlap().total_seconds())
        if value is not None and value > limit:
            raise serializers.ValidationError(f"Ensure this value is less than or equal to {limit}.", code="max_value")
        return value


class CredentialRevealOutput(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField()
    name = serializers.CharField()
    client_id = serializers.CharField()
    key = serializers.CharField()


class ProviderBackendOutput(serializers.ModelSerializer):
    cluster = serializers.CharField(source="cluster.name")
    credential_set = serializers.SerializerMethodField()

    class Meta:
        model = ProviderBackend
        fields = [
            "name",
            "cluster",
            "provider",
            "hostname",
            "port",
            "region",
            "api_version",
            "credential_set",
            "created_at",
            "updated_at",
        ]

    def get_credential_set(self, backend: ProviderBackend) -> bool:
        return bool(backend.credential_ciphertext)


class ProviderBackendCreateInput(StrictInput):
    name = serializers.CharField(max_length=40)
    provider = serializers.ChoiceField(choices=ProviderKind.values)
    hostname = serializers.CharField(max_length=253)
    port = serializers.IntegerField(required=False, default=443, min_value=1, max_value=65535)
    region = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
    api_version = serializers.CharField(max_length=40, required=False, default="", allow_blank=True)
    credential = serializers.CharField(
        max_length=20000, required=False, default="", allow_blank=True, write_only=True, trim_whitespace=True
    )


class ProviderBackendUpdateInput(StrictInput):
    hostname = serializers.CharField(max_length=253, required=False)
    port = serializers.IntegerField(required=False, min_value=1, max_value=65535)
    region = serializers.CharField(max_length=64, required=False, allow_blank=True)
    api_version = serializers.CharField(max_length=40, required=False, allow_blank=True)
    credential = serializers.CharField(max_length=20000, required=False, write_only=True)


class GatewayPolicyOutput(serializers.Serializer):
    cluster = serializers.CharField(source="cluster.name")
    generation = serializers.IntegerField()
    observed_generation = serializers.IntegerField()
    phase = serializers.CharField()
    message = serializers.CharField()
    last_reconciled_at = serializers.DateTimeField(allow_null=True)
    applied_manifests = serializers.ListField(child=KubernetesObjectField(), help_text="Secrets redacted")


class GatewayBootstrapOutput(serializers.Serializer):
    """The gateway's own usage settings (GatewayConfig, EnvoyProxy access log) to apply once, and the patch of the
    Gateway (owned by the platform team) that uses them."""

    cluster = serializers.CharField()
    usage_source = serializers.CharField(help_text="The source its usage events carry, e.g. aigw://<cluster>/")
    manifests = serializers.ListField(child=KubernetesObjectField())
    gateway_patch = KubernetesObjectField()
    applied_by_worker = serializers.BooleanField(help_text="The portal applies the manifests itself")


class TeamGatewayStateOutput(serializers.Serializer):
    team = serializers.CharField(source="team_slug")
    budget_enforcement = serializers.ChoiceField(choices=BUDGET_ENFORCEMENT_CHOICES)
    reason = serializers.CharField()
    blocked_reason = serializers.CharField(help_text="'suspended', 'budget', or empty")
    tokens_per_minute = serializers.IntegerField(help_text="Effective limit at the gateway (0 when blocked)")
    tokens_per_day = serializers.IntegerField()
    current_keys = serializers.IntegerField()
