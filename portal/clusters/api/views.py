"""Clusters endpoints: capacity for everyone signed in; registration and pools for platform admins."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.authentication import acting_user
from portal.api.permissions import ReadAnyWritePlatformAdmin
from portal.api.views import PortalGenericView, PortalView, validated
from portal.clusters import selectors, services
from portal.clusters.api import serializers
from portal.clusters.models import Cluster
from portal.deployments.selectors import gpus_allocated_by_cluster_and_type

CREDENTIAL_FIELDS = ("auth_kind", "kubeconfig", "token", "ca_bundle")


def _context() -> dict[str, object]:
    return {"allocated": gpus_allocated_by_cluster_and_type()}


class ClusterListView(PortalGenericView):
    permission_classes = [ReadAnyWritePlatformAdmin]
    serializer_class = serializers.ClusterOutput
    queryset = Cluster.objects.none()  # for the schema generator; views query through selectors

    @extend_schema(
        parameters=[serializers.ClusterListQuery],
        responses=serializers.ClusterOutput(many=True),
        summary="Clusters with GPU capacity per accelerator type (credentials are never returned)",
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.ClusterListQuery, request.query_params)
        page = self.paginate_queryset(selectors.cluster_list(region=query.get("region") or None))
        return self.get_paginated_response(serializers.ClusterOutput(page, many=True, context=_context()).data)

    @extend_schema(
        request=serializers.ClusterCreateInput,
        responses={201: serializers.ClusterOutput},
        summary="Register a cluster (platform admins)",
    )
    def post(self, request: Request) -> Response:
        data = validated(serializers.ClusterCreateInput, request.data)
        cluster = services.cluster_register(actor=acting_user(request), **data)
        return Response(serializers.ClusterOutput(cluster, context=_context()).data, status=status.HTTP_201_CREATED)


class ClusterDetailView(PortalView):
    permission_classes = [ReadAnyWritePlatformAdmin]

    @extend_schema(responses=serializers.ClusterOutput, summary="A cluster and its capacity")
    def get(self, request: Request, cluster: str) -> Response:
        return Response(serializers.ClusterOutput(selectors.cluster_get(name=cluster), context=_context()).data)

    @extend_schema(
        request=serializers.ClusterUpdateInput,
        responses=serializers.ClusterOutput,
        summary="Change a cluster or replace its credentials (platform admins)",
    )
    def patch(self, request: Request, cluster: str) -> Response:
        found = selectors.cluster_get(name=cluster)
        data = validated(serializers.ClusterUpdateInput, request.data, partial=True)
        credentials = {name: data.pop(name) for name in CREDENTIAL_FIELDS if name in data} or None
        updated = services.cluster_update(
            actor=acting_user(request), cluster=found, changes=data, credentials=credentials
        )
        return Response(serializers.ClusterOutput(selectors.cluster_get(name=updated.name), context=_context()).data)


class PoolView(PortalView):
    permission_classes = [ReadAnyWritePlatformAdmin]

    @extend_schema(
        request=serializers.PoolInput,
        responses=serializers.PoolOutput,
        summary="Create or change an accelerator pool (platform admins)",
    )
    def put(self, request: Request, cluster: str, accelerator_type: str) -> Response:
        found = selectors.cluster_get(name=cluster)
        data = validated(serializers.PoolInput, request.data, partial=True)
        pool = services.accelerator_pool_upsert(
            actor=acting_user(request), cluster=found, accelerator_type=accelerator_type, values=data
        )
        return Response(serializers.PoolOutput(pool, context=_context()).data)
