"""App configuration of clusters."""

from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "portal.clusters"
    label = "clusters"
    verbose_name = "GPU clusters"
