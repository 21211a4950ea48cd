"""Routes of the gateway API, built with the gateway bootstrap builder (the URL map composes them)."""

from django.urls import URLPattern, path

from portal.gateway.api import views


def routes(*, bootstrap_document: views.BootstrapDocument) -> list[URLPattern]:
    """The gateway routes; `bootstrap_document` renders a cluster's gateway bootstrap (a pure builder of workers')."""
    return [
        path("teams/<str:team>/credentials", views.CredentialListView.as_view(), name="credential-list"),
        path(
            "teams/<str:team>/credentials/<int:credential_id>",
            views.CredentialDetailView.as_view(),
            name="credential-detail",
        ),
        path(
            "teams/<str:team>/credentials/<int:credential_id>/rotate",
            views.CredentialRotateView.as_view(),
            name="credential-rotate",
        ),
        path("teams/<str:team>/gateway-policy", views.TeamGatewayStateView.as_view(), name="team-gateway-policy"),
        path("credential-reveals/<str:token>", views.CredentialRevealView.as_view(), name="credential-reveal"),
        path(
            "clusters/<str:cluster>/provider-backends",
            views.ProviderBackendListView.as_view(),
            name="provider-backend-list",
        ),
        path(
            "clusters/<str:cluster>/provider-backends/<str:name>",
            views.ProviderBackendDetailView.as_view(),
            name="provider-backend-detail",
        ),
        path(
            "clusters/<str:cluster>/gateway-bootstrap",
            views.GatewayBootstrapView.as_view(bootstrap_document=bootstrap_document),
            name="gateway-bootstrap",
        ),
        path("clusters/<str:cluster>/gateway-policy", views.GatewayPolicyView.as_view(), name="gateway-policy"),
    ]
