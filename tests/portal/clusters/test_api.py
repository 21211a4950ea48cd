"""Clusters API: capacity for everyone signed in, registration for platform admins, credentials never returned."""

from __future__ import annotations

import json

import pytest

from portal.clusters.models import Cluster
from portal.clusters.selectors import cluster_connection
from portal.core.models import AuditEvent
from tests.conftest import ROLES, RoleMatrix, assert_problem
from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory

pytestmark = pytest.mark.django_db

REGISTRATION = {
    "name": "gpu-us",
    "api_server": "https://k8s.gpu-us.example.com:6443",
    "auth_kind": "token",
    "token": "super-secret-token-value",
    "ca_bundle": "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----",
    "region": "us-east",
    "gateway_namespace": "genai-gateway",
    "gateway_name": "ai-gateway",
}


@pytest.mark.parametrize("who", ROLES)
def test_register_matrix_and_secrets_never_returned(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).post("/api/v1/clusters", REGISTRATION, format="json")
    expected = {"anonymous": 401, "platform_admin": 201}.get(who, 403)
    assert response.status_code == expected
    if expected != 201:
        assert not Cluster.objects.exists()
        assert not AuditEvent.objects.filter(action="cluster.register").exists()
        return
    assert "super-secret-token-value" not in response.content.decode()
    stored = Cluster.objects.get(name="gpu-us")
    assert "super-secret-token-value" not in stored.credentials_ciphertext
    assert cluster_connection(cluster_id=stored.pk).token == "super-secret-token-value"
    audit = AuditEvent.objects.get(action="cluster.register")
    assert "super-secret-token-value" not in json.dumps(audit.after)


@pytest.mark.parametrize("who", ROLES)
def test_capacity_is_visible_to_everyone_signed_in(matrix: RoleMatrix, who: str) -> None:
    AcceleratorPoolFactory(cluster__name="gpu-eu", gpu_count=8)
    response = matrix.client(who).get("/api/v1/clusters")
    if who == "anonymous":
        assert_problem(response, 401)
        return
    pool = response.json()["results"][0]["pools"][0]
    assert pool["capacity"] == {"total": 8, "allocated": 0, "free": 8}
    assert "credentials_ciphertext" not in response.content.decode()


def test_capacity_counts_deployments(matrix: RoleMatrix) -> None:
    from portal.tenancy.models import TeamGpuQuota

    AcceleratorPoolFactory(cluster__name="gpu-eu", gpu_count=8)
    SelfHostedVersionFactory(model__slug="llama", version="v1", gpus_per_replica=2, min_gpu_memory_gb=16)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=8)
    created = matrix.client("developer").post(
        "/api/v1/teams/alpha/deployments",
        {"name": "chat", "model": "llama", "cluster": "gpu-eu", "max_replicas": 3},
        format="json",
    )
    assert created.status_code == 201
    pool = matrix.client("viewer").get("/api/v1/clusters/gpu-eu").json()["pools"][0]
    assert pool["capacity"] == {"total": 8, "allocated": 6, "free": 2}


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Bad_Name"), ("api_server", "ftp://x"), ("gateway_namespace", "Not A Label"), ("region", " ")],
)
def test_invalid_registration_is_a_field_error(matrix: RoleMatrix, field: str, value: str) -> None:
    body = assert_problem(
        matrix.client("platform_admin").post("/api/v1/clusters", REGISTRATION | {field: value}, format="json"), 400
    )
    assert field in [entry["field"] for entry in body["errors"]]
    assert not Cluster.objects.exists()


def test_knative_mode_requires_kpa(matrix: RoleMatrix) -> None:
    body = assert_problem(
        matrix.client("platform_admin").post(
            "/api/v1/clusters", REGISTRATION | {"deployment_mode": "Knative", "autoscaler_class": "keda"}, format="json"
        ),
        400,
    )
    assert body["errors"][0]["field"] == "autoscaler_class"


def test_pool_upsert_is_for_platform_admins(matrix: RoleMatrix) -> None:
    matrix.client("platform_admin").post("/api/v1/clusters", REGISTRATION, format="json")
    pool = {"gpu_product": "NVIDIA-H100-80GB-HBM3", "gpu_memory_gb": 80, "hourly_price_per_gpu": "6.8800"}
    assert_problem(
        matrix.client("admin").put("/api/v1/clusters/gpu-us/pools/nvidia-h100-80gb", pool, format="json"), 403
    )
    response = matrix.client("platform_admin").put(
        "/api/v1/clusters/gpu-us/pools/nvidia-h100-80gb", pool, format="json"
    )
    assert response.status_code == 200
    assert response.json()["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert response.json()["hourly_price_per_gpu"] == "6.8800"
