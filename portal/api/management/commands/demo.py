"""`make demo`: migrate, load the starter catalog, seed a demo team, admin and tokens, then run
web, worker and beat until Ctrl-C, and stop everything it started (the embedded servers too)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

from portal import embedded
from portal.api.services import api_token_issue
from portal.tenancy import services as tenancy_services
from portal.tenancy.models import Membership, Role, Team, User

DEMO_TEAM = "demo"
DEMO_DEVELOPER = "user:default/demo-developer"


class Command(BaseCommand):
    help = "Run the whole portal locally on embedded defaults (web, worker, beat) until Ctrl-C"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--setup-only", action="store_true", help="prepare data and exit without serving")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("load_catalog", verbosity=1, stdout=self.stdout)
        call_command("collectstatic", interactive=False, verbosity=0)
        credentials = self._seed()
        if options["setup_only"]:
            self._print(credentials)
            return
        self._serve(credentials)

    def _seed(self) -> dict[str, str]:
        admin, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        password = secrets.token_urlsafe(12)
        admin.is_staff = admin.is_superuser = True
        admin.set_password(password)
        admin.save()
        developer = tenancy_services.user_get_or_create_from_backstage_ref(backstage_ref=DEMO_DEVELOPER)
        team = Team.objects.filter(slug=DEMO_TEAM).first()
        if team is None:
            team = tenancy_services.team_create(
                actor=developer,
                slug=DEMO_TEAM,
                display_name="Demo team",
                description="Created by make demo",
                backstage_group_ref="group:default/demo",
            )
        if not Membership.objects.filter(team=team, user=developer).exists():
            tenancy_services.membership_add(actor=admin, team=team, user_ref=DEMO_DEVELOPER, role=Role.ADMIN)
        admin_token = api_token_issue(actor=admin, principal=admin, name="make demo (platform admin)", scopes=[])
        developer_token = api_token_issue(actor=admin, principal=developer, name="make demo (team admin)", scopes=[])
        return {
            "admin_password": password,
            "admin_token": admin_token.plaintext,
            "developer_token": developer_token.plaintext,
        }

    def _child_environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        database = settings.DATABASES["default"]
        if "DATABASE_URL" not in environment:
            host = quote(str(database["HOST"]), safe="")
            environment["DATABASE_URL"] = f"postgres://{database['USER']}@{host}:{database['PORT']}/{database['NAME']}"
        environment.setdefault("REDIS_URL", settings.RESOLVED_REDIS_URL)
        environment.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
        return environment

    def _serve(self, credentials: dict[str, str]) -> None:
        connection.close()
        bin_dir = os.path.dirname(sys.executable)
        address = f"{settings.PORTAL_HOST}:{settings.PORTAL_PORT}"
        commands = {
            "web": [
                os.path.join(bin_dir, "gunicorn"),
                "portal.wsgi",
                "--bind",
                address,
                "--workers",
                "2",
                "--threads",
                "4",
                "--access-logfile",
                "-",
                "--graceful-timeout",
                "5",
            ],
            "worker": [
                os.path.join(bin_dir, "celery"),
                "-A",
                "portal",
                "worker",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            "beat": [
                os.path.join(bin_dir, "celery"),
                "-A",
                "portal",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
        }
        environment = self._child_environment()
        children = {name: subprocess.Popen(command, env=environment) for name, command in commands.items()}
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            if self._wait_healthy(address, children):
                self._print(credentials)
            while not stopping:
                exited = [name for name, child in children.items() if child.poll() is not None]
                if exited:
                    self.stderr.write(f"{', '.join(exited)} exited; stopping the demo")
                    break
                time.sleep(0.5)
        finally:
            self._shutdown(children)

    def _wait_healthy(self, address: str, children: dict[str, subprocess.Popen[bytes]]) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if children["web"].poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.5)
        self.stderr.write("the web process did not become ready within 60 s")
        return False

    def _shutdown(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for name, child in children.items():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in 15 s; killing it")
                child.kill()
                child.wait()
        if "DATABASE_URL" not in os.environ:
            embedded.stop_postgres(settings.VAR_DIR)
        if "REDIS_URL" not in os.environ:
            embedded.stop_redis(settings.VAR_DIR)
        self.stdout.write("demo stopped; nothing left running")

    def _print(self, credentials: dict[str, str]) -> None:
        base = f"http://{settings.PORTAL_HOST}:{settings.PORTAL_PORT}"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "GenAI portal demo is up.",
                    f"  API:            {base}/api/v1/",
                    f"  API docs:       {base}/api/docs/",
                    f"  OpenAPI schema: {base}/api/schema/",
                    f"  Admin UI:       {base}/admin/  (user 'admin', password {credentials['admin_password']})",
                    f"  Health:         {base}/healthz  {base}/readyz  {base}/metrics",
                    "",
                    "API tokens (shown once; they are stored only as hashes):",
                    f"  platform admin:               {credentials['admin_token']}",
                    f"  {DEMO_DEVELOPER} (team '{DEMO_TEAM}' admin): {credentials['developer_token']}",
                    "",
                    f"  curl -H 'Authorization: Bearer {credentials['developer_token']}' {base}/api/v1/catalog/models",
                    "",
                    "Press Ctrl-C to stop everything.",
                    "",
                ]
            )
        )
