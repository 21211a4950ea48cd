"""Catalog endpoints: browse models with filters; platform admins curate models, versions and prices."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from catalog import selectors, services
from catalog.api import serializers
from catalog.models import CatalogModel, ModelPrice
from portal.api.authentication import acting_user, reads_every_team
from portal.api.permissions import ReadAnyWritePlatformAdmin
from portal.api.renderers import LIST_RENDERERS, csv_list_schema
from portal.api.views import PortalGenericView, PortalView, validated
from portal.tenancy import selectors as tenancy_selectors


def _visible_model(request: Request, slug: str) -> CatalogModel:
    return selectors.catalog_model_get_visible(
        slug=slug, user=acting_user(request), platform_admin=reads_every_team(request)
    )


def _detail(model: CatalogModel) -> dict[str, object]:
    context = {"prices_in_force": selectors.prices_in_force(model=model)}
    return dict(serializers.CatalogModelDetailOutput(model, context=context).data)


class CatalogModelListView(PortalGenericView):
    queryset = CatalogModel.objects.none()  # for the schema generator; views query through selectors
    permission_classes = [ReadAnyWritePlatformAdmin]
    serializer_class = serializers.CatalogModelSummaryOutput

    @extend_schema(
        parameters=[serializers.CatalogModelListQuery],
        responses=serializers.CatalogModelSummaryOutput(many=True),
        summary="Models the caller's teams may use",
    )
    def get(self, request: Request) -> Response:
        query = validated(serializers.CatalogModelListQuery, request.query_params)
        models = selectors.catalog_model_list(
            user=acting_user(request),
            platform_admin=reads_every_team(request),
            capability=query.get("capability") or None,
            hosting=query.get("hosting") or None,
            lifecycle=query.get("lifecycle") or None,
            provider=query.get("provider") or None,
            text=(query.get("q") or "").strip()[:200] or None,
        )
        page = self.paginate_queryset(models.prefetch_related("versions"))
        return self.get_paginated_response(serializers.CatalogModelSummaryOutput(page, many=True).data)

    @extend_schema(
        request=serializers.CatalogModelCreateInput,
        responses={201: serializers.CatalogModelDetailOutput},
        summary="Add a model (platform admins)",
    )
    def post(self, request: Request) -> Response:
        data = validated(serializers.CatalogModelCreateInput, request.data)
        model = services.catalog_model_create(actor=acting_user(request), **data)
        return Response(
            _detail(model), status=status.HTTP_201_CREATED, headers={"Location": f"/api/v1/catalog/models/{model.slug}"}
        )


class CatalogModelDetailView(PortalView):
    permission_classes = [ReadAnyWritePlatformAdmin]

    @extend_schema(
        responses=serializers.CatalogModelDetailOutput, summary="A model with versions, hardware and current prices"
    )
    def get(self, request: Request, model: str) -> Response:
        return Response(_detail(_visible_model(request, model)))

    @extend_schema(
        request=serializers.CatalogModelUpdateInput,
        responses=serializers.CatalogModelDetailOutput,
        summary="Change a model (platform admins)",
    )
    def patch(self, request: Request, model: str) -> Response:
        model_object = _visible_model(request, model)
        data = validated(serializers.CatalogModelUpdateInput, request.data, partial=True)
        teams = data.pop("visible_to_teams", None)
        updated = services.catalog_model_update(
            actor=acting_user(request), model=model_object, changes=data, visible_to_teams=teams
        )
        return Response(_detail(updated))


class ModelVersionListView(PortalView):
    permission_classes = [ReadAnyWritePlatformAdmin]
    renderer_classes = LIST_RENDERERS

    @csv_list_schema(serializers.ModelVersionOutput, summary="Versions of a model, JSON or CSV")
    def get(self, request: Request, model: str) -> Response:
        model_object = _visible_model(request, model)
        return Response(serializers.ModelVersionOutput(model_object.versions.all(), many=True).data)

    @extend_schema(
        request=serializers.ModelVersionCreateInput,
        responses={201: serializers.ModelVersionOutput},
        summary="Add a version (platform admins)",
    )
    def post(self, request: Request, model: str) -> Response:
        model_object = _visible_model(request, model)
        data = validated(serializers.ModelVersionCreateInput, request.data)
        version = services.model_version_create(actor=acting_user(request), model=model_object, **data)
        return Response(serializers.ModelVersionOutput(version).data, status=status.HTTP_201_CREATED)


class ModelVersionDetailView(PortalView):
    permission_classes = [ReadAnyWritePlatformAdmin]

    @extend_schema(responses=serializers.ModelVersionOutput, summary="One version of a model")
    def get(self, request: Request, model: str, version: str) -> Response:
        found = selectors.model_version_get(model=_visible_model(request, model), version=version)
        return Response(serializers.ModelVersionOutput(found).data)

    @extend_schema(
        request=serializers.ModelVersionUpdateInput,
        responses=serializers.ModelVersionOutput,
        summary="Change a version, e.g. its lifecycle (platform admins)",
    )
    def patch(self, request: Request, model: str, version: str) -> Response:
        found = selectors.model_version_get(model=_visible_model(request, model), version=version)
        data = validated(serializers.ModelVersionUpdateInput, request.data, partial=True)
        updated = services.model_version_update(actor=acting_user(request), version=found, changes=data)
        return Response(serializers.ModelVersionOutput(updated).data)


class PriceListView(PortalGenericView):
    queryset = ModelPrice.objects.none()  # for the schema generator; views query through selectors
    permission_classes = [ReadAnyWritePlatformAdmin]
    serializer_class = serializers.PriceOutput

    @extend_schema(
        responses=serializers.PriceOutput(many=True), summary="Price history of a model, newest first per usage type"
    )
    def get(self, request: Request, model: str) -> Response:
        prices = selectors.price_list(model=_visible_model(request, model))
        page = self.paginate_queryset(prices)
        return self.get_paginated_response(serializers.PriceOutput(page, many=True).data)

    @extend_schema(
        request=serializers.PriceCreateInput,
        responses={201: serializers.PriceOutput},
        summary="Add an effective-dated price (platform admins)",
    )
    def post(self, request: Request, model: str) -> Response:
        model_object = _visible_model(request, model)
        data = validated(serializers.PriceCreateInput, request.data)
        price = services.model_price_add(actor=acting_user(request), model=model_object, **data)
        return Response(serializers.PriceOutput(price).data, status=status.HTTP_201_CREATED)


class ModelVersionFitView(PortalView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=serializers.FitInput,
        responses=serializers.FitOutput,
        summary="Size a version: weights, KV cache, fit on GPUs, and the cheapest placements with their break-even",
    )
    def post(self, request: Request, model: str, version: str) -> Response:
        user, platform_admin = acting_user(request), reads_every_team(request)
        found = selectors.model_version_get(model=_visible_model(request, model), version=version)
        data = validated(serializers.FitInput, request.data)
        team_slug = data.pop("team", None)
        team = (
            tenancy_selectors.team_get_visible(slug=team_slug, user=user, platform_admin=platform_admin)
            if team_slug
            else None
        )
        plan = selectors.version_plan(
            version=found,
            user=user,
            platform_admin=platform_admin,
            team=team,
            cluster=data.get("cluster"),
            accelerator_type=data.get("accelerator_type"),
            region=data.get("region"),
            gpus_per_replica=data.get("gpus_per_replica"),
            context=data.get("context_length"),
            concurrency=data["concurrency"],
            kv_cache_dtype=data.get("kv_cache_dtype"),
            replicas=data["min_replicas"],
            gpu_memory_utilization_percent=data.get("gpu_memory_utilization_percent"),
        )
        return Response(serializers.plan_data(plan, version=found, currency=settings.PORTAL_CURRENCY))
