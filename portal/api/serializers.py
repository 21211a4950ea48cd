"""Shapes of the API-access endpoints (tokens and the audit log), and the strict input base every app uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from portal.api.models import ApiToken, Scope
from portal.core.models import AuditEvent


class StrictInput(serializers.Serializer):
    """Input that refuses fields it does not declare: a misspelt or read-only field is a field error, never a
    silent no-op answered with 200; a body that is not a JSON object is an error of the whole body."""

    read_only_fields: tuple[str, ...] = ()

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError(
                {"non_field_errors": [ErrorDetail("the body must be a JSON object", code="invalid")]}
            )
        unknown = sorted(set(data) - set(self.fields))
        errors: dict[str, Any] = {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as error:
            if not isinstance(error.detail, dict):
                raise
            errors.update(error.detail)
        for name in unknown:
            errors[name] = (
                [ErrorDetail("cannot be changed", code="read_only")]
                if name in self.read_only_fields
                else [ErrorDetail("is not a field of this request", code="unknown_field")]
            )
        if errors:
            raise serializers.ValidationError(errors)
        return value


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
