"""Routes of the clusters API, built with the reader of the GPUs deployments hold (the URL map composes them)."""

from django.urls import URLPattern, path

from portal.clusters.api import views


def routes(*, gpus_allocated: views.GpusAllocated) -> list[URLPattern]:
    """The clusters routes; `gpus_allocated` says how many GPUs each (cluster id, accelerator type) has allocated."""
    return [
        path("clusters", views.ClusterListView.as_view(gpus_allocated=gpus_allocated), name="cluster-list"),
        path(
            "accelerator-types",
            views.AcceleratorTypeListView.as_view(gpus_allocated=gpus_allocated),
            name="accelerator-type-list",
        ),
        path(
            "clusters/<str:cluster>",
            views.ClusterDetailView.as_view(gpus_allocated=gpus_allocated),
            name="cluster-detail",
        ),
        path(
            "clusters/<str:cluster>/pools/<str:accelerator_type>",
            views.PoolView.as_view(gpus_allocated=gpus_allocated),
            name="cluster-pool",
        ),
    ]
