"""Deployments API, serving modes: a team picks standard or llm-d within what the catalog version and the cluster
allow; prefill replicas count in the GPU quota; on a Kueue cluster the admission allows the nominal quota plus the
borrowing a platform admin allowed, no more."""

from __future__ import annotations

import pytest

from portal.clusters.models import Cluster
from portal.deployments.models import Deployment
from portal.tenancy.models import TeamGpuQuota
from tests.conftest import RoleMatrix, assert_problem
from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(matrix: RoleMatrix) -> RoleMatrix:
    AcceleratorPoolFactory(cluster__name="gpu-llmd", cluster__region="eu-west", cluster__runs_llmd=True, gpu_count=16)
    AcceleratorPoolFactory(cluster__name="gpu-plain", cluster__region="eu-west", gpu_count=32)
    SelfHostedVersionFactory(
        model__slug="llama", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16, serving_modes=["standard", "llm-d"]
    )
    SelfHostedVersionFactory(model__slug="old", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=6, borrowing_limit=4)
    return matrix


def _create(client, **overrides):  # type: ignore[no-untyped-def]
    body = {"name": "chat", "model": "llama", "cluster": "gpu-llmd", "max_replicas": 2} | overrides
    return client.post("/api/v1/teams/alpha/deployments", body, format="json")


def _update(client, name: str = "chat", **changes):  # type: ignore[no-untyped-def]
    return client.patch(f"/api/v1/teams/alpha/deployments/{name}", changes, format="json")


def test_llmd_with_prefill_is_stored_read_back_and_counts_every_gpu(setup: RoleMatrix) -> None:
    client = setup.client("developer")
    response = _create(client, serving_mode="llm-d", prefill_replicas=1, prefill_gpus_per_replica=2)
    assert response.status_code == 201, response.content
    body = client.get("/api/v1/teams/alpha/deployments/chat").json()
    assert (body["serving_mode"], body["prefill_replicas"], body["prefill_gpus_per_replica"]) == ("llm-d", 1, 2)
    # 2 decode replicas x 1 GPU + 1 prefill replica x 2 GPUs = 4 of the 6: a second needing 3 is refused.
    refused = assert_problem(_create(client, name="more", max_replicas=3), 409, "gpu_quota_exceeded")
    assert (refused["used"], refused["requested"], refused["limit"]) == (4, 3, 6)
    assert not Deployment.objects.filter(name="more").exists()


def test_standard_is_the_default(setup: RoleMatrix) -> None:
    body = _create(setup.client("developer")).json()
    assert (body["serving_mode"], body["prefill_replicas"]) == ("standard", 0)


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"serving_mode": "turbo"}, "serving_mode", None),
        ({"serving_mode": "llm-d", "model": "old"}, "serving_mode", "mode_not_supported_by_version"),
        ({"serving_mode": "llm-d", "cluster": "gpu-plain"}, "serving_mode", "mode_not_supported_by_cluster"),
        ({"prefill_replicas": 1}, "prefill_replicas", "requires_llmd"),
        ({"serving_mode": "llm-d", "scale_to_zero": True}, "scale_to_zero", "not_in_llmd_mode"),
        ({"serving_mode": "llm-d", "prefill_gpus_per_replica": 2}, "prefill_gpus_per_replica", "invalid"),
        ({"serving_mode": "llm-d", "model_cache": True}, "model_cache", "not_in_llmd_mode"),
    ],
)
def test_a_mode_the_version_or_cluster_does_not_allow_is_a_field_error(
    setup: RoleMatrix, overrides: dict[str, object], field: str, code: str | None
) -> None:
    body = assert_problem(_create(setup.client("developer"), **overrides), 400)
    problem = next(item for item in body["errors"] if item["field"] == field)  # type: ignore[attr-defined]
    if code is not None:
        assert problem["code"] == code, body
    assert not Deployment.objects.exists()


def test_placed_by_type_an_llmd_deployment_lands_where_llmd_runs(setup: RoleMatrix) -> None:
    client = setup.client("developer")
    by_type = {"model": "llama", "accelerator_type": "nvidia-l4"}
    standard = client.post("/api/v1/teams/alpha/deployments", by_type | {"name": "std"}, format="json")
    assert standard.json()["cluster"] == "gpu-plain"  # the most free GPUs
    llmd = client.post(
        "/api/v1/teams/alpha/deployments", by_type | {"name": "llmd", "serving_mode": "llm-d"}, format="json"
    )
    assert llmd.status_code == 201, llmd.content
    assert llmd.json()["cluster"] == "gpu-llmd"


