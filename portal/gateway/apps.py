"""App configuration of the gateway."""

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "portal.gateway"
    label = "gateway"
    verbose_name = "AI gateway"
