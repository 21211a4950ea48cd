"""App configuration of the API plumbing (its idempotency records live here; API tokens are portal.tokens)."""

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "portal.api"
    label = "api"
    verbose_name = "API requests"

    def ready(self) -> None:
        from portal.api import schema  # noqa: F401  (registers the OpenAPI authentication extensions)
