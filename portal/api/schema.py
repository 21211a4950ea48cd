"""The OpenAPI document's conventions: problem responses on every operation, response schemas that describe what is
returned (never the input rules of the stored fields), and the authentication schemes (drf-spectacular extensions)."""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema

from portal.core.problems import PROBLEM_CONTENT_TYPE

# What each problem status means in this API (portal/api/errors.py, portal/api/idempotency.py, portal/core/middleware).
PROBLEM_DESCRIPTIONS = {
    400: "Invalid input: a problem with one entry per offending field, or a malformed body or query",
    401: "No credentials, or credentials that are not valid",
    403: "The caller may not do this (role, team membership, token scope)",
    404: "Not found, or not visible to the caller",
    406: "The Accept header names no representation this operation produces",
    409: "Conflicts with the current state, or with a request still in progress under the same Idempotency-Key",
    410: "Gone: the one-time link was used or expired",
    413: "The request body is larger than the portal accepts; the problem names the limit (limit_bytes)",
    415: "The Content-Type is not one this operation reads",
    422: "The Idempotency-Key was used before with another body",
    429: "Rate limited: retry after the Retry-After header's seconds",
    503: "Temporarily unavailable: retry after the Retry-After header's seconds",
}
EVERY_OPERATION = (400, 401, 403, 404, 406, 429)
WITH_A_BODY = (409, 413, 415)


class PortalAutoSchema(AutoSchema):
    """Every operation documents the problem responses it can give (a view adds its own in `problem_statuses`),
    and a response schema states types and shapes only: a stored value that an input rule added later would refuse
    (a `user:default/dave` username, a slug from before a pattern) is still a valid answer."""

    def _problem_statuses(self) -> list[int]:
        statuses = list(EVERY_OPERATION)
        if self.method in ("POST", "PUT", "PATCH"):
            statuses += WITH_A_BODY
        if self.method == "POST":
            statuses.append(422)
        if self.method == "DELETE":
            statuses.append(409)
        statuses += getattr(self.view, "problem_statuses", ())
        return sorted(set(statuses))

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        from portal.api.serializers import ProblemOutput

        responses: dict[str, Any] = super()._get_response_bodies(direction)
        problem = self.resolve_serializer(ProblemOutput, "response").ref
        for status in self._problem_statuses():
            responses.setdefault(
                str(status),
                {"description": PROBLEM_DESCRIPTIONS[status], "content": {PROBLEM_CONTENT_TYPE: {"schema": problem}}},
            )
        return responses

    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False) -> Any:
        previous = getattr(self, "_portal_direction", None)
        self._portal_direction = direction
        try:
            return super()._map_serializer_field(field, direction, bypass_extensions)
        finally:
            self._portal_direction = previous

    def _insert_field_validators(self, field: Any, schema: dict[str, Any]) -> None:
        # Validators are input rules: patterns, lengths and ranges of what may be written. Answers carry what is
        # stored, which may predate a rule or come from another writer (Backstage sync), so responses omit them.
        if getattr(self, "_portal_direction", None) == "response":
            field = copy.copy(field)
            field.validators = []
        super()._insert_field_validators(field, schema)
        # A blank-allowed formatted string becomes oneOf [formatted, empty]; "" can satisfy both (a validator that
        # does not check the format, or a pattern that allows empty), and oneOf then refuses it: anyOf says it.
        if "oneOf" in schema and {"type": "string", "maxLength": 0} in schema["oneOf"]:
            schema["anyOf"] = schema.pop("oneOf")


class PortalTokenScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.PortalTokenAuthentication"
    name = "portalToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A portal API token (gpt_...). A token with the 'backstage' scope may add X-Backstage-User: "
                "user:<namespace>/<name> to act for that user, and X-Backstage-Token with the user's Backstage "
                "token when the portal verifies it."
            ),
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid", "description": "Admin UI session (staff)"}
