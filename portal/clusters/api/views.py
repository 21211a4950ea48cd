"""Clusters endpoints: capacity for everyone signed in; registration and pools for platform admins."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.authentication import acting_user
from portal.api.permissions import IsPlatformAdmin, ReadAnyWritePlatformAdmin
from portal.api.renderers import LIST_RENDERERS, csv_list_schema
from portal.api.views import PortalGenericView, PortalView, validated
from portal.clusters import selectors, services
from portal.clusters.api import serializers
from portal.clusters.models import Cluster

CREDENTIAL_FIELDS = ("auth_kind", "kubeconfig", "token", "ca_bundle")

# GPUs held per (cluster id, accelerator type). What deployments hold is the deployments app's to say, and the
# deployments app builds on clusters: the URL map (portal/urls.py), above both, hands the reader in.
GpusAllocated = Callable[[], Mapping[tuple[int, str], int]]


class _CapacityMixin:
    gpus_allocated: GpusAllocated | None = None  # set by as_view(gpus_allocated=...) in the URL map

    def _context(self) -> dict[str, object]:
        if self.gpus_allocated is None:
            raise RuntimeError("the clusters API's routes are built by clusters.api.urls.routes(gpus_allocated=...)")
        return {"allocated": self.gpus_allocated()}


class ClusterListView(_CapacityMixin, PortalGenericView):
    renderer_classes = LIST_RENDERERS
    permission_classes = [ReadAnyWritePlatformAdmin]
    serializer_class = serializers.ClusterOutput
    queryset = Cluster.objects.none()  # for the schema generator; views query through selectors

    @csv_list_schema(
        serializers.ClusterOutput,
        summary="Clusters with GPU capacity per accelerator type (credentials are never returned), JSON or CSV",
        parameters=[serializers.ClusterListQuery],
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.ClusterListQuery, request.query_params)
        page = self.paginate_queryset(selectors.cluster_list(region=query.get("region") or None))
        return self.get_paginated_response(serializers.ClusterOutput(page, many=True, context=self._context()).data)

    @extend_schema(
        request=serializers.ClusterCreateInput,
        responses={201: serializers.ClusterOutput},
        summary="Register a cluster (platform admins)",
    )
    def post(self, request: Request) -> Response:
        data = validated(serializers.ClusterCreateInput, request.data)
        cluster = services.cluster_register(actor=acting_user(request), **data)
        return Response(
            serializers.ClusterOutput(cluster, context=self._context()).data, status=status.HTTP_201_CREATED
        )


class AcceleratorTypeListView(_CapacityMixin, PortalGenericView):
    """The fleet's quota-by-type table: per accelerator type across clusters, quotas against holdings and capacity."""

    renderer_classes = LIST_RENDERERS
    permission_classes = [IsPlatformAdmin]
    queryset = Cluster.objects.none()  # for the schema generator; views query through selectors

    @csv_list_schema(
        serializers.AcceleratorTypeOutput,
        summary="GPUs per accelerator type across clusters: team quotas, allocated, capacity (platform admins), JSON or CSV",
    )
    def get(self, request: Request) -> Response:
        allocated = self._context()["allocated"]
        assert isinstance(allocated, Mapping)  # the URL map's reader of what deployments hold
        rows = selectors.accelerator_type_capacity(allocated=allocated)
        page: list[selectors.AcceleratorTypeCapacity] | None = self.paginate_queryset(rows)  # type: ignore[arg-type]  # a list pages too
        return self.get_paginated_response(serializers.AcceleratorTypeOutput(page or [], many=True).data)


class ClusterDetailView(_CapacityMixin, PortalView):
    permission_classes = [ReadAnyWritePlatformAdmin]

    @extend_schema(responses=serializers.ClusterOutput, summary="A cluster and its capacity")
    def get(self, request: Request, cluster: str) -> Response:
        return Response(serializers.ClusterOutput(selectors.cluster_get(name=cluster), context=self._context()).data)

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
        return Response(
            serializers.ClusterOutput(selectors.cluster_get(name=updated.name), context=self._context()).data
        )


class PoolView(_CapacityMixin, PortalView):
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
        return Response(serializers.PoolOutput(pool, context=self._context()).data)
