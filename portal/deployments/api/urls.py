"""Routes of the deployments API."""

from django.urls import path

from portal.deployments.api import views

urlpatterns = [
    path("deployments/not-ready", views.NotReadyDeploymentListView.as_view(), name="deployment-not-ready-list"),
    path("catalog/models/<str:model>/deployments", views.ModelDeploymentListView.as_view(), name="model-deployments"),
    path("teams/<str:team>/deployments", views.DeploymentListView.as_view(), name="deployment-list"),
    path("teams/<str:team>/deployments/<str:name>", views.DeploymentDetailView.as_view(), name="deployment-detail"),
    path(
        "teams/<str:team>/deployments/<str:name>/manifests",
        views.DeploymentManifestsView.as_view(),
        name="deployment-manifests",
    ),
    path(
        "teams/<str:team>/deployments/<str:name>/events", views.DeploymentEventsView.as_view(), name="deployment-events"
    ),
]
