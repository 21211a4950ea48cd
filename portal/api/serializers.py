"""Shapes of the API-access endpoints (tokens and the audit log), and the strict input base every app uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
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


class QueryFilters(serializers.Serializer):
    """Query-string filters of a list or report, declared so that they appear in the OpenAPI document
    (`extend_schema(parameters=[TheQuery])`) and parsed by the same serializer (`validated(TheQuery,
    request.query_params)`): a value outside a filter's choices or type is a field error, never an empty answer.
    Parameters it does not declare (page, page_size, format) belong to the paginator and renderers."""


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time that names its time zone: a naive one is refused, never read as UTC silently."""

    default_error_messages = {"invalid_datetime": "must be an ISO 8601 date-time with a time zone"}

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("invalid_datetime")
        return super().to_internal_value(value)


# A Kubernetes object as the portal applied or would apply it: the envelope every object has, and whatever its kind
# puts beside it (spec, data...). Kubernetes API conventions: apiVersion, kind and metadata.name identify an object
# (https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#types-kinds).
KUBERNETES_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}


@extend_schema_field(KUBERNETES_OBJECT_SCHEMA)
class KubernetesObjectField(serializers.DictField):
    """One Kubernetes object, passed through as it is."""


class KubernetesConditionOutput(serializers.Serializer):
    type = serializers.CharField()
    status = serializers.ChoiceField(choices=["True", "False", "Unknown"])
    reason = serializers.CharField(allow_blank=True)
    message = serializers.CharField(allow_blank=True)


class TolerationOutput(serializers.Serializer):
    """A Kubernetes toleration (core/v1 Toleration): every key optional."""

    key = serializers.CharField(required=False)
    operator = serializers.ChoiceField(choices=["Exists", "Equal"], required=False)
    value = serializers.CharField(required=False)
    effect = serializers.CharField(required=False, help_text="NoSchedule, PreferNoSchedule or NoExecute")
    tolerationSeconds = serializers.IntegerField(required=False, allow_null=True)


class FieldErrorOutput(serializers.Serializer):
    field = serializers.CharField(help_text="Dotted path of the offending field; empty for the whole body")
    code = serializers.CharField()
    message = serializers.CharField()


class ProblemOutput(serializers.Serializer):
    """RFC 9457 problem details (application/problem+json); some problems add members, e.g. limit_bytes on 413."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField(help_text="Stable, documented error code")

    def get_fields(self) -> dict[str, serializers.Field]:
        # `errors` would shadow Serializer.errors as a declared attribute: added here instead.
        return {
            **super().get_fields(),
            "errors": FieldErrorOutput(many=True, required=False, help_text="Validation problems: one per field"),
        }


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


class ApiTokenListQuery(QueryFilters):
    all = serializers.BooleanField(required=False, default=False, help_text="Platform admins: every principal's tokens")


class AuditEventQuery(QueryFilters):
    action = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text="e.g. deployment.create")
    target_type = serializers.CharField(required=False, allow_blank=True, max_length=100)
    team = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text="Team slug")
    actor = serializers.CharField(
        required=False, allow_blank=True, max_length=255, help_text="Who acted, as the log labels them"
    )
    since = AwareDateTimeField(required=False, help_text="ISO 8601 date-time with a time zone")
    until = AwareDateTimeField(required=False, help_text="ISO 8601 date-time with a time zone")


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
