"""Shapes of the API-access endpoints: tokens and the audit log."""

from __future__ import annotations

from rest_framework import serializers

from portal.api.models import ApiToken, Scope
from portal.core.models import AuditEvent


class ApiTokenOutput(serializers.ModelSerializer):
    principal = serializers.CharField(source="principal.__str__")
    status = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "prefix",
            "principal",
            "scopes",
            "status",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "created_at",
        ]

    def get_status(self, token: ApiToken) -> str:
        from django.utils import timezone

        if token.revoked_at is not None:
            return "revoked"
        if token.expires_at is not None and token.expires_at <= timezone.now():
            return "expired"
        return "active"


class ApiTokenIssuedOutput(ApiTokenOutput):
    token = serializers.CharField(help_text="The token itself; shown only in this response")

    class Meta(ApiTokenOutput.Meta):
        fields = [*ApiTokenOutput.Meta.fields, "token"]


class ApiTokenCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    service_principal = serializers.RegexField(
        r"^[a-z0-9]([-a-z0-9]{0,62}[a-z0-9])?$",
        max_length=64,
        required=False,
        help_text="Platform admins only: issue a token for this service principal (created if new)",
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices),
        required=False,
        default=list,
        max_length=3,
        help_text="Scopes of a service principal's token",
    )


class AuditEventOutput(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label")

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "occurred_at",
            "actor",
            "action",
            "target_type",
            "target_id",
            "target_label",
            "team_slug",
            "before",
            "after",
        ]
