"""App configuration of deployments."""

from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "portal.deployments"
    label = "deployments"
    verbose_name = "Model deployments"

    def ready(self) -> None:
        from portal.core.inputs import inputs_watcher_register
        from portal.deployments.services import deployment_inputs_watch_source

        # A catalog version, cluster or pool edit marks the deployments built from it dirty, in the same transaction.
        inputs_watcher_register(deployment_inputs_watch_source)
