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
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from portal import embedded
from portal.clusters import services as cluster_services
from portal.clusters.models import Cluster
from portal.core.links import console_url
from portal.core.queues import celery_queues
from portal.deployments import services as deployment_services
from portal.deployments.models import Deployment
from portal.gateway import services as gateway_services
from portal.gateway.models import Credential, ProviderBackend
from portal.tenancy import services as tenancy_services
from portal.tenancy.models import Membership, Role, Team, User
from portal.tokens.models import ApiToken
from portal.tokens.services import api_token_issue, api_token_revoke
from portal.usage import services as usage_services

DEMO_TEAM = "demo"
DEMO_DEVELOPER = "user:default/demo-developer"
SANDBOX_CLUSTER = "sandbox"
# The sandbox API checks bearer tokens as a cluster's does; the demo's cluster is registered with this one.
SANDBOX_API_TOKEN = "sandbox"
# The sandbox's nodes (workers/sandbox/server.py DEFAULT_NODE_POOLS) and its gateway (DEFAULT_GATEWAY).
SANDBOX_POOLS = {
    "nvidia-l4": {
        "gpu_product": "NVIDIA-L4",
        "gpu_count": 16,
        "gpu_memory_gb": 24,
        "hourly_price_per_gpu": Decimal("0.80"),
    },
    "nvidia-h100": {
        "gpu_product": "NVIDIA-H100-80GB-HBM3",
        "gpu_count": 16,
        "gpu_memory_gb": 80,
        "hourly_price_per_gpu": Decimal("6.88"),
    },
}
DEMO_GPU_QUOTA = {"nvidia-l4": 8, "nvidia-h100": 8}
# What a team onboarded through Backstage gets in the demo (unless PORTAL_DEFAULT_GPU_QUOTA says otherwise): enough to
# deploy a 7B model on an L4 without waiting for an admin; more is a quota request a platform admin approves.
DEMO_DEFAULT_GPU_QUOTA = "nvidia-l4:2"
DEMO_DEPLOYMENT = ("chat", "qwen2-5-7b-instruct", "nvidia-l4")  # (name, catalog model, accelerator type)
DEMO_MANAGED_MODEL = "gpt-4o-mini"
DEMO_KEY_NAME = "make demo"
# The sandbox gateway plays the cluster's OpenTelemetry collector too: it ships the access log to the portal with
# this service's collector token, bound to the sandbox cluster's usage source.
COLLECTOR_PRINCIPAL = "sandbox-gateway-collector"
# The address the EnvoyProxy's OpenTelemetry sink names (a collector in the cluster); with none, the gateway
# emits no usage log (workers/provisioning/manifests/bootstrap.py), so the demo names one.
DEMO_OTEL_COLLECTOR = "otel-collector.genai-gateway.svc.cluster.local:4317"


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
        admin_token = self._fresh_token(admin, admin, "make demo (platform admin)")
        developer_token = self._fresh_token(admin, developer, "make demo (team admin)")
        return {
            "admin_password": password,
            "admin_token": admin_token.plaintext,
            "developer_token": developer_token.plaintext,
        }

    def _fresh_token(self, admin: User, principal: User, name: str, scopes: list[str] | None = None) -> Any:
        """A new token; the ones earlier runs issued under the same name are revoked, so one of each is live at a
        time (they last 90 days otherwise)."""
        for old in ApiToken.objects.filter(principal=principal, name=name, revoked_at__isnull=True):
            api_token_revoke(actor=admin, token_id=old.pk, principal=None)
        return api_token_issue(actor=admin, principal=principal, name=name, scopes=scopes or [])

    def _child_environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        database = settings.DATABASES["default"]
        if "DATABASE_URL" not in environment:
            host = quote(str(database["HOST"]), safe="")
            environment["DATABASE_URL"] = f"postgres://{database['USER']}@{host}:{database['PORT']}/{database['NAME']}"
        environment.setdefault("REDIS_URL", settings.RESOLVED_REDIS_URL)
        environment.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
        return environment

    def _start_sandbox(self, environment: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, str]:
        """The sandbox Kubernetes API and its gateway data plane (a child process), registered as the cluster the
        demo deploys to; the gateway ships its access log to this portal's OTLP endpoint."""
        port = int(os.environ.get("PORTAL_SANDBOX_PORT") or _free_port())
        gateway_port = int(os.environ.get("PORTAL_SANDBOX_GATEWAY_PORT") or _free_port())
        collector_token = self._collector_token()
        portal = f"http://{settings.PORTAL_HOST}:{settings.PORTAL_PORT}"
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.sandbox",
                "--port",
                str(port),
                "--ready-delay",
                "5",
                "--gateway-port",
                str(gateway_port),
                "--usage-endpoint",
                f"{portal}/otlp/v1/logs",
            ],
            env={**environment, "SANDBOX_USAGE_TOKEN": collector_token, "SANDBOX_API_TOKEN": SANDBOX_API_TOKEN},
        )
        url = f"http://127.0.0.1:{port}"
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/version", timeout=2) as response:  # noqa: S310 (http://127.0.0.1)
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            child.kill()
            raise CommandError("the sandbox cluster did not start")
        self._register_sandbox(url, gateway_url)
        return child, url, gateway_url

    def _collector_token(self) -> str:
        """A fresh usage:write token for the sandbox gateway's shipper (the previous run's is revoked), bound to
        the sandbox cluster's usage source."""
        admin = User.objects.get(username="admin")
        principal = tenancy_services.service_principal_get_or_create(actor=admin, name=COLLECTOR_PRINCIPAL)
        issued = self._fresh_token(admin, principal, "sandbox gateway", scopes=["usage:write"])
        usage_services.collector_source_bind(
            actor=admin, token_id=issued.token.pk, source_prefix=f"aigw://{SANDBOX_CLUSTER}/"
        )
        return issued.plaintext

    def _register_sandbox(self, url: str, gateway_url: str) -> None:
        admin = User.objects.get(username="admin")
        cluster = Cluster.objects.filter(name=SANDBOX_CLUSTER).first()
        if cluster is None:
            cluster = cluster_services.cluster_register(
                actor=admin,
                name=SANDBOX_CLUSTER,
                api_server=url,
                auth_kind="token",
                token=SANDBOX_API_TOKEN,
                region="local",
                gateway_namespace="genai-gateway",
                gateway_name="ai-gateway",
                deployment_mode="Standard",
                autoscaler_class="keda",
                apply_gateway_bootstrap=True,
                gateway_url=gateway_url,
            )
        elif cluster.api_server != url or cluster.gateway_url != gateway_url or not cluster.apply_gateway_bootstrap:
            cluster = cluster_services.cluster_update(
                actor=admin,
                cluster=cluster,
                changes={"api_server": url, "gateway_url": gateway_url, "apply_gateway_bootstrap": True},
                credentials={"auth_kind": "token", "token": SANDBOX_API_TOKEN, "ca_bundle": None},
            )
        for accelerator_type, values in SANDBOX_POOLS.items():
            cluster_services.accelerator_pool_upsert(
                actor=admin,
                cluster=cluster,
                accelerator_type=accelerator_type,
                values={
                    **values,
                    "node_selector": {"nvidia.com/gpu.product": values["gpu_product"]},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                },
            )
        if not ProviderBackend.objects.filter(cluster=cluster, provider="openai").exists():
            # The sandbox gateway answers for api.openai.com itself; the key is the demo's, never a real one.
            gateway_services.provider_backend_create(
                actor=admin,
                cluster=cluster,
                values={
                    "name": "openai",
                    "provider": "openai",
                    "hostname": "api.openai.com",
                    "credential": "sk-sandbox-demo",
                },
            )
        team = Team.objects.get(slug=DEMO_TEAM)
        if not team.quota.gpu_limits.exists():
            tenancy_services.team_quota_update(actor=admin, team=team, changes={"gpus": DEMO_GPU_QUOTA})

    def _demo_traffic(self, credentials: dict[str, str]) -> None:
        """The demo team's deployment (served by the sandbox gateway once Ready) and a gateway key for it; the key
        of the previous run is revoked, so one demo key is live at a time."""
        developer = User.objects.get(backstage_ref=DEMO_DEVELOPER)
        team = Team.objects.get(slug=DEMO_TEAM)
        name, model, accelerator_type = DEMO_DEPLOYMENT
        deployment = Deployment.objects.filter(team=team, name=name).first()
        if deployment is None:
            deployment = deployment_services.deployment_create(
                actor=developer,
                platform_admin=False,
                team=team,
                name=name,
                model=model,
                accelerator_type=accelerator_type,
            ).deployment
        for old in Credential.objects.filter(team=team, name=DEMO_KEY_NAME, revoked_at__isnull=True):
            gateway_services.credential_revoke(actor=developer, credential=old)
        issued = gateway_services.credential_issue(actor=developer, team=team, name=DEMO_KEY_NAME)
        credentials["gateway_key"] = issued.key
        credentials["served_model_name"] = deployment.served_model_name

    def _serve(self, credentials: dict[str, str]) -> None:
        bin_dir = os.path.dirname(sys.executable)
        address = f"{settings.PORTAL_HOST}:{settings.PORTAL_PORT}"
        environment = self._child_environment()
        environment.setdefault("PORTAL_GATEWAY_OTEL_COLLECTOR", DEMO_OTEL_COLLECTOR)
        environment.setdefault("PORTAL_DEFAULT_GPU_QUOTA", DEMO_DEFAULT_GPU_QUOTA)
        environment.setdefault("PORTAL_PUBLIC_URL", f"http://{address}")
        sandbox, sandbox_url, gateway_url = self._start_sandbox(environment)
        credentials["sandbox_url"] = sandbox_url
        credentials["gateway_url"] = gateway_url
        self._demo_traffic(credentials)
        connection.close()
        commands = {
            "web": web_command(address),
            # One worker per Celery queue, as k8s/portal runs them: a re-rate never waits in front of a reconcile.
            **{
                f"worker-{queue}": [
                    os.path.join(bin_dir, "celery"),
                    "-A",
                    "portal",
                    "worker",
                    "--queues",
                    queue,
                    "--hostname",
                    f"{queue}@%h",
                    "--concurrency",
                    "2" if queue == "reconcile" else "1",
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                ]
                for queue in celery_queues()
            },
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
        children = {name: subprocess.Popen(command, env=environment) for name, command in commands.items()}
        children["sandbox"] = sandbox
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
        developer_token = credentials["developer_token"]
        lines = [
            "",
            "GenAI portal demo is up.",
            f"  Console:        {console_url()}",
            f"  API:            {base}/api/v1/",
            f"  API docs:       {base}/api/docs/",
            f"  OpenAPI schema: {base}/api/schema/",
            f"  Admin UI:       {base}/admin/  (user 'admin', password {credentials['admin_password']})",
            f"  Health:         {base}/healthz  {base}/readyz  {base}/metrics",
            "",
            f"  Sandbox cluster: {credentials.get('sandbox_url', '(not started)')} "
            f"(registered as '{SANDBOX_CLUSTER}'; team '{DEMO_TEAM}' may use 8 nvidia-l4 and 8 nvidia-h100 GPUs)",
            "",
            "API tokens (shown once; they are stored only as hashes):",
            f"  platform admin:               {credentials['admin_token']}",
            f"  {DEMO_DEVELOPER} (team '{DEMO_TEAM}' admin): {developer_token}",
            "",
            f"  curl -H 'Authorization: Bearer {developer_token}' {base}/api/v1/catalog/models",
        ]
        if "gateway_url" in credentials:
            gateway, key, model = (
                credentials["gateway_url"],
                credentials["gateway_key"],
                credentials["served_model_name"],
            )
            lines += [
                "",
                f"  Gateway (OpenAI-compatible): {gateway}/v1",
                f"  Team '{DEMO_TEAM}' gateway key (shown once): {key}",
                f"  Deployment '{DEMO_DEPLOYMENT[0]}' is served as '{model}' once Ready (a few seconds); "
                f"'{DEMO_MANAGED_MODEL}' is a managed model answered by the sandbox's stand-in provider.",
                "",
                f"  curl -s {gateway}/v1/chat/completions -H 'Authorization: Bearer {key}' "
                "-H 'Content-Type: application/json' "
                f'-d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello from the demo"}}], '
                '"max_tokens": 32}\'',
                "",
                "  The same from the OpenAI SDK (pip install openai):",
                "    from openai import OpenAI",
                f'    client = OpenAI(base_url="{gateway}/v1", api_key="{key}")',
                f'    client.chat.completions.create(model="{model}", '
                'messages=[{"role": "user", "content": "Hello from the demo"}], max_tokens=32)',
                "",
                "  Its tokens and cost reach the team's report within a minute:",
                f"  curl -H 'Authorization: Bearer {developer_token}' '{base}/api/v1/teams/{DEMO_TEAM}/costs?group_by=model'",
            ]
        lines += [
            "",
            "  Deploy another model to the sandbox cluster (Ready in a few seconds):",
            f"  curl -X POST -H 'Authorization: Bearer {developer_token}' "
            "-H 'Content-Type: application/json' "
            f'-d \'{{"name": "coder", "model": "qwen2-5-coder-7b-instruct", "accelerator_type": "nvidia-l4"}}\' '
            f"{base}/api/v1/teams/{DEMO_TEAM}/deployments",
            "",
            "Press Ctrl-C to stop everything.",
            "",
        ]
        self.stdout.write("\n".join(lines))


def web_command(address: str) -> list[str]:
    """The demo's web process: gunicorn with its access log on stdout, secrets redacted (tests run it as it is)."""
    return [
        os.path.join(os.path.dirname(sys.executable), "gunicorn"),
        "portal.wsgi",
        "--bind",
        address,
        "--workers",
        "2",
        "--threads",
        "4",
        "--access-logfile",
        "-",
        # One-time reveal links carry their secret in the path: the access log writes it redacted.
        "--logger-class",
        "portal.core.logs.RedactingGunicornLogger",
        "--graceful-timeout",
        "5",
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
