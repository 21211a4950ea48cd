"""The deployment reconciler against the sandbox API server, through the real kubernetes client over HTTP."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from portal.deployments.models import Deployment
from tests.conftest import RoleMatrix, client_with_token
from tests.factories import SelfHostedVersionFactory
from tests.workers.conftest import (
    ISVC,
    NAMESPACE,
    deploy,
    reconcile_until,
    remove_from_crd_schema,
    sandbox_api_client,
)
from workers.kube.client import request_timeout
from workers.provisioning.reconciler import reconcile_deployment
from workers.sandbox.server import Fault, Sandbox

pytestmark = pytest.mark.django_db


def test_pending_provisioning_ready(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    assert deployment.phase == "Pending"
    first = reconcile_deployment(deployment.pk)
    deployment.refresh_from_db()
    assert first.outcome == "applied"
    assert first.writes > 0
    assert deployment.phase == "Provisioning"
    assert deployment.observed_generation == deployment.generation
    sandbox.settle()
    ready = reconcile_deployment(deployment.pk)
    deployment.refresh_from_db()
    assert ready.phase == "Ready"
    assert deployment.phase == "Ready"
    assert deployment.endpoint.endswith("/v1")
    assert deployment.observed_replicas == 1
    isvcs = sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE)
    assert [item["metadata"]["name"] for item in isvcs] == ["chat"]
    routes = sandbox.objects("aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute", namespace="genai-gateway")
    assert len(routes) == 1
    phases = list(deployment.events.order_by("pk").values_list("phase", flat=True))
    assert phases[:1] == ["Pending"]
    assert "Provisioning" in phases
    assert phases[-1] == "Ready"


def test_the_first_apply_does_not_look_for_leftovers_but_later_passes_do(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    sandbox.reset_records()
    reconcile_deployment(deployment.pk)
    # Decoded: the official client leaves "/" unescaped in a query (urllib's quote keeps it safe), urlencode does not.
    by_owner = f"portal.genai.io/deployment-id={deployment.pk}"
    assert not [r for r in sandbox.records if by_owner in unquote(r.query)], "no prune lists on the very first apply"
    sandbox.reset_records()
    reconcile_deployment(deployment.pk)
    assert [r for r in sandbox.records if by_owner in unquote(r.query)], (
        "once observed, owned objects are listed for pruning"
    )


def test_second_reconcile_of_an_unchanged_deployment_makes_no_write(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    reconcile_until(deployment.pk, sandbox, "Ready")
    sandbox.reset_records()
    result = reconcile_deployment(deployment.pk)
    assert result.outcome == "unchanged"
    assert result.writes == 0
    assert sandbox.writes() == []
    assert sandbox.request_counts()["GET"] > 0


def test_an_edited_deployment_converges(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    reconcile_until(deployment.pk, sandbox, "Ready")
    response = matrix.client("developer").patch(
        "/api/v1/teams/alpha/deployments/chat", {"min_replicas": 2, "max_replicas": 2}, format="json"
    )
    assert response.status_code == 200, response.content
    deployment.refresh_from_db()
    assert deployment.generation == 2
    reconcile_until(deployment.pk, sandbox, "Ready")
    deployment.refresh_from_db()
    assert deployment.observed_generation == 2
    isvc = sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE)[0]
    assert isvc["spec"]["predictor"]["minReplicas"] == 2
    assert deployment.observed_replicas == 2


def test_delete_removes_every_owned_object_then_the_row(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    reconcile_until(deployment.pk, sandbox, "Ready")
    assert matrix.client("developer").delete("/api/v1/teams/alpha/deployments/chat").status_code == 202
    result = reconcile_deployment(deployment.pk)
    assert result.outcome == "deleted"
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
    selector = f"portal.genai.io/deployment-id={deployment.pk}"
    for api_version, kind, namespace in (
        (ISVC, "InferenceService", NAMESPACE),
        ("gateway.envoyproxy.io/v1alpha1", "Backend", "genai-gateway"),
        ("aigateway.envoyproxy.io/v1beta1", "AIServiceBackend", "genai-gateway"),
        ("aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute", "genai-gateway"),
    ):
        assert sandbox.objects(api_version, kind, namespace=namespace) == [] or all(
            item["metadata"].get("labels", {}).get("portal.genai.io/deployment-id") != str(deployment.pk)
            for item in sandbox.objects(api_version, kind, namespace=namespace, label_selector=selector)
        )
        assert sandbox.objects(api_version, kind, namespace=namespace, label_selector=selector) == []


def test_unreachable_cluster_leaves_the_deployment_deleting(world: tuple[RoleMatrix, Sandbox]) -> None:
    from workers.kube.errors import RetryableClusterError

    matrix, sandbox = world
    deployment = deploy(matrix)
    reconcile_until(deployment.pk, sandbox, "Ready")
    matrix.client("developer").delete("/api/v1/teams/alpha/deployments/chat")
    sandbox.add_fault(Fault(status=503, times=None))
    with pytest.raises(RetryableClusterError):
        reconcile_deployment(deployment.pk)
    deployment.refresh_from_db()
    assert deployment.phase == "Deleting"
    sandbox.clear_faults()
    assert reconcile_deployment(deployment.pk).outcome == "deleted"


@pytest.mark.parametrize(
    "fault", [Fault(status=500), Fault(status=429), Fault(drop=True)], ids=["500", "429", "dropped"]
)
def test_api_server_faults_are_retryable_and_survived(world: tuple[RoleMatrix, Sandbox], fault: Fault) -> None:
    from workers.kube.errors import RetryableClusterError

    matrix, sandbox = world
    deployment = deploy(matrix)
    sandbox.add_fault(Fault(method="PATCH", status=fault.status, drop=fault.drop, times=1))
    with pytest.raises(RetryableClusterError):
        reconcile_deployment(deployment.pk)
    deployment.refresh_from_db()
    assert deployment.phase == "Pending"  # nothing recorded as failed
    reconcile_until(deployment.pk, sandbox, "Ready")


def test_a_timeout_is_retryable(world: tuple[RoleMatrix, Sandbox]) -> None:
    from workers.kube.errors import RetryableClusterError

    matrix, sandbox = world
    deployment = deploy(matrix)
    try:
        # times=None: the client's own urllib3 retries time out too.
        sandbox.add_fault(Fault(method="GET", delay=0.6, times=None))
        with request_timeout(1.0, 0.3), pytest.raises(RetryableClusterError):
            reconcile_deployment(deployment.pk)
    finally:
        sandbox.clear_faults()
    reconcile_until(deployment.pk, sandbox, "Ready")


def test_a_422_from_the_api_server_ends_in_failed_with_its_message(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    sandbox.add_fault(
        Fault(method="PATCH", path="inferenceservices", status=422, message="spec.predictor: Invalid value: nope")
    )
    result = reconcile_deployment(deployment.pk)
    deployment.refresh_from_db()
    assert result.phase == "Failed"
    assert deployment.phase == "Failed"
    assert "spec.predictor: Invalid value: nope" in deployment.message


def test_a_model_that_cannot_load_is_failed(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    SelfHostedVersionFactory(
        model__slug="broken", version="v1", artifact_uri="hf://org/fail-load-model", gpus_per_replica=1
    )
    deployment = deploy(matrix, name="broken", model="broken")
    result = reconcile_until(deployment.pk, sandbox, "Failed")
    deployment.refresh_from_db()
    assert "ModelLoadFailed" in deployment.message
    assert result.phase == "Failed"


def test_a_lost_task_message_still_converges_through_resync(world: tuple[RoleMatrix, Sandbox]) -> None:
    """The row is the outbox: with the create's nudge lost, the periodic resync task alone brings it to Ready."""
    from celery import current_app

    from workers.tasks.deployments import resync

    matrix, sandbox = world
    deployment = deploy(matrix)  # its on_commit nudge never reaches a worker in this test
    eager = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True  # what resync enqueues runs here, in order
    try:
        enqueued = []
        for _ in range(10):
            deployment.refresh_from_db()
            if deployment.phase == "Ready":
                break
            enqueued.append(resync())
            sandbox.settle()
    finally:
        current_app.conf.task_always_eager = eager
    assert deployment.phase == "Ready", deployment.message
    assert enqueued[0] == 1  # never observed: a full reconcile
    sandbox.reset_records()
    assert resync(include_ready=True) == 0  # in sync: nothing enqueued
    assert sandbox.writes() == []


