"""The shapes every app's API shares (strict input, query filters, problem details, Kubernetes objects), and the audit log's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

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
