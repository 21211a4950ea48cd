"""Self-hosted usage: the gateway reports a deployment's served name; the event is charged to the team, attributed
to the deployment, its catalog model and version, and priced with the catalog model's prices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from catalog.models import CatalogModel
from portal.deployments.models import Deployment, Phase
from portal.deployments.services import deployment_create, deployment_finalize
from portal.tenancy.models import TeamGpuQuota, User
from portal.usage import store
from tests.factories import AcceleratorPoolFactory, PriceFactory, SelfHostedVersionFactory
from tests.portal.usage.conftest import PRICE_START, SOURCE, UsageWorld

SELF_HOSTED_PRICES = {"input": Decimal("0.200000"), "output": Decimal("0.400000")}


@pytest.fixture
def hosted(world: UsageWorld) -> Deployment:
    AcceleratorPoolFactory(cluster__name="gpu-eu", cluster__region="eu-west", gpu_count=8)
    version = SelfHostedVersionFactory(model__slug="qwen", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    for usage_type, price in SELF_HOSTED_PRICES.items():
        PriceFactory(model=version.model, usage_type=usage_type, price_per_million=price, effective_from=PRICE_START)
    TeamGpuQuota.objects.create(quota=world.team.quota, accelerator_type="nvidia-l4", gpus=4)
    return _deploy(world, "chat")


def _deploy(world: UsageWorld, name: str) -> Deployment:
    actor, _ = User.objects.get_or_create(username="deployer", defaults={"is_staff": True})
    return deployment_create(
        actor=actor, platform_admin=True, team=world.team, name=name, model="qwen", accelerator_type="nvidia-l4"
    ).deployment


def _now() -> datetime:
    return datetime.now(UTC)


def _stored(event_id: str) -> dict[str, object]:
    row = store.stored_event(source=SOURCE, event_id=event_id)
    assert row is not None
    model = CatalogModel.objects.filter(pk=row["model_id"]).values_list("slug", flat=True).first()
    return {
        "state": row["state"],
        "reason": row["reason"],
        "team": row["team_id"],
        "model": model,
        "deployment": row["deployment_id"],
        "version": row["model_version_id"],
        "cost": row["cost"],
    }


def test_a_deployments_served_name_is_charged_to_the_team_at_the_catalog_models_price(
    world: UsageWorld, hosted: Deployment
) -> None:
    # The gateway reports the name it routed by and the one it sent upstream (modelNameOverride): both the
    # deployment's served name.
    event = world.event(
        at=_now(), model=hosted.served_model_name, model_override=hosted.served_model_name, output_tokens=300
    )
    response = world.post([event])
    assert response.status_code == 200, response.content
    assert response.json()["quarantined_events"] == []
    assert _stored(event["id"]) == {
        "state": "rated",
        "reason": "",
        "team": world.team.pk,
        "model": "qwen",
        "deployment": hosted.pk,
        "version": hosted.model_version_id,
        "cost": (1000 * SELF_HOSTED_PRICES["input"] + 300 * SELF_HOSTED_PRICES["output"]) / Decimal(1_000_000),
    }


def test_late_events_of_a_deleted_deployment_still_find_it(world: UsageWorld, hosted: Deployment) -> None:
    served_at = _now()
    Deployment.objects.filter(pk=hosted.pk).update(phase=Phase.DELETING)
    assert deployment_finalize(deployment_id=hosted.pk, generation=hosted.generation)
    late = world.event(at=served_at, model=hosted.served_model_name)
    world.post([late])
    assert _stored(late["id"])["deployment"] == hosted.pk
    # after it was gone nothing served under that name: such an event is unknown
    after = world.event(at=_now() + timedelta(seconds=1), model=hosted.served_model_name)
    world.post([after])
    assert _stored(after["id"])["reason"] == "unknown_model"


def test_a_name_reused_by_a_new_deployment_is_attributed_by_the_events_time(
    world: UsageWorld, hosted: Deployment
) -> None:
    Deployment.objects.filter(pk=hosted.pk).update(phase=Phase.DELETING)
    deployment_finalize(deployment_id=hosted.pk, generation=hosted.generation)
    again = _deploy(world, "chat")
    assert again.served_model_name == hosted.served_model_name
    event = world.event(at=_now(), model=again.served_model_name)
    world.post([event])
    assert _stored(event["id"])["deployment"] == again.pk


def test_another_teams_key_on_a_deployments_name_is_not_charged_to_anyone(
    world: UsageWorld, hosted: Deployment
) -> None:
    event = world.event(at=_now(), model=hosted.served_model_name, client_id=world.other_client_id)
    body = world.post([event]).json()
    assert [note["reason"] for note in body["quarantined_events"]] == ["deployment_of_another_team"]
    assert _stored(event["id"])["state"] == "quarantined"
