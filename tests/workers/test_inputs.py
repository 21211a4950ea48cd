"""Desired state never changes behind the reconciler's back: an edit of anything a running deployment is built from
(its catalog version, the team's gateway keys, its accelerator pool, its cluster) bumps the deployment's generation,
records an event naming the change, nudges its reconcile, and the reconcile puts the change on the cluster. Edits
that build nothing different (a price, a GPU count from the inventory, an unchanged value) bump nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from kubernetes import client as k8s

from catalog.models import ModelVersion
from portal.clusters.models import AcceleratorPool
from portal.clusters.services import accelerator_pool_upsert, cluster_update
from portal.deployments.models import Deployment, DeploymentEvent
from portal.deployments.selectors import deployment_resync_plan
from portal.gateway.models import Credential
from portal.gateway.services import credential_issue
from tests.conftest import RoleMatrix
from tests.factories import CatalogModelFactory
from tests.workers.conftest import ISVC, NAMESPACE, deploy, reconcile_until, sandbox_api_client
from workers.provisioning.reconciler import redis_client, resync_cluster
from workers.sandbox.server import Sandbox
from workers.tasks.deployments import team_key_routes_changed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_reconcile_queue() -> Iterator[None]:
    redis_client().delete("reconcile")
    yield
    redis_client().delete("reconcile")


def _queued_reconciles() -> list[tuple[str, str]]:
    """(task, args) of the messages waiting on the reconcile queue, oldest first."""
    messages = [json.loads(raw) for raw in reversed(redis_client().lrange("reconcile", 0, -1))]
    return [(message["headers"]["task"], message["headers"]["argsrepr"]) for message in messages]


def _queued_messages() -> list[tuple[str, list[Any]]]:
    """(task, positional args) of the messages waiting on the reconcile queue, oldest first."""
    messages = [json.loads(raw) for raw in reversed(redis_client().lrange("reconcile", 0, -1))]
    return [(message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0]) for message in messages]


def _ready(world: tuple[RoleMatrix, Sandbox], name: str = "chat") -> Deployment:
    matrix, sandbox = world
    deployment = deploy(matrix, name)
    reconcile_until(deployment.pk, sandbox, "Ready")
    deployment.refresh_from_db()
    assert (deployment.generation, deployment.observed_generation) == (1, 1)
    redis_client().delete("reconcile")  # the create's own nudge
    return deployment


def _live_predictor(sandbox: Sandbox, name: str = "chat") -> dict[str, Any]:
    (isvc,) = [
        item for item in sandbox.objects(ISVC, "InferenceService", NAMESPACE) if item["metadata"]["name"] == name
    ]
    return dict(isvc["spec"]["predictor"])


def _inputs_changed(deployment: Deployment) -> list[tuple[int, str]]:
    events = DeploymentEvent.objects.filter(deployment=deployment, reason="InputsChanged").order_by("id")
    return [(event.generation, event.message) for event in events]


def test_a_catalog_version_edit_through_the_api_reaches_the_running_deployment(
    world: tuple[RoleMatrix, Sandbox], django_capture_on_commit_callbacks: Any
) -> None:
    matrix, sandbox = world
    deployment = _ready(world)
    assert _live_predictor(sandbox)["model"]["resources"]["requests"]["cpu"] == "4"
    admin = matrix.client("platform_admin")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.patch(
            "/api/v1/catalog/models/qwen/versions/v1",
            {"cpu": "6", "memory": "24Gi", "runtime_args": ["--max_num_seqs=8"]},
            format="json",
        )
    assert response.status_code == 200, response.content
    deployment.refresh_from_db()
    assert (deployment.generation, deployment.observed_generation) == (2, 1)
    assert _inputs_changed(deployment) == [(2, "catalog version qwen@v1 changed: cpu, memory, runtime_args")]
    assert _queued_reconciles() == [("deployments.reconcile", f"[{deployment.pk}]")]
    assert deployment.pk in deployment_resync_plan(include_ready=False)[0]  # and every 15 s resync, until applied

    reconcile_until(deployment.pk, sandbox, "Ready")
    predictor = _live_predictor(sandbox)
    assert predictor["model"]["resources"]["requests"] == {"cpu": "6", "memory": "24Gi", "nvidia.com/gpu": "1"}
    assert "--max_num_seqs=8" in predictor["model"]["args"]
    deployment.refresh_from_db()
    assert deployment.observed_generation == 2

    # The same values again, and a lifecycle change (which builds nothing): no new generation.
    admin.patch("/api/v1/catalog/models/qwen/versions/v1", {"cpu": "6", "lifecycle": "deprecated"}, format="json")
    deployment.refresh_from_db()
    assert deployment.generation == 2
    assert ModelVersion.objects.get(model__slug="qwen").lifecycle == "deprecated"


def test_a_pool_change_reaches_the_deployments_on_it_and_a_price_change_does_not(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    matrix, sandbox = world
    deployment = _ready(world)
    pool = AcceleratorPool.objects.get(accelerator_type="nvidia-l4")
    accelerator_pool_upsert(
        actor=matrix.platform_admin,
        cluster=pool.cluster,
        accelerator_type="nvidia-l4",
        values={"hourly_price_per_gpu": Decimal("0.95"), "gpu_count": 12},
    )
    deployment.refresh_from_db()
    assert deployment.generation == 1
    toleration = {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}
    accelerator_pool_upsert(
        actor=matrix.platform_admin,
        cluster=pool.cluster,
        accelerator_type="nvidia-l4",
        values={"tolerations": [*pool.tolerations, toleration]},
    )
    deployment.refresh_from_db()
    assert (deployment.generation, deployment.observed_generation) == (2, 1)
    assert _inputs_changed(deployment) == [
        (2, f"accelerator pool nvidia-l4 on {pool.cluster.name} changed: tolerations")
    ]
    reconcile_until(deployment.pk, sandbox, "Ready")
    assert toleration in _live_predictor(sandbox)["tolerations"]


def test_a_cluster_change_reaches_its_deployments(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployment = _ready(world)
    cluster_update(actor=matrix.platform_admin, cluster=deployment.cluster, changes={"autoscaler_class": "hpa"})
    deployment.refresh_from_db()
    assert deployment.generation == 2
    assert _inputs_changed(deployment) == [(2, f"cluster {deployment.cluster.name} changed: autoscaler_class")]
    reconcile_until(deployment.pk, sandbox, "Ready")
    (isvc,) = sandbox.objects(ISVC, "InferenceService", NAMESPACE)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"


def test_a_key_change_through_the_api_narrows_the_live_route(
    world: tuple[RoleMatrix, Sandbox], django_capture_on_commit_callbacks: Any
) -> None:
    matrix, sandbox = world
    deployment = _ready(world)
    CatalogModelFactory(slug="other")
    plain = credential_issue(actor=matrix.admin, team=matrix.team, name="plain")  # every key may call qwen: no change
    deployment.refresh_from_db()
    assert deployment.generation == 1
    with django_capture_on_commit_callbacks(execute=True):
        response = matrix.client("developer").post(
            "/api/v1/teams/alpha/credentials", {"name": "narrow", "allowed_models": ["other"]}, format="json"
        )
    assert response.status_code == 201, response.content
    # The gateway names the task that marks the deployments dirty (gateway and deployments are independent siblings).
    (named,) = [message for message in _queued_messages() if message[0] == "deployments.team_key_routes_changed"]
    assert named[1] == [matrix.team.pk, [], ["other"], "key 'narrow' of team alpha issued"]  # every model but 'other'
    deployment.refresh_from_db()
    assert deployment.generation == 1  # not yet: the deployments app marks it when the task runs
    with django_capture_on_commit_callbacks(execute=True):
        assert team_key_routes_changed(*named[1]) == 1
    deployment.refresh_from_db()
    assert (deployment.generation, deployment.observed_generation) == (2, 1)
    assert _inputs_changed(deployment) == [(2, "key 'narrow' of team alpha issued")]
    assert ("deployments.reconcile", f"[{deployment.pk}]") in _queued_reconciles()
    reconcile_until(deployment.pk, sandbox, "Ready")
    (route,) = [
        item
        for item in sandbox.objects("aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute", "genai-gateway")
        if item["metadata"]["name"] == deployment.served_model_name
    ]
    narrow = response.json()["client_id"].split(".")[1]
    assert f"^alpha\\\\.({plain.key_id})$" in json.dumps(route["spec"])  # the plain key only, not the narrow one
    assert narrow not in json.dumps(route["spec"])


def test_a_change_no_service_saw_is_found_by_the_resync_and_marked_dirty_too(
    world: tuple[RoleMatrix, Sandbox], django_capture_on_commit_callbacks: Any
) -> None:
    """A restricted key that expires changes the route's key list with no write anywhere: the resync finds the
    desired objects differ from those last applied and marks the deployment dirty the same way (generation, event);
    an edit on the cluster (drift, not a new desired state) bumps nothing."""
    matrix, sandbox = world
    deployment = _ready(world)
    CatalogModelFactory(slug="other")
    credential_issue(actor=matrix.admin, team=matrix.team, name="plain")
    with django_capture_on_commit_callbacks(execute=True):
        narrow = credential_issue(
            actor=matrix.admin,
            team=matrix.team,
            name="narrow",
            allowed_models=["other"],
            expires_at=timezone.now() + timedelta(hours=1),
        )
    (named,) = [args for task, args in _queued_messages() if task == "deployments.team_key_routes_changed"]
    assert team_key_routes_changed(*named) == 1  # the gateway names it; the deployments app marks the deployment
    reconcile_until(deployment.pk, sandbox, "Ready")
    deployment.refresh_from_db()
    assert (deployment.generation, deployment.observed_generation) == (2, 2)

    Credential.objects.filter(pk=narrow.credential_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert resync_cluster(deployment.cluster_id, [deployment.pk]).stale == (deployment.pk,)
    deployment.refresh_from_db()
    assert (deployment.generation, deployment.observed_generation) == (3, 2)
    assert _inputs_changed(deployment)[-1] == (3, "what it is built from changed (found by the resync)")
    reconcile_until(deployment.pk, sandbox, "Ready")
    assert resync_cluster(deployment.cluster_id, [deployment.pk]).stale == ()

    custom = k8s.CustomObjectsApi(sandbox_api_client(sandbox))
    custom.patch_namespaced_custom_object(
        "serving.kserve.io",
        "v1beta1",
        NAMESPACE,
        "inferenceservices",
        "chat",
        {"spec": {"predictor": {"maxReplicas": 7}}},
    )
    assert resync_cluster(deployment.cluster_id, [deployment.pk]).stale == (deployment.pk,)
    deployment.refresh_from_db()
    assert deployment.generation == 3  # drift: reverted by the reconcile, not a new generation


def test_a_gpu_quota_edit_through_the_api_reaches_the_teams_resource_quota_promptly(
    world: tuple[RoleMatrix, Sandbox], django_capture_on_commit_callbacks: Any
) -> None:
    """The namespace's ResourceQuota is built from the team's GPU quota: an edit marks the team's deployments dirty
    (through a task tenancy names), so the next reconcile applies it, not the 10-minute drift sweep."""
    from workers.tasks.deployments import team_gpu_quota_changed

    matrix, sandbox = world
    deployment = _ready(world)

    def hard() -> str:
        (quota,) = [
            item
            for item in sandbox.objects("v1", "ResourceQuota", NAMESPACE)
            if item["metadata"]["name"] == "genai-portal-gpus"
        ]
        return str(quota["spec"]["hard"]["requests.nvidia.com/gpu"])

    assert hard() == "4"
    admin = matrix.client("platform_admin")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.patch(f"/api/v1/teams/{matrix.team.slug}/quota", {"max_deployments": 9}, format="json")
    assert response.status_code == 200, response.content
    assert _queued_reconciles() == []  # no GPU change: nothing to re-apply
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.patch(f"/api/v1/teams/{matrix.team.slug}/quota", {"gpus": {"nvidia-l4": 6}}, format="json")
    assert response.status_code == 200, response.content
    assert _queued_reconciles() == [("deployments.team_gpu_quota_changed", f"[{matrix.team.pk}]")]
    redis_client().delete("reconcile")
    with django_capture_on_commit_callbacks(execute=True):
        assert team_gpu_quota_changed(matrix.team.pk) == 1
    deployment.refresh_from_db()
    assert (deployment.generation, deployment.observed_generation) == (2, 1)
    assert _inputs_changed(deployment) == [(2, "team GPU quota changed")]
    assert _queued_reconciles() == [("deployments.reconcile", f"[{deployment.pk}]")]
    reconcile_until(deployment.pk, sandbox, "Ready")
    assert hard() == "6"
