"""App configuration of the shared kernel."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "portal.core"
    label = "core"
    verbose_name = "Platform: audit log"

    def ready(self) -> None:
        from django.conf import settings

        from portal.core.telemetry import tracing_configure

        # Web, worker and beat processes alike; the SDK's batch processor restarts its thread after a fork.
        tracing_configure(
            endpoint=settings.OTLP_TRACES_ENDPOINT,
            headers=settings.OTLP_TRACES_HEADERS,
            service_name=settings.TRACING_SERVICE_NAME,
            sample_percent=settings.TRACING_SAMPLE_PERCENT,
        )
