"""URL map: the v1 API, its schema and docs, operations endpoints, the console and the admin UI."""

from django.contrib import admin
from django.urls import include, path

from portal.api import renderers
from portal.clusters.api import urls as cluster_urls
from portal.core import health
from portal.deployments import selectors as deployment_selectors
from portal.gateway import pages as gateway_pages
from portal.gateway.api import urls as gateway_urls
from workers.provisioning.manifests.bootstrap import bootstrap_document

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/v1/", include("portal.tenancy.api.urls")),
    path("api/v1/", include("catalog.api.urls")),
    path("api/v1/", include("portal.api.urls")),
    path("api/v1/", include("portal.tokens.api.urls")),
    # The URL map sits above the apps: it hands the clusters API the deployments' reader of allocated GPUs.
    path(
        "api/v1/", include(cluster_urls.routes(gpus_allocated=deployment_selectors.gpus_allocated_by_cluster_and_type))
    ),
    path("api/v1/", include("portal.deployments.api.urls")),
    # ...and the gateway API the bootstrap builder, which lives with every other builder in workers.
    path("api/v1/", include(gateway_urls.routes(bootstrap_document=bootstrap_document))),
    path("", include("portal.usage.api.urls")),
    path("api/", include("portal.api.docs_urls")),
    path("reveal/<str:token>", gateway_pages.reveal_page, name="credential-reveal-page"),
    # Members' console sessions reach the API's list CSVs through this door (the console itself never imports the API).
    path("console/csv/<path:api_path>", renderers.console_list_csv, name="console-list-csv"),
    path("console/", include("portal.console.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "portal.api.errors.bad_request_view"
handler403 = "portal.api.errors.permission_denied_view"
handler404 = "portal.api.errors.not_found_view"
handler500 = "portal.api.errors.server_error_view"
