"""The console's world: two teams that spent through the real ingestion path (collector API, rating, rollups), a
self-hosted deployment that accrued GPU-hours from observed replicas, a budget, a quarantined event, and a
deployment that is not Ready. Nothing is written to the rollups by hand."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client

from portal.deployments.contracts import ObservedStatus
from portal.deployments.models import Deployment
from portal.deployments.services import deployment_create, deployment_status_record
from portal.tenancy.models import TeamGpuQuota, TeamQuota, User
from portal.usage import services as usage_services
from tests.factories import AcceleratorPoolFactory, PriceFactory, SelfHostedVersionFactory
from tests.portal.usage.conftest import PRICE_START, UsageWorld, collector_client, world  # noqa: F401

SELF_HOSTED_PRICES = {"input": Decimal("0.100000"), "output": Decimal("0.400000")}


@dataclass
class ConsoleWorld:
    usage: UsageWorld
    deployment: Deployment
    pending: Deployment
    started: datetime

    @property
    def team_slug(self) -> str:
        return self.usage.team.slug

    def browser_client(self, who: str) -> Client:
        """A signed-in console session (Django's session auth, as the login form gives)."""
        client = Client()
        client.force_login(getattr(self.usage.matrix, who))
        return client


def _observe(deployment: Deployment, replicas: int, at: datetime, *, phase: str = "Ready", message: str = "") -> None:
    status = ObservedStatus(
        phase=phase,
        conditions=(),
        message=message,
        endpoint=f"https://gateway.example/{deployment.served_model_name}" if phase == "Ready" else "",
        observed_replicas=replicas,
    )
    assert deployment_status_record(
        deployment_id=deployment.pk, generation=deployment.generation, status=status, reconciled_at=at
    )


@pytest.fixture
def console_world(world: UsageWorld) -> ConsoleWorld:  # noqa: F811
    now = datetime.now(UTC).replace(microsecond=0)
    # Within this month so far, and within the default range (the 1st to today): on the 1st, a little after midnight.
    # The events are seconds apart and never in the future (ingestion refuses those): in the first seconds of a day,
    # wait until they have happened.
    started = max(now - timedelta(hours=5), now.replace(hour=0, minute=0, second=0) + timedelta(seconds=1))
    if (wait := (started + timedelta(seconds=11) - now).total_seconds()) > 0:
        time.sleep(wait)
    AcceleratorPoolFactory(
        cluster__name="gpu-eu", accelerator_type="nvidia-l4", gpu_count=8, hourly_price_per_gpu=Decimal("0.8000")
    )
    version = SelfHostedVersionFactory(model__slug="qwen", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    for usage_type, price in SELF_HOSTED_PRICES.items():
        PriceFactory(model=version.model, usage_type=usage_type, price_per_million=price, effective_from=PRICE_START)
    TeamGpuQuota.objects.create(quota=world.team.quota, accelerator_type="nvidia-l4", gpus=4)
    TeamQuota.objects.filter(team=world.team).update(monthly_budget=Decimal("10.00"), budget_policy="alert")
    actor, _ = User.objects.get_or_create(username="deployer", defaults={"is_staff": True})
    deployment = deployment_create(
        actor=actor, platform_admin=True, team=world.team, name="chat", model="qwen", accelerator_type="nvidia-l4"
    ).deployment
    pending = deployment_create(
        actor=actor, platform_admin=True, team=world.team, name="batch", model="qwen", accelerator_type="nvidia-l4"
    ).deployment
    _observe(deployment, 2, started)
    _observe(pending, 0, started, phase="Failed", message="ImagePullBackOff: the model server image was not found")
    usage_services.gpu_usage_accrue(now=min(started + timedelta(hours=3), now))
    events = [
        world.event(
            at=started + timedelta(seconds=5),
            input_tokens=120_000,
            output_tokens=30_000,
            duration_ms=900,
            time_to_first_token_ms=120,
        ),
        world.event(
            at=started + timedelta(seconds=6),
            input_tokens=5_000,
            output_tokens=700,
            cached=1_000,
            duration_ms=300,
            time_to_first_token_ms=60,
        ),
        world.event(
            at=started + timedelta(seconds=7),
            model="qwen",
            input_tokens=40_000,
            output_tokens=9_000,
            status_code=503,
            duration_ms=40,
        ),
        world.event(
            at=started + timedelta(seconds=8), client_id=world.other_client_id, input_tokens=777, output_tokens=77
        ),
        world.event(at=started + timedelta(seconds=9), model="no-such-model"),  # quarantined: unknown model
    ]
    answer = world.post(events).json()
    assert (answer["accepted"], answer["quarantined"]) == (5, 1), answer  # accepted counts the quarantined one
    usage_services.usage_rollups_recompute()
    deployment.refresh_from_db()
    pending.refresh_from_db()
    return ConsoleWorld(usage=world, deployment=deployment, pending=pending, started=started)
