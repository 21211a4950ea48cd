"""Deployments endpoints, under a team: viewers read, developers and admins deploy, change and delete."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from catalog import selectors as catalog_selectors
from portal.api.authentication import acting_user, is_platform_admin
from portal.api.permissions import IsPlatformAdmin
from portal.api.renderers import LIST_RENDERERS, csv_list_schema
from portal.api.team_access import team_for_request
from portal.api.views import PortalGenericView, PortalView, validated
from portal.deployments import selectors, services
from portal.deployments.api import serializers
from portal.deployments.models import Deployment, DeploymentEvent
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.models import Role


class DeploymentListView(PortalGenericView):
    renderer_classes = LIST_RENDERERS
    serializer_class = serializers.DeploymentOutput
    queryset = Deployment.objects.none()  # for the schema generator; views query through selectors

    @csv_list_schema(
        serializers.DeploymentOutput,
        summary="A team's deployments, JSON or CSV",
        parameters=[serializers.DeploymentListQuery],
    )
    def get(self, request: Request, team: str) -> Response:
        deployments = selectors.deployment_list(team=team_for_request(request, team, catalog_read=True))
        query = validated(serializers.DeploymentListQuery, request.query_params)
        if query.get("phase"):
            deployments = deployments.filter(phase=query["phase"])
        page = self.paginate_queryset(deployments)
        return self.get_paginated_response(serializers.DeploymentOutput(page, many=True).data)

    @extend_schema(
        request=serializers.DeploymentCreateInput,
        responses={201: serializers.DeploymentCreatedOutput},
        summary="Deploy a catalog model (developers)",
    )
    def post(self, request: Request, team: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.DEVELOPER)
        data = validated(serializers.DeploymentCreateInput, request.data)
        result = services.deployment_create(
            actor=acting_user(request), platform_admin=is_platform_admin(request), team=team_object, **data
        )
        body = dict(serializers.DeploymentOutput(result.deployment).data)
        body["warnings"] = result.warnings
        headers = {"Location": f"/api/v1/teams/{team_object.slug}/deployments/{result.deployment.name}"}
        if result.warnings:
            headers["Warning"] = "; ".join(f'299 - "{warning}"' for warning in result.warnings)
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)


class NotReadyDeploymentListView(PortalGenericView):
    """The console overview's attention list: every team's deployments whose phase is not Ready, the longest
    unchanged first."""

    permission_classes = [IsPlatformAdmin]
    renderer_classes = LIST_RENDERERS
    serializer_class = serializers.DeploymentOutput
    queryset = Deployment.objects.none()  # for the schema generator; views query through selectors

    @csv_list_schema(
        serializers.DeploymentOutput,
        summary="Every team's deployments that are not Ready, longest unchanged first (platform admins), JSON or CSV",
        parameters=[serializers.DeploymentListQuery],
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.DeploymentListQuery, request.query_params)
        deployments = selectors.deployments_not_ready()
        if query.get("phase"):
            deployments = deployments.filter(phase=query["phase"])
        page = self.paginate_queryset(deployments)
        return self.get_paginated_response(serializers.DeploymentOutput(page, many=True).data)


class ModelDeploymentListView(PortalGenericView):
    """Where one catalog model is deployed: every team's deployments of it for platform admins, the caller's own
    teams' for everyone else (the console's model page)."""

    renderer_classes = LIST_RENDERERS
    serializer_class = serializers.DeploymentOutput
    queryset = Deployment.objects.none()  # for the schema generator; views query through selectors

    @csv_list_schema(
        serializers.DeploymentOutput,
        summary="Deployments of one catalog model (every team's for platform admins, else your teams'), JSON or CSV",
    )
    def get(self, request: Request, model: str) -> Response:
        user, platform_admin = acting_user(request), is_platform_admin(request)
        found = catalog_selectors.catalog_model_get_visible(slug=model, user=user, platform_admin=platform_admin)
        team_ids = (
            None
            if platform_admin
            else list(tenancy_selectors.team_list_visible(user=user, platform_admin=False).values_list("pk", flat=True))
        )
        page = self.paginate_queryset(selectors.deployment_list_for_model(model_id=found.pk, team_ids=team_ids))
        return self.get_paginated_response(serializers.DeploymentOutput(page, many=True).data)


class DeploymentDetailView(PortalView):
    @extend_schema(responses=serializers.DeploymentOutput, summary="A deployment with its observed status")
    def get(self, request: Request, team: str, name: str) -> Response:
        return Response(
            serializers.DeploymentOutput(
                selectors.deployment_get(team=team_for_request(request, team, catalog_read=True), name=name)
            ).data
        )

    @extend_schema(
        request=serializers.DeploymentUpdateInput,
        responses=serializers.DeploymentOutput,
        summary="Change replicas, scale to zero or runtime overrides (developers)",
    )
    def patch(self, request: Request, team: str, name: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.DEVELOPER)
        deployment = selectors.deployment_get(team=team_object, name=name)
        data = validated(serializers.DeploymentUpdateInput, request.data, partial=True)
        updated = services.deployment_update(
            actor=acting_user(request), deployment=deployment, changes=data, platform_admin=is_platform_admin(request)
        )
        return Response(
            serializers.DeploymentOutput(selectors.deployment_get(team=team_object, name=updated.name)).data
        )

    @extend_schema(
        responses={202: serializers.DeploymentOutput},
        summary="Delete: every object it owns is removed, then the row (developers)",
    )
    def delete(self, request: Request, team: str, name: str) -> Response:
        team_object = team_for_request(request, team, required_role=Role.DEVELOPER)
        deployment = selectors.deployment_get(team=team_object, name=name)
        deleting = services.deployment_delete(actor=acting_user(request), deployment=deployment)
        return Response(serializers.DeploymentOutput(deleting).data, status=status.HTTP_202_ACCEPTED)


class DeploymentManifestsView(PortalView):
    @extend_schema(
        responses=serializers.ManifestsOutput,
        summary="What the portal applied for this deployment (secrets redacted)",
    )
    def get(self, request: Request, team: str, name: str) -> Response:
        deployment = selectors.deployment_get(team=team_for_request(request, team), name=name)
        return Response(serializers.ManifestsOutput(deployment.applied_manifests).data)


class DeploymentEventsView(PortalGenericView):
    renderer_classes = LIST_RENDERERS
    serializer_class = serializers.DeploymentEventOutput
    queryset = DeploymentEvent.objects.none()  # for the schema generator

    @csv_list_schema(serializers.DeploymentEventOutput, summary="State changes with reasons, newest first, JSON or CSV")
    def get(self, request: Request, team: str, name: str) -> Response:
        deployment = selectors.deployment_get(team=team_for_request(request, team), name=name)
        page = self.paginate_queryset(selectors.deployment_events(deployment=deployment))
        return self.get_paginated_response(serializers.DeploymentEventOutput(page, many=True).data)
