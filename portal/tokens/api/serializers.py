"""Shapes of the API-token endpoints."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from portal.api.serializers import QueryFilters, StrictInput
from portal.tokens.models import ApiToken, Scope


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
        if token.revoked_at is not None:
            return "revoked"
        if token.expires_at is not None and token.expires_at <= timezone.now():
            return "expired"
        return "active"


class ApiTokenIssuedOutput(ApiTokenOutput):
    token = serializers.CharField(help_text="The token itself; shown only in this response")

    class Meta(ApiTokenOutput.Meta):
        fields = [*ApiTokenOutput.Meta.fields, "token"]


class ApiTokenCreateInput(StrictInput):
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


class ApiTokenListQuery(QueryFilters):
    all = serializers.BooleanField(required=False, default=False, help_text="Platform admins: every principal's tokens")
