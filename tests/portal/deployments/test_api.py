"""Deployments API: authorization matrix, placement, GPU quota admission (also under concurrency), lifecycle."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from portal.core.models import AuditEvent
from portal.deployments.models import Deployment
from portal.tenancy.models import TeamGpuQuota
from tests.conftest import ROLES, RoleMatrix, assert_problem, client_with_token
from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(matrix: RoleMatrix) -> RoleMatrix:
    AcceleratorPoolFactory(cluster__name="gpu-eu", cluster__region="eu-west", gpu_count=8)
    SelfHostedVersionFactory(model__slug="llama", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=4)
    return matrix


def _create(client, team: str = "alpha", **overrides):  # type: ignore[no-untyped-def]
    body = {"name": "chat", "model": "llama", "accelerator_type": "nvidia-l4", "max_replicas": 2} | overrides
    return client.post(f"/api/v1/teams/{team}/deployments", body, format="json")


@pytest.mark.parametrize("who", ROLES)
def test_create_matrix(setup: RoleMatrix, who: str) -> None:
    response = _create(setup.client(who))
    expected = {
        "anonymous": 401,
        "outsider": 404,
        "viewer": 403,
        "developer": 201,
        "admin": 201,
        "platform_admin": 201,
    }[who]
    assert response.status_code == expected, response.content
    assert Deployment.objects.count() == (1 if expected == 201 else 0)
    if expected != 201:
        assert not AuditEvent.objects.filter(action="deployment.create").exists()


@pytest.mark.parametrize("who", ROLES)
def test_read_matrix(setup: RoleMatrix, who: str) -> None:
    assert _create(setup.client("developer")).status_code == 201
    client = setup.client(who)
    expected = {"anonymous": 401, "outsider": 404}.get(who, 200)
    for path in ("", "/chat", "/chat/events", "/chat/manifests"):
        assert client.get(f"/api/v1/teams/alpha/deployments{path}").status_code == expected


def test_created_deployment_is_pending_with_generation_one(setup: RoleMatrix) -> None:
    body = _create(setup.client("developer")).json()
    assert body["status"]["phase"] == "Pending"
    assert body["generation"] == 1
    assert body["status"]["observed_generation"] == 0
    assert body["cluster"] == "gpu-eu"
    assert body["served_model_name"] == "alpha--chat"
    assert body["gpus_per_replica"] == 1


def test_quota_exceeded_names_requested_used_and_limit(setup: RoleMatrix) -> None:
    client = setup.client("developer")
    assert _create(client, name="one", max_replicas=3).status_code == 201
    body = assert_problem(_create(client, name="two", max_replicas=2), 409, "gpu_quota_exceeded")
    assert (body["requested"], body["used"], body["limit"]) == (2, 3, 4)
    assert not Deployment.objects.filter(name="two").exists()


def test_no_room_on_the_cluster_is_a_409_with_numbers(setup: RoleMatrix) -> None:
    TeamGpuQuota.objects.filter(quota=setup.team.quota).update(gpus=100)
    body = assert_problem(_create(setup.client("developer"), max_replicas=9), 409, "no_capacity")
    assert (body["requested"], body["free"], body["total"]) == (9, 8, 8)


def test_retired_versions_are_refused_and_deprecated_ones_warn(setup: RoleMatrix) -> None:
    SelfHostedVersionFactory(model__slug="old", version="v1", lifecycle="retired")
    SelfHostedVersionFactory(model__slug="aging", version="v1", lifecycle="deprecated")
    client = setup.client("developer")
    body = assert_problem(_create(client, name="a", model="old", version="v1"), 400)
    assert body["errors"][0]["code"] == "version_retired"
    response = _create(client, name="b", model="aging", max_replicas=1)
    assert response.status_code == 201
    assert "deprecated" in response.json()["warnings"][0]
    assert "Warning" in response


def test_disallowed_runtime_override_is_a_field_error(setup: RoleMatrix) -> None:
    body = assert_problem(_create(setup.client("developer"), runtime_args=["--trust_remote_code"]), 400)
    assert body["errors"][0]["field"] == "runtime_args[0]"


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_cannot_exceed_the_gpu_quota(matrix: RoleMatrix) -> None:
    AcceleratorPoolFactory(cluster__name="gpu-eu", gpu_count=64)
    SelfHostedVersionFactory(model__slug="llama", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=4)
    clients = [client_with_token(matrix.developer) for _ in range(6)]
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def send(index: int) -> None:
        try:
            barrier.wait()
            statuses.append(_create(clients[index], name=f"d{index}", max_replicas=2).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 201, 409, 409, 409, 409]
    assert sum(d.max_replicas * d.gpus_per_replica for d in Deployment.objects.all()) == 4


def test_update_bumps_generation_and_delete_marks_deleting(setup: RoleMatrix) -> None:
    client = setup.client("developer")
    _create(client)
    patched = client.patch("/api/v1/teams/alpha/deployments/chat", {"scale_to_zero": True}, format="json")
    assert patched.status_code == 200
    assert (patched.json()["generation"], patched.json()["min_replicas"]) == (2, 0)
    unchanged = client.patch("/api/v1/teams/alpha/deployments/chat", {"scale_to_zero": True}, format="json")
    assert unchanged.json()["generation"] == 2
    assert_problem(setup.client("viewer").delete("/api/v1/teams/alpha/deployments/chat"), 403)
    deleted = client.delete("/api/v1/teams/alpha/deployments/chat")
    assert deleted.status_code == 202
    assert deleted.json()["status"]["phase"] == "Deleting"
    assert deleted.json()["generation"] == 3
    events = client.get("/api/v1/teams/alpha/deployments/chat/events").json()["results"]
    assert [event["reason"] for event in events] == ["DeletionRequested", "SpecChanged", "Created"]
