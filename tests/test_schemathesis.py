"""The API answers as its OpenAPI document says: schemathesis fuzzes the running service from the schema and checks
that no input yields a 500, that every status is documented, and that every body matches its response schema, over
data that holds the shapes a real portal stores (a Backstage username, a Ready deployment with conditions and
manifests, costs, a rotated key)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from portal.deployments.models import Deployment
from portal.gateway import services as gateway_services
from portal.tenancy.models import Role, TeamQuota
from portal.tokens.services import api_token_issue
from portal.usage.models import GpuUsage, GpuUsageDaily, UsageDaily, UsageModelDaily, UsageTeamDaily
from tests.factories import (
    AcceleratorPoolFactory,
    ManagedVersionFactory,
    MembershipFactory,
    PriceFactory,
    SelfHostedVersionFactory,
    TeamFactory,
    UserFactory,
)

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# `make test` runs a bounded smoke (a few generated cases per operation, no coverage phase: about a minute);
# `make schemathesis` runs the full fuzz (100 examples, every phase: many minutes).
MAX_EXAMPLES = os.environ.get("PORTAL_FUZZ_EXAMPLES", "3")
PHASES = os.environ.get("PORTAL_FUZZ_PHASES", "examples,fuzzing")
# Beyond "no 5xx": every answer has a status the schema documents, the content type it names, and a body that matches
# its response schema.
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


# Half of the generated path parameters name objects that exist, so that operations reach their answers (and their
# response schemas) instead of stopping at 404; the other half stay random.
CONFIG = """
[dictionaries.teams]
values = ["alpha"]
[dictionaries.clusters]
values = ["fuzz-cluster"]
[dictionaries.models]
values = ["llama", "gpt"]
[dictionaries.versions]
values = ["v1", "2025-01-01"]
[dictionaries.deployments]
values = ["chat"]
[dictionaries.accelerators]
values = ["nvidia-l4"]
[dictionaries.users]
values = ["user:default/fuzzer", "user:default/dave"]
[dictionaries.credentials]
values = [1, 2]

[parameters]
"path.team" = { dictionary = "teams", probability = 0.5 }
"path.cluster" = { dictionary = "clusters", probability = 0.5 }
"path.model" = { dictionary = "models", probability = 0.5 }
"path.version" = { dictionary = "versions", probability = 0.5 }
"path.name" = { dictionary = "deployments", probability = 0.5 }
"path.accelerator_type" = { dictionary = "accelerators", probability = 0.5 }
"path.user" = { dictionary = "users", probability = 0.5 }
"path.credential_id" = { dictionary = "credentials", probability = 0.5 }
"""


def _run(base_url: str, token: str, report_dir: Path) -> subprocess.CompletedProcess[str]:
    config = report_dir / "schemathesis.toml"
    config.write_text(CONFIG)
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"{base_url}/api/schema/",
            "--url",
            base_url,
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            MAX_EXAMPLES,
            "--phases",
            PHASES,
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--seed",
            "20261122",
            "--suppress-health-check",
            "all",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=report_dir,
    )


@pytest.mark.schemathesis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["platform_admin", "team_admin"])
def test_no_input_yields_a_server_error(live_server: object, settings: object, tmp_path: Path, who: str) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"principal": "100000/minute"}}  # type: ignore[attr-defined]
    team = TeamFactory(slug="alpha")
    person = UserFactory(backstage_ref="user:default/fuzzer", is_staff=who == "platform_admin")
    MembershipFactory(team=team, user=person, role=Role.ADMIN)
    _seed_stored_shapes(team)
    token = api_token_issue(actor=None, principal=person, name="fuzz", scopes=[]).plaintext
    result = _run(live_server.url, token, tmp_path)  # type: ignore[attr-defined]
    summary = "\n".join(result.stdout.splitlines()[-60:])
    print(result.stdout)
    assert result.returncode == 0, summary


def _seed_stored_shapes(team: object) -> None:
    """What a portal in use holds, written as its writers write it (Backstage sync, the reconciler, rollups)."""
    # Backstage sync creates users whose username is their entity ref, which no input pattern of a username accepts.
    dave = UserFactory(username="user:default/dave", backstage_ref="user:default/dave", email="")
    MembershipFactory(team=team, user=dave, role=Role.VIEWER)
    version = SelfHostedVersionFactory(model__slug="llama", version="v1")
    PriceFactory(model=ManagedVersionFactory(model__slug="gpt", version="2025-01-01").model)
    pool = AcceleratorPoolFactory(cluster__name="fuzz-cluster")
    now = datetime.now(UTC)
    Deployment.objects.create(
        team=team,
        name="chat",
        model_version=version,
        cluster=pool.cluster,
        accelerator_type=pool.accelerator_type,
        served_model_name="alpha-chat",
        gpus_per_replica=1,
        phase="Ready",
        observed_generation=1,
        observed_replicas=1,
        endpoint="http://gateway/openai/v1",
        last_reconciled_at=now,
        conditions=[{"type": "Ready", "status": "True", "reason": "", "message": ""}],
        applied_manifests=[
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-alpha", "labels": {"a": "b"}}}
        ],
    )
    issued = gateway_services.credential_issue(actor=None, team=team, name="fuzz-key")
    gateway_services.credential_rotate(actor=None, credential=issued.credential, overlap=timedelta(hours=1))
    TeamQuota.objects.filter(team=team).update(monthly_budget=Decimal("100.00"))
    UsageDaily.objects.create(
        team=team,
        day=now.date(),
        model_id=version.model_id,
        model_slug="llama",
        credential_id=issued.credential_id,
        client_id="alpha.fuzz",
        requests=3,
        input_tokens=1200,
        output_tokens=300,
        cost=Decimal("0.001234567890"),
    )
    GpuUsage.objects.create(
        deployment_id=1,
        deployment_name="chat",
        team=team,
        cluster_name=pool.cluster.name,
        accelerator_type=pool.accelerator_type,
        started_at=now - timedelta(minutes=30),
        ended_at=now,
        replicas=1,
        gpus_per_replica=1,
        gpu_hours=Decimal("0.5"),
        price_per_gpu_hour=Decimal("0.8000"),
        cost=Decimal("0.4"),
    )
    # What the compactor adds to the coarse rollups with that daily row (the reports over teams and days read them).
    UsageTeamDaily.objects.create(
        team=team, day=now.date(), requests=3, input_tokens=1200, output_tokens=300, cost=Decimal("0.001234567890")
    )
    UsageModelDaily.objects.create(
        model_id=version.model_id,
        model_slug="llama",
        day=now.date(),
        requests=3,
        input_tokens=1200,
        output_tokens=300,
        cost=Decimal("0.001234567890"),
    )
    # What the accrual adds to the daily GPU rollup in the same transaction (the reports read the rollup).
    GpuUsageDaily.objects.create(
        day=(now - timedelta(minutes=30)).date(),
        deployment_id=1,
        deployment_name="chat",
        team=team,
        cluster_name=pool.cluster.name,
        accelerator_type=pool.accelerator_type,
        gpu_hours=Decimal("0.5"),
        cost=Decimal("0.4"),
    )
    UsageTeamDaily.objects.update_or_create(
        team=team,
        day=(now - timedelta(minutes=30)).date(),
        defaults={"gpu_hours": Decimal("0.5"), "gpu_cost": Decimal("0.4")},
    )
