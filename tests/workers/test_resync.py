"""The periodic resync: one snapshot of a cluster checks every deployment on it; only drift costs a reconcile."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from portal.deployments.models import Deployment
from portal.deployments.selectors import deployment_resync_plan
from tests.conftest import RoleMatrix
from tests.workers.conftest import NAMESPACE, deploy, reconcile_until, sandbox_api_client
from workers.provisioning.reconciler import OWNED_KINDS, reconcile_deployment, resync_cluster
from workers.sandbox.server import Sandbox

pytestmark = pytest.mark.django_db

# Namespace and ResourceQuota, each owned kind, the portal's Kueue Cohort (a ResourceQuota cluster's leftovers of a
# Kueue past), predictor pods.
SNAPSHOT_LISTS = 2 + len(OWNED_KINDS) + 1 + 1


def _ready_deployments(matrix: RoleMatrix, sandbox: Sandbox, names: list[str]) -> list[Deployment]:
    deployments = [deploy(matrix, name=name, max_replicas=1) for name in names]
    for deployment in deployments:
        reconcile_until(deployment.pk, sandbox, "Ready")
    return deployments


def test_unchanged_deployments_cost_one_list_per_kind_and_no_write(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployments = _ready_deployments(matrix, sandbox, ["one", "two", "three"])
    sandbox.reset_records()
    result = resync_cluster(deployments[0].cluster_id, [d.pk for d in deployments])
    assert result.stale == ()
    assert result.checked == 3
    assert result.recorded == 0
    assert sandbox.writes() == []
    # The same handful of requests whatever the number of deployments: what changed is what costs.
    assert sandbox.request_counts() == {"GET": SNAPSHOT_LISTS}
    assert all(record.query for record in sandbox.records), "every request is a list by label selector"


def test_a_deleted_object_marks_its_deployment_stale_and_a_reconcile_repairs_it(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    matrix, sandbox = world
    kept, drifted = _ready_deployments(matrix, sandbox, ["kept", "drifted"])
    custom = k8s.CustomObjectsApi(sandbox_api_client(sandbox))
    custom.delete_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", "drifted")
    result = resync_cluster(kept.cluster_id, [kept.pk, drifted.pk])
    assert result.stale == (drifted.pk,)
    assert reconcile_deployment(drifted.pk).writes >= 1
    assert resync_cluster(kept.cluster_id, [kept.pk, drifted.pk]).stale == ()


def test_an_edited_object_or_an_extra_owned_object_marks_the_deployment_stale(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    matrix, sandbox = world
    (deployment,) = _ready_deployments(matrix, sandbox, ["chat"])
    custom = k8s.CustomObjectsApi(sandbox_api_client(sandbox))
    custom.patch_namespaced_custom_object(
        "serving.kserve.io",
        "v1beta1",
        NAMESPACE,
        "inferenceservices",
        "chat",
        {"metadata": {"annotations": {"portal.genai.io/content-hash": "edited-by-hand"}}},
    )
    assert resync_cluster(deployment.cluster_id, [deployment.pk]).stale == (deployment.pk,)
    reconcile_deployment(deployment.pk)
    assert resync_cluster(deployment.cluster_id, [deployment.pk]).stale == ()

    backend = sandbox.objects("gateway.envoyproxy.io/v1alpha1", "Backend", namespace="genai-gateway")[0]
    stray = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": "left-behind", "namespace": "genai-gateway", "labels": backend["metadata"]["labels"]},
        "spec": backend["spec"],
    }
    custom.create_namespaced_custom_object("gateway.envoyproxy.io", "v1alpha1", "genai-gateway", "backends", stray)
    assert resync_cluster(deployment.cluster_id, [deployment.pk]).stale == (deployment.pk,)
    reconcile_deployment(deployment.pk)  # prunes it
    assert resync_cluster(deployment.cluster_id, [deployment.pk]).stale == ()


def test_progress_is_recorded_from_the_snapshot_without_a_reconcile(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    deployment = deploy(matrix)
    reconcile_deployment(deployment.pk)
    deployment.refresh_from_db()
    assert deployment.phase == "Provisioning"
    sandbox.settle()
    sandbox.reset_records()
    result = resync_cluster(deployment.cluster_id, [deployment.pk])
    deployment.refresh_from_db()
    assert (result.stale, result.recorded) == ((), 1)
    assert deployment.phase == "Ready"
    assert deployment.endpoint.endswith("/v1")
    assert deployment.observed_replicas == 1
    assert sandbox.writes() == []


def test_the_plan_sends_changed_and_deleting_rows_to_a_full_reconcile(world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = world
    ready, edited, new = _ready_deployments(matrix, sandbox, ["ready", "edited", "new"])
    Deployment.objects.filter(pk=edited.pk).update(generation=edited.generation + 1)
    Deployment.objects.filter(pk=new.pk).update(phase="Deleting")
    direct, by_cluster = deployment_resync_plan(include_ready=True)
    assert direct == [edited.pk, new.pk]
    assert by_cluster == {ready.cluster_id: [ready.pk]}
    direct, by_cluster = deployment_resync_plan(include_ready=False)
    assert direct == [edited.pk, new.pk]
    assert by_cluster == {}


def test_a_kubectl_edit_that_keeps_the_annotation_is_drift_and_is_reverted(world: tuple[RoleMatrix, Sandbox]) -> None:
    """Drift is found by content, not only by the content-hash annotation: `kubectl edit` of maxReplicas keeps the
    annotation, and the resync still sees the deployment stale and its reconcile puts the portal's value back."""
    matrix, sandbox = world
    (deployment,) = _ready_deployments(matrix, sandbox, ["chat"])
    custom = k8s.CustomObjectsApi(sandbox_api_client(sandbox))
    live = custom.get_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", "chat")
    assert live["spec"]["predictor"]["maxReplicas"] == 1
    custom.api_client.set_default_header("User-Agent", "kubectl-edit/v1.32.0")
    custom.patch_namespaced_custom_object(
        "serving.kserve.io",
        "v1beta1",
        NAMESPACE,
        "inferenceservices",
        "chat",
        {"spec": {"predictor": {"maxReplicas": 9}}},
    )
    result = resync_cluster(deployment.cluster_id, [deployment.pk])
    assert result.stale == (deployment.pk,)
    assert reconcile_deployment(deployment.pk).writes == 1
    live = custom.get_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", "chat")
    assert live["spec"]["predictor"]["maxReplicas"] == 1
    assert resync_cluster(deployment.cluster_id, [deployment.pk]).stale == ()
