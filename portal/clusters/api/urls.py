"""Routes of the clusters API."""

from django.urls import path

from portal.clusters.api import views

urlpatterns = [
    path("clusters", views.ClusterListView.as_view(), name="cluster-list"),
    path("clusters/<str:cluster>", views.ClusterDetailView.as_view(), name="cluster-detail"),
    path("clusters/<str:cluster>/pools/<str:accelerator_type>", views.PoolView.as_view(), name="cluster-pool"),
]