def test_switching_mode_bumps_generation_and_leaving_llmd_drops_prefill(setup: RoleMatrix) -> None:
    client = setup.client("developer")
    assert _create(client).status_code == 201
    switched = _update(client, serving_mode="llm-d", prefill_replicas=1)
    assert switched.status_code == 200, switched.content
    assert (switched.json()["serving_mode"], switched.json()["generation"]) == ("llm-d", 2)
    back = _update(client, serving_mode="standard").json()
    assert (back["serving_mode"], back["prefill_replicas"], back["generation"]) == ("standard", 0, 3)


def test_switching_to_a_mode_the_cluster_does_not_run_changes_nothing(setup: RoleMatrix) -> None:
    client = setup.client("developer")
    assert _create(client, cluster="gpu-plain").status_code == 201
    body = assert_problem(_update(client, serving_mode="llm-d"), 400)
    assert body["errors"][0]["code"] == "mode_not_supported_by_cluster"  # type: ignore[index]
    assert Deployment.objects.get(name="chat").serving_mode == "standard"
    assert Deployment.objects.get(name="chat").generation == 1


def test_adding_prefill_beyond_the_quota_is_refused(setup: RoleMatrix) -> None:
    client = setup.client("developer")
    assert _create(client, serving_mode="llm-d", max_replicas=4).status_code == 201
    body = assert_problem(_update(client, prefill_replicas=3), 409, "gpu_quota_exceeded")
    assert (body["requested"], body["limit"]) == (7, 6)
    assert Deployment.objects.get(name="chat").prefill_replicas == 0


def test_on_kueue_the_admission_allows_nominal_plus_borrowing_and_no_more(setup: RoleMatrix) -> None:
    Cluster.objects.filter(name="gpu-llmd").update(gpu_quota="kueue")
    client = setup.client("developer")
    assert _create(client, name="big", max_replicas=8).status_code == 201  # 6 nominal + 2 of the 4 it may borrow
    body = assert_problem(_create(client, name="more", max_replicas=3), 409, "gpu_quota_exceeded")
    assert (body["used"], body["requested"], body["limit"], body["borrowing_limit"]) == (8, 3, 10, 4)
    assert _create(client, name="fits", max_replicas=2).status_code == 201
    # A ResourceQuota cluster never lends: there the limit is the nominal quota.
    plain = assert_problem(_create(client, name="plain", cluster="gpu-plain", max_replicas=1), 409)
    assert plain["limit"] == 6


def test_cluster_cannot_stop_running_llmd_under_llmd_deployments(setup: RoleMatrix) -> None:
    assert _create(setup.client("developer"), serving_mode="llm-d").status_code == 201
    admin = setup.client("platform_admin")
    body = assert_problem(admin.patch("/api/v1/clusters/gpu-llmd", {"runs_llmd": False}, format="json"), 409)
    assert (body["code"], body["deployments"]) == ("serving_mode_in_use", 1)
    assert Cluster.objects.get(name="gpu-llmd").runs_llmd is True
    assert Deployment.objects.get(name="chat").generation == 1  # refused whole: nothing marked dirty either
    switched = admin.patch("/api/v1/clusters/gpu-llmd", {"gpu_quota": "kueue"}, format="json")
    assert switched.status_code == 200, switched.content
    assert switched.json()["gpu_quota"] == "kueue"
    # The deployment is built from the cluster: it is marked dirty, never deleted.
    assert Deployment.objects.get(name="chat").generation == 2


def test_a_catalog_version_cannot_stop_offering_llmd_under_llmd_deployments(setup: RoleMatrix) -> None:
    assert _create(setup.client("developer"), serving_mode="llm-d").status_code == 201
    admin = setup.client("platform_admin")
    path = "/api/v1/catalog/models/llama/versions/v1"
    body = assert_problem(admin.patch(path, {"serving_modes": ["standard"]}, format="json"), 409)
    assert (body["code"], body["deployments"]) == ("serving_mode_in_use", 1)
    assert admin.get(path).json()["serving_modes"] == ["standard", "llm-d"]
    # Once the deployment serves in the standard mode, the version may drop llm-d.
    assert _update(setup.client("developer"), serving_mode="standard").status_code == 200
    assert admin.patch(path, {"serving_modes": ["standard"]}, format="json").status_code == 200
