"""App configuration of the API plumbing (tokens and idempotency records live here)."""

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "portal.api"
    label = "api"
    verbose_name = "API access"

    def ready(self) -> None:
        from portal.api import schema  # noqa: F401  (registers the OpenAPI authentication extensions)
