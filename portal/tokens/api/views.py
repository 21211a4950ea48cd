"""Endpoints of API tokens: a person's own tokens, and service principals' tokens issued by platform admins."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.authentication import acting_user, is_platform_admin
from portal.api.views import PortalGenericView, PortalView, validated
from portal.core.errors import PermissionDenied, ValidationFailed
from portal.tenancy import services as tenancy_services
from portal.tokens import selectors, services
from portal.tokens.api import serializers
from portal.tokens.models import ApiToken


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
