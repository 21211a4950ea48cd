"""Start, inspect or stop the embedded PostgreSQL and Redis under var/."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from portal import embedded


class Command(BaseCommand):
    help = "Manage the embedded PostgreSQL and Redis that run when DATABASE_URL / REDIS_URL are not set"
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["stop", "status"])

    def handle(self, *args: Any, **options: Any) -> None:
        var_dir = settings.VAR_DIR
        if options["action"] == "status":
            postgres = (var_dir / "postgres" / "postmaster.pid").exists()
            redis = embedded.redis_socket_path(var_dir).exists()
            self.stdout.write(
                f"postgres: {'running' if postgres else 'stopped'}; redis: {'running' if redis else 'stopped'}"
            )
            return
        stopped_postgres = embedded.stop_postgres(var_dir)
        stopped_redis = embedded.stop_redis(var_dir)
        self.stdout.write(
            f"postgres {'stopped' if stopped_postgres else 'was not running'}; "
            f"redis {'stopped' if stopped_redis else 'was not running'}"
        )
