"""Endpoints of API access itself: personal and service tokens, and the audit log for platform admins."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import selectors, serializers, services
from portal.api.authentication import acting_user, is_platform_admin
from portal.api.models import ApiToken
from portal.api.permissions import IsPlatformAdmin
from portal.api.views import PortalGenericView, PortalView, validated
from portal.core.audit import audit_event_list
from portal.core.errors import PermissionDenied, ValidationFailed
from portal.core.models import AuditEvent
from portal.tenancy import services as tenancy_services


class TokenListView(PortalGenericView):
    queryset = ApiToken.objects.none()  # for the schema generator; views query through selectors
    serializer_class = serializers.ApiTokenOutput

    @extend_schema(
        parameters=[serializers.ApiTokenListQuery],
        responses=serializers.ApiTokenOutput(many=True),
        summary="The caller's API tokens (never the secrets)",
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.ApiTokenListQuery, request.query_params)
        everyone = query["all"] and is_platform_admin(request)
        tokens = selectors.api_token_list(principal=None if everyone else acting_user(request))
        page = self.paginate_queryset(tokens)
        return self.get_paginated_response(serializers.ApiTokenOutput(page, many=True).data)

    @extend_schema(
        request=serializers.ApiTokenCreateInput,
        responses={201: serializers.ApiTokenIssuedOutput},
        summary="Issue a token; the response is the only time the token is shown",
    )
    def post(self, request: Request) -> Response:
        data = validated(serializers.ApiTokenCreateInput, request.data)
        service_name = data.get("service_principal")
        if service_name is not None:
            if not is_platform_admin(request):
                raise PermissionDenied("Only platform admins issue service tokens", code="platform_admin_required")
            principal = tenancy_services.service_principal_get_or_create(actor=acting_user(request), name=service_name)
        else:
            if data["scopes"]:
                raise ValidationFailed.for_field(
                    "scopes", "scopes need a service_principal", code="scopes_for_services_only"
                )
            if acting_user(request).kind != "person":
                raise PermissionDenied("Service principals cannot issue tokens for themselves", code="person_required")
            principal = acting_user(request)
        issued = services.api_token_issue(
            actor=acting_user(request),
            principal=principal,
            name=data["name"],
            scopes=data["scopes"],
            expires_at=data["expires_at"],
        )
        body = serializers.ApiTokenOutput(issued.token).data | {"token": issued.plaintext}
        return Response(body, status=status.HTTP_201_CREATED)


class TokenDetailView(PortalView):
    @extend_schema(responses={204: None}, summary="Revoke a token (its owner, or a platform admin)")
    def delete(self, request: Request, token_id: int) -> Response:
        owner = None if is_platform_admin(request) else acting_user(request)
        services.api_token_revoke(actor=acting_user(request), token_id=token_id, principal=owner)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEventListView(PortalGenericView):
    queryset = AuditEvent.objects.none()  # for the schema generator; views query through selectors
    permission_classes = [IsPlatformAdmin]
    serializer_class = serializers.AuditEventOutput

    @extend_schema(
        parameters=[serializers.AuditEventQuery],
        responses=serializers.AuditEventOutput(many=True),
        summary="The audit log (platform admins)",
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.AuditEventQuery, request.query_params)
        events = audit_event_list(
            action=query.get("action") or None,
            target_type=query.get("target_type") or None,
            team_slug=query.get("team") or None,
            actor_label=query.get("actor") or None,
            since=query.get("since"),
            until=query.get("until"),
        )
        page = self.paginate_queryset(events)
        return self.get_paginated_response(serializers.AuditEventOutput(page, many=True).data)
