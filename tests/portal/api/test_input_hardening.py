"""Every endpoint answers bad input with a clear 4xx problem, never 500, and never ignores it: bodies nested too
deeply, bodies too large, unknown fields, and Idempotency-Key bodies compared as JSON, not as bytes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework import serializers

from portal.api.serializers import StrictInput
from portal.deployments.models import Deployment
from portal.tenancy.models import Team, TeamGpuQuota
from tests.conftest import RoleMatrix, assert_problem
from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory

NESTED = "[" * 1000 + "]" * 1000


def _writes() -> list[tuple[str, str]]:
    """(method, path) of every endpoint that takes a body, from the API's own schema, path parameters filled."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = []
    for path, operations in schema["paths"].items():
        for method in operations:
            if method in ("post", "put", "patch"):
                found.append((method, re.sub(r"\{[^}]+\}", "alpha", path)))
    return sorted(found)


WRITES = _writes()


def test_the_sweep_covers_the_api() -> None:
    assert len(WRITES) > 20
    assert ("post", "/api/v1/teams") in WRITES


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_a_body_nested_too_deeply_is_a_400_problem_everywhere(matrix: RoleMatrix, method: str, path: str) -> None:
    response = getattr(matrix.client("platform_admin"), method)(path, data=NESTED, content_type="application/json")
    assert response.status_code < 500, (method, path, response.content[:300])
    if response.status_code == 400:
        assert response["Content-Type"].startswith("application/problem+json")


def test_nested_arrays_are_malformed_not_a_server_error(matrix: RoleMatrix) -> None:
    response = matrix.client("platform_admin").post("/api/v1/teams", data=NESTED, content_type="application/json")
    body = assert_problem(response, 400, "malformed_request")
    assert "nests too deeply" in str(body["detail"])


def test_an_oversized_body_is_413_naming_the_limit_and_changes_nothing(matrix: RoleMatrix, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"slug": "big", "display_name": "x" * 20_000})
    response = matrix.client("platform_admin").post("/api/v1/teams", data=body, content_type="application/json")
    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["limit_bytes"] == 10_000
    assert "10000 bytes" in str(problem["detail"])
    assert not Team.objects.filter(slug="big").exists()


@pytest.fixture
def deployable(matrix: RoleMatrix) -> RoleMatrix:
    AcceleratorPoolFactory(cluster__name="gpu-eu", cluster__region="eu-west", gpu_count=8)
    SelfHostedVersionFactory(model__slug="llama", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=4)
    return matrix


def test_unknown_fields_on_a_deployment_are_field_errors(deployable: RoleMatrix) -> None:
    body = {"name": "chat", "model": "llama", "accelerator_type": "nvidia-l4", "replicas": 3, "gpus": 4}
    response = deployable.client("developer").post("/api/v1/teams/alpha/deployments", body, format="json")
    problem = assert_problem(response, 400, "validation_failed")
    assert {entry["field"] for entry in problem["errors"]} == {"replicas", "gpus"}  # type: ignore[union-attr]
    assert not Deployment.objects.exists()


def test_a_misspelt_token_scope_is_a_field_error(matrix: RoleMatrix) -> None:
    response = matrix.client("platform_admin").post(
        "/api/v1/tokens", {"name": "ci", "scope": ["backstage"]}, format="json"
    )
    problem = assert_problem(response, 400, "validation_failed")
    assert [entry["field"] for entry in problem["errors"]] == ["scope"]  # type: ignore[index]


def test_a_version_in_the_shape_get_returns_is_refused_not_half_read(matrix: RoleMatrix) -> None:
    SelfHostedVersionFactory(model__slug="llama", version="v1")
    body = {
        "version": "v2",
        "served_model_name": "llama-v2",
        "artifact_uri": "hf://meta/llama",
        "hardware": {"gpus_per_replica": 2, "min_gpu_memory_gb": 24},
    }
    response = matrix.client("platform_admin").post("/api/v1/catalog/models/llama/versions", body, format="json")
    problem = assert_problem(response, 400, "validation_failed")
    assert "hardware" in {entry["field"] for entry in problem["errors"]}  # type: ignore[union-attr]


def _input_serializers() -> list[type[serializers.Serializer]]:
    import catalog.api.serializers
    import portal.api.serializers
    import portal.clusters.api.serializers
    import portal.deployments.api.serializers
    import portal.gateway.api.serializers
    import portal.tenancy.api.serializers
    import portal.usage.api.serializers

    modules = [
        catalog.api.serializers,
        portal.api.serializers,
        portal.clusters.api.serializers,
        portal.deployments.api.serializers,
        portal.gateway.api.serializers,
        portal.tenancy.api.serializers,
        portal.usage.api.serializers,
    ]
    return [
        value
        for module in modules
        for name, value in vars(module).items()
        if name.endswith("Input") and isinstance(value, type) and issubclass(value, serializers.Serializer)
    ]


def test_every_input_of_the_api_is_strict() -> None:
    inputs = _input_serializers()
    assert len(inputs) > 15
    loose = [cls.__qualname__ for cls in inputs if not issubclass(cls, StrictInput)]
    assert loose == []


def test_a_token_limit_the_gateway_cannot_hold_is_refused(matrix: RoleMatrix) -> None:
    before = matrix.team.quota.tokens_per_minute
    response = matrix.client("platform_admin").patch(
        "/api/v1/teams/alpha/quota", {"tokens_per_minute": 10**12}, format="json"
    )
    problem = assert_problem(response, 400, "validation_failed")
    assert [entry["field"] for entry in problem["errors"]] == ["tokens_per_minute"]  # type: ignore[index]
    matrix.team.quota.refresh_from_db()
    assert matrix.team.quota.tokens_per_minute == before


def test_an_idempotent_retry_with_its_keys_reordered_is_the_same_request(matrix: RoleMatrix) -> None:
    client = matrix.client("platform_admin")
    first = client.post(
        "/api/v1/teams",
        data='{"slug": "gamma", "display_name": "Gamma"}',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="create-gamma",
    )
    assert first.status_code == 201, first.content
    again = client.post(
        "/api/v1/teams",
        data='{"display_name":"Gamma","slug":"gamma"}',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="create-gamma",
    )
    assert again.status_code == 201, again.content
    assert again["Idempotent-Replayed"] == "true"
    different = client.post(
        "/api/v1/teams",
        data='{"display_name":"Gamma","slug":"delta"}',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="create-gamma",
    )
    assert_problem(different, 422, "idempotency_key_reused")
