"""URL map: the v1 API, its schema and docs, operations endpoints, the console and the admin UI."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal.core import health
from portal.gateway import pages as gateway_pages

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/v1/", include("portal.tenancy.api.urls")),
    path("api/v1/", include("catalog.api.urls")),
    path("api/v1/", include("portal.api.urls")),
    path("api/v1/", include("portal.clusters.api.urls")),
    path("api/v1/", include("portal.deployments.api.urls")),
    path("api/v1/", include("portal.gateway.api.urls")),
    path("", include("portal.usage.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[], authentication_classes=[]),
        name="docs",
    ),
    path("reveal/<str:token>", gateway_pages.reveal_page, name="credential-reveal-page"),
    path("console/", include("portal.console.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "portal.api.errors.bad_request_view"
handler403 = "portal.api.errors.permission_denied_view"
handler404 = "portal.api.errors.not_found_view"
handler500 = "portal.api.errors.server_error_view"