def test_drift_is_repaired(world: tuple[RoleMatrix, Sandbox]) -> None:
    from kubernetes import client as k8s

    from tests.workers.conftest import sandbox_api_client

    matrix, sandbox = world
    deployment = deploy(matrix)
    reconcile_until(deployment.pk, sandbox, "Ready")
    custom = k8s.CustomObjectsApi(sandbox_api_client(sandbox))
    custom.delete_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", "chat")
    result = reconcile_deployment(deployment.pk)
    assert result.writes >= 1
    assert len(sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE)) == 1


def test_the_cluster_quota_keeps_a_team_within_its_gpus(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    reconcile_until(deployment.pk, sandbox, "Ready")
    quotas = sandbox.objects("v1", "ResourceQuota", namespace=NAMESPACE)
    assert [q["spec"]["hard"] for q in quotas] == [{"requests.nvidia.com/gpu": "4"}]


def test_cross_team_reads_are_refused(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, _ = world
    deploy(matrix)
    outsider = client_with_token(matrix.outsider)
    assert outsider.get("/api/v1/teams/alpha/deployments/chat").status_code == 404
    assert outsider.delete("/api/v1/teams/alpha/deployments/chat").status_code == 404
    assert Deployment.objects.filter(name="chat", phase="Pending").exists()


def test_a_worker_killed_mid_reconcile_still_converges(world: tuple[RoleMatrix, Sandbox]) -> None:
    """A dead worker leaves its lock (until it expires) and half-applied objects; the redelivered task converges."""
    import time

    import redis
    from django.conf import settings

    from workers.provisioning.reconciler import DeploymentBusy

    matrix, sandbox = world
    deployment = deploy(matrix)
    # The dead worker got as far as one object, then died holding the lock (acks_late redelivers its message).
    sandbox.add_fault(Fault(method="PATCH", path="inferenceservices", drop=True, times=None))
    with pytest.raises(Exception):  # noqa: PT011 (the connection drop, whatever the client makes of it)
        reconcile_deployment(deployment.pk)
    sandbox.clear_faults()
    assert sandbox.objects("v1", "Namespace", label_selector="portal.genai.io/team=alpha")
    assert sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE) == []
    stale = redis.Redis.from_url(settings.RESOLVED_REDIS_URL).lock(f"portal:lock:deployment:{deployment.pk}", timeout=1)
    assert stale.acquire(blocking=False)
    with pytest.raises(DeploymentBusy):
        reconcile_deployment(deployment.pk)
    time.sleep(1.2)  # the lock expires: a crashed worker never blocks a deployment for longer than its timeout
    reconcile_until(deployment.pk, sandbox, "Ready")


def test_a_crd_on_the_cluster_without_a_field_the_portal_applies_fails_the_deployment_once(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    """An older KServe's InferenceService has no predictor.autoScaling: server-side apply answers 500
    (kubernetes/kubernetes#139253), which is terminal: Failed, naming the field, and the task is not retried."""
    from workers.tasks import deployments as deployment_tasks

    matrix, sandbox = world
    remove_from_crd_schema(
        sandbox_api_client(sandbox), "inferenceservices.serving.kserve.io", ".spec.predictor.autoScaling"
    )
    deployment = deploy(matrix)  # the cluster autoscales with KEDA: the predictor carries autoScaling
    sandbox.reset_records()
    assert deployment_tasks.reconcile.apply(args=(deployment.pk,)).get() == "failed"
    applies = [r.status for r in sandbox.records if "/inferenceservices/" in r.path and r.method == "PATCH"]
    assert applies == [500]  # one attempt: retrying the same body cannot succeed
    assert sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE) == []
    deployment.refresh_from_db()
    assert (deployment.phase, deployment.observed_generation) == ("Failed", deployment.generation)
    assert deployment.message == (
        "the cluster refused the deployment: the cluster's InferenceService CustomResourceDefinition "
        "(serving.kserve.io/v1beta1) does not declare .spec.predictor.autoScaling: it is older or newer than the "
        "portal expects"
    )
    assert deployment.events.order_by("-pk").values_list("phase", "reason")[0] == ("Failed", "SchemaMismatch")
