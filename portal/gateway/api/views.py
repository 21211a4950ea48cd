"""Gateway endpoints: team credentials (viewers list, developers and admins manage), one-time reveal links,
and, for platform admins, provider backends, the gateway bootstrap manifests and the policy status per cluster."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.authentication import acting_user, is_platform_admin
from portal.api.permissions import IsPlatformAdmin
from portal.api.renderers import LIST_RENDERERS, csv_list_schema
from portal.api.team_access import team_for_request
from portal.api.views import PortalGenericView, PortalView, validated
from portal.clusters import selectors as cluster_selectors
from portal.core.links import public_url
from portal.gateway import conf, selectors, services
from portal.gateway.api import serializers
from portal.gateway.models import Credential, ProviderBackend
from portal.tenancy.models import Role

KEY_REPLAY_PLACEHOLDER = "[shown once: rotate the credential for a new key]"
# A response that carries a key must not be kept by a browser, proxy or client cache.
NO_STORE = {"Cache-Control": "no-store"}

# The gateway bootstrap builder (workers/provisioning/manifests/bootstrap.py, where every builder lives): a cluster and
# the OTLP collector address ('' for none) in, {cluster, usage_source, manifests, gateway_patch, applied_by_worker} out.
BootstrapDocument = Callable[..., dict[str, Any]]


class KeyResponseMixin:
    """A response that carries a key is stored for Idempotency-Key replay without it: the key is shown once,
    and is never kept in clear in the idempotency table."""

    def replayable_response(self, response: Response) -> Response:
        if not (isinstance(response.data, dict) and "key" in response.data):
            return response
        stored = Response(
            {**response.data, "key": KEY_REPLAY_PLACEHOLDER},
            status=response.status_code,
            headers={name: response[name] for name in ("Location",) if response.has_header(name)},
        )
        stored.accepted_renderer = response.accepted_renderer
        stored.accepted_media_type = response.accepted_media_type
        stored.renderer_context = response.renderer_context  # type: ignore[attr-defined]
        return stored


def _issued_body(request: Request, issued: services.IssuedCredential, delivery: str) -> dict[str, Any]:
    body = dict(serializers.CredentialOutput(issued.credential).data)
    if delivery == "reveal_link":
        link = services.credential_reveal_link_create(actor=acting_user(request), credential=issued.credential)
        body["reveal_url"] = request.build_absolute_uri(f"/api/v1/credential-reveals/{link.token}")
        # The same one-time link as a page a browser opens (Backstage's task output links here).
        # A page people open: on PORTAL_PUBLIC_URL when set (the API link above is for the caller's own client).
        body["reveal_page_url"] = public_url(f"/reveal/{link.token}", request=request)
        body["reveal_expires_at"] = serializers.serializers.DateTimeField().to_representation(link.expires_at)
    else:
        body["key"] = issued.key
    return body


class CredentialListView(KeyResponseMixin, PortalGenericView):
    renderer_classes = LIST_RENDERERS
    serializer_class = serializers.CredentialOutput
    queryset = Credential.objects.none()  # for the schema generator; views query through selectors

    @csv_list_schema(
        serializers.CredentialOutput,
        summary="A team's gateway credentials (no keys), JSON or CSV",
        parameters=[serializers.CredentialListQuery],
    )
    def get(self, request: Request, team: str) -> Response:
        query = validated(serializers.CredentialListQuery, request.query_params)
        credentials = selectors.credential_list(
            team=team_for_request(request, team), include_inactive=not query["current"]
        )
        page = self.paginate_queryset(credentials)
        return self.get_paginated_response(serializers.CredentialOutput(page, many=True).data)

    @extend_schema(
        request=serializers.CredentialCreateInput,
        responses={201: serializers.CredentialIssuedOutput},
        summary="Issue an API key (developers); the key is shown once, or behind a one-time reveal link",
    )
    def post(self, request: Request, team: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.DEVELOPER)
        data = validated(serializers.CredentialCreateInput, request.data)
        issued = services.credential_issue(
            actor=acting_user(request),
            team=team_object,
            name=data["name"],
            allowed_models=data["allowed_models"],
            expires_at=data["expires_at"],
        )
        headers = {"Location": f"/api/v1/teams/{team_object.slug}/credentials/{issued.credential_id}", **NO_STORE}
        return Response(
            _issued_body(request, issued, data["delivery"]), status=status.HTTP_201_CREATED, headers=headers
        )


class CredentialDetailView(PortalView):
    @extend_schema(responses=serializers.CredentialOutput, summary="One credential (no key)")
    def get(self, request: Request, team: str, credential_id: int) -> Response:
        credential = selectors.credential_get(team=team_for_request(request, team), credential_id=credential_id)
        return Response(serializers.CredentialOutput(credential).data)

    @extend_schema(responses={204: None}, summary="Revoke: the key stops working at the next reconcile (developers)")
    def delete(self, request: Request, team: str, credential_id: int) -> Response:
        team_object = team_for_request(request, team, required_role=Role.DEVELOPER)
        credential = selectors.credential_get(team=team_object, credential_id=credential_id)
        services.credential_revoke(actor=acting_user(request), credential=credential)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CredentialRotateView(KeyResponseMixin, PortalView):
    @extend_schema(
        request=serializers.CredentialRotateInput,
        responses={201: serializers.CredentialIssuedOutput},
        summary="Rotate: a new key now; the old one works for the overlap window, then stops (developers)",
    )
    def post(self, request: Request, team: str, credential_id: int) -> Response:
        team_object = team_for_request(request, team, required_role=Role.DEVELOPER)
        credential = selectors.credential_get(team=team_object, credential_id=credential_id)
        data = validated(serializers.CredentialRotateInput, request.data or {})
        overlap = timedelta(seconds=data["overlap_seconds"]) if data["overlap_seconds"] is not None else None
        issued = services.credential_rotate(
            actor=acting_user(request), credential=credential, overlap=overlap, expires_at=data["expires_at"]
        )
        headers = {"Location": f"/api/v1/teams/{team_object.slug}/credentials/{issued.credential_id}", **NO_STORE}
        return Response(
            _issued_body(request, issued, data["delivery"]), status=status.HTTP_201_CREATED, headers=headers
        )


class CredentialRevealView(PortalView):
    permission_classes = [IsAuthenticated]
    problem_statuses = (410,)

    @extend_schema(
        responses=serializers.CredentialRevealOutput,
        summary="Read a new key once, through the one-time link given to its creator",
    )
    def get(self, request: Request, token: str) -> Response:
        credential, key = services.credential_reveal(
            actor=acting_user(request), token=token, platform_admin=is_platform_admin(request)
        )
        body = {
            "id": credential.pk,
            "team": credential.team.slug,
            "name": credential.name,
            "client_id": selectors.client_id_of(team_slug=credential.team.slug, key_id=credential.key_id),
            "key": key,
        }
        return Response(body, headers=NO_STORE)


class TeamGatewayStateView(PortalView):
    @extend_schema(
        responses=serializers.TeamGatewayStateOutput,
        summary="The team's effective gateway limits and budget enforcement (members)",
    )
    def get(self, request: Request, team: str) -> Response:
        state = selectors.team_gateway_state(team=team_for_request(request, team))
        return Response(serializers.TeamGatewayStateOutput(state).data)


class ProviderBackendListView(PortalGenericView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = serializers.ProviderBackendOutput
    queryset = ProviderBackend.objects.none()  # for the schema generator

    @extend_schema(responses=serializers.ProviderBackendOutput(many=True), summary="A cluster's provider backends")
    def get(self, request: Request, cluster: str) -> Response:
        backends = selectors.provider_backend_list(cluster=cluster_selectors.cluster_get(name=cluster))
        page = self.paginate_queryset(backends)
        return self.get_paginated_response(serializers.ProviderBackendOutput(page, many=True).data)

    @extend_schema(
        request=serializers.ProviderBackendCreateInput,
        responses={201: serializers.ProviderBackendOutput},
        summary="Register a managed provider on the cluster's gateway (platform admins; credential never returned)",
    )
    def post(self, request: Request, cluster: str) -> Response:
        cluster_object = cluster_selectors.cluster_get(name=cluster)
        data = validated(serializers.ProviderBackendCreateInput, request.data)
        backend = services.provider_backend_create(actor=acting_user(request), cluster=cluster_object, values=data)
        return Response(serializers.ProviderBackendOutput(backend).data, status=status.HTTP_201_CREATED)


class ProviderBackendDetailView(PortalView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses=serializers.ProviderBackendOutput, summary="One provider backend")
    def get(self, request: Request, cluster: str, name: str) -> Response:
        backend = selectors.provider_backend_get(cluster=cluster_selectors.cluster_get(name=cluster), name=name)
        return Response(serializers.ProviderBackendOutput(backend).data)

    @extend_schema(
        request=serializers.ProviderBackendUpdateInput,
        responses=serializers.ProviderBackendOutput,
        summary="Change endpoint, region, API version or credential",
    )
    def patch(self, request: Request, cluster: str, name: str) -> Response:
        backend = selectors.provider_backend_get(cluster=cluster_selectors.cluster_get(name=cluster), name=name)
        data = validated(serializers.ProviderBackendUpdateInput, request.data, partial=True)
        updated = services.provider_backend_update(actor=acting_user(request), backend=backend, changes=data)
        return Response(serializers.ProviderBackendOutput(updated).data)

    @extend_schema(responses={204: None}, summary="Remove a provider backend (its routes go at the next reconcile)")
    def delete(self, request: Request, cluster: str, name: str) -> Response:
        backend = selectors.provider_backend_get(cluster=cluster_selectors.cluster_get(name=cluster), name=name)
        services.provider_backend_delete(actor=acting_user(request), backend=backend)
        return Response(status=status.HTTP_204_NO_CONTENT)


class GatewayBootstrapView(PortalView):
    permission_classes = [IsPlatformAdmin]
    bootstrap_document: BootstrapDocument | None = None  # set by as_view(bootstrap_document=...) in the URL map

    @extend_schema(
        responses=serializers.GatewayBootstrapOutput,
        summary="The gateway's own usage settings (GatewayConfig, EnvoyProxy access log) to apply once",
    )
    def get(self, request: Request, cluster: str) -> Response:
        cluster_object = cluster_selectors.cluster_get(name=cluster)
        contract = cluster_selectors.cluster_contract(cluster_id=cluster_object.pk)
        if self.bootstrap_document is None:
            raise RuntimeError("the gateway API's routes are built by gateway.api.urls.routes(bootstrap_document=...)")
        document = self.bootstrap_document(contract, collector=conf.otel_collector())
        return Response(serializers.GatewayBootstrapOutput(document).data)


class GatewayPolicyView(PortalView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(
        responses=serializers.GatewayPolicyOutput,
        summary="The cluster's gateway policy: generation, status, and what was applied (secrets redacted)",
    )
    def get(self, request: Request, cluster: str) -> Response:
        cluster_object = cluster_selectors.cluster_get(name=cluster)
        policy = selectors.gateway_policy_get(cluster=cluster_object)
        if policy is None:  # nothing rendered for this cluster yet
            return Response(
                {
                    "cluster": cluster_object.name,
                    "generation": 0,
                    "observed_generation": 0,
                    "phase": "Pending",
                    "message": "",
                    "last_reconciled_at": None,
                    "applied_manifests": [],
                }
            )
        return Response(serializers.GatewayPolicyOutput(policy).data)
