"""App configuration of the platform console: server-rendered pages over the same selectors as the API."""

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "portal.console"
    label = "console"
    verbose_name = "Platform console"

    def ready(self) -> None:
        from django.contrib import admin

        # The admin's "View site" link leads to the console (the admin stays for editing; the console links back).
        admin.site.site_url = "/console/"
