"""Admin UI of the catalog: models and versions are written through the catalog services (validated, audited, and a
version edit reaches the deployments that run it, as through the API); prices are effective-dated history, added
through the API and shown here with their currency."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from catalog import services
from catalog.models import CatalogModel, ModelPrice, ModelVersion
from catalog.sizing import ArchitectureError, architecture_from_dict
from portal.core.admin import ReadOnlyAdmin, ReadOnlyInline, ServiceWriteAdmin, money


class ModelVersionForm(forms.ModelForm):  # type: ignore[type-arg]
    """An architecture typed here must be one the sizing engine can read, as through the API (the admin supplies
    the model and the fields)."""

    def clean_architecture(self) -> Any:
        value = self.cleaned_data.get("architecture")
        if not value:
            return {}
        try:
            return architecture_from_dict(value).to_dict()
        except ArchitectureError as error:
            raise forms.ValidationError(str(error)) from None


class ModelVersionInline(ReadOnlyInline):
    model = ModelVersion
    fields = readonly_fields = (
        "version",
        "lifecycle",
        "served_model_name",
        "provider",
        "gpus_per_replica",
    )


class ModelPriceInline(ReadOnlyInline):
    model = ModelPrice
    fields = readonly_fields = (
        "usage_type",
        "price",
        "effective_from",
        "note",
    )
    ordering = ["usage_type", "-effective_from"]

    @admin.display(description="per 1M tokens")
    def price(self, price: ModelPrice) -> str:
        return money(price.price_per_million, price.currency)


@admin.register(CatalogModel)
class CatalogModelAdmin(ServiceWriteAdmin):
    list_display = ["slug", "display_name", "publisher", "hosting", "lifecycle", "context_window", "visibility"]
    list_filter = ["hosting", "lifecycle", "visibility", "publisher"]
    search_fields = ["slug", "display_name", "publisher", "description"]
    fields = ["slug", *services.MODEL_FIELDS, "visible_to_teams"]
    filter_horizontal = ["visible_to_teams"]
    inlines = [ModelVersionInline, ModelPriceInline]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return ["slug"] if obj is not None else []

    def _team_slugs(self, values: dict[str, Any]) -> list[str] | None:
        teams = values.pop("visible_to_teams", None)
        return None if teams is None else sorted(team.slug for team in teams)

    def service_create(self, request: HttpRequest, values: dict[str, Any]) -> CatalogModel:
        teams = self._team_slugs(values)
        return services.catalog_model_create(actor=request.user, visible_to_teams=teams, **values)  # type: ignore[arg-type]

    def service_update(self, request: HttpRequest, current: CatalogModel, changes: dict[str, Any]) -> CatalogModel:
        teams = self._team_slugs(changes)
        return services.catalog_model_update(actor=request.user, model=current, changes=changes, visible_to_teams=teams)  # type: ignore[arg-type]


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceWriteAdmin):
    form = ModelVersionForm
    list_display = [
        "model",
        "version",
        "lifecycle",
        "served_model_name",
        "provider",
        "gpus_per_replica",
        "min_gpu_memory_gb",
    ]
    list_filter = ["lifecycle", "provider", "model__hosting"]
    search_fields = ["model__slug", "version", "served_model_name", "artifact_uri", "provider_model_id"]
    fields = ["model", "version", *services.VERSION_FIELDS]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return ["model", "version"] if obj is not None else []

    def service_create(self, request: HttpRequest, values: dict[str, Any]) -> ModelVersion:
        model, version = values.pop("model"), values.pop("version")
        return services.model_version_create(actor=request.user, model=model, version=version, **values)  # type: ignore[arg-type]

    def service_update(self, request: HttpRequest, current: ModelVersion, changes: dict[str, Any]) -> ModelVersion:
        return services.model_version_update(actor=request.user, version=current, changes=changes)  # type: ignore[arg-type]


@admin.register(ModelPrice)
class ModelPriceAdmin(ReadOnlyAdmin):
    list_display = ["model", "usage_type", "price", "effective_from", "note"]
    list_filter = ["usage_type", "currency"]
    search_fields = ["model__slug", "note"]
    date_hierarchy = "effective_from"

    @admin.display(description="per 1M tokens", ordering="price_per_million")
    def price(self, price: ModelPrice) -> str:
        return money(price.price_per_million, price.currency)
