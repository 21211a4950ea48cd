"""Admin UI of the catalog: models with their versions and prices inline."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from catalog.models import CatalogModel, ModelPrice, ModelVersion
from catalog.sizing import ArchitectureError, architecture_from_dict


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


class ModelVersionInline(admin.StackedInline):
    model = ModelVersion
    form = ModelVersionForm
    extra = 0


class ModelPriceInline(admin.TabularInline):
    model = ModelPrice
    extra = 0
    ordering = ["usage_type", "-effective_from"]


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = ["slug", "display_name", "publisher", "hosting", "lifecycle", "context_window", "visibility"]
    list_filter = ["hosting", "lifecycle", "visibility", "publisher"]
    search_fields = ["slug", "display_name", "publisher", "description"]
    filter_horizontal = ["visible_to_teams"]
    inlines = [ModelVersionInline, ModelPriceInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
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


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model", "usage_type", "price_per_million", "currency", "effective_from", "note"]
    list_filter = ["usage_type", "currency"]
    search_fields = ["model__slug", "note"]
    date_hierarchy = "effective_from"
