"""Routes of the catalog API."""

from django.urls import path

from catalog.api import views

urlpatterns = [
    path("catalog/models", views.CatalogModelListView.as_view(), name="catalog-models"),
    path("catalog/models/<str:model>", views.CatalogModelDetailView.as_view(), name="catalog-model"),
    path("catalog/models/<str:model>/versions", views.ModelVersionListView.as_view(), name="catalog-model-versions"),
    path(
        "catalog/models/<str:model>/versions/<str:version>",
        views.ModelVersionDetailView.as_view(),
        name="catalog-model-version",
    ),
    path(
        "catalog/models/<str:model>/versions/<str:version>/fit",
        views.ModelVersionFitView.as_view(),
        name="catalog-model-version-fit",
    ),
    path("catalog/models/<str:model>/prices", views.PriceListView.as_view(), name="catalog-model-prices"),
]
