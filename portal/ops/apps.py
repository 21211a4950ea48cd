"""App configuration of the operational commands (Django finds management commands in installed apps)."""

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "portal.ops"
    label = "ops"
    verbose_name = "Operations"
