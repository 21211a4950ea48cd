"""Kueue GPU quotas against the sandbox's Kueue, through the real kubernetes client: a cluster moved to Kueue gets a
ClusterQueue per team in one cohort, a team borrows a neighbour's idle GPUs within the limit a platform admin set,
and the neighbour's own deployment is queued while they are lent, with Kueue's own reason in its status."""

from __future__ import annotations

import pytest

from catalog.models import ModelVersion
from portal.clusters.models import Cluster
from portal.deployments.models import Deployment
from portal.tenancy.models import TeamGpuQuota
from tests.conftest import RoleMatrix
from tests.workers.conftest import NAMESPACE, reconcile_until
from workers.provisioning.reconciler import reconcile_cluster_quota, reconcile_deployment
from workers.sandbox.server import Sandbox

pytestmark = pytest.mark.django_db

KUEUE = "kueue.x-k8s.io/v1beta2"


def _deploy(
    matrix: RoleMatrix, who: str, team: str, name: str, replicas: int, serving_mode: str = "llm-d"
) -> Deployment:
    body = {
        "name": name,
        "model": "qwen",
        "accelerator_type": "nvidia-l4",
        "serving_mode": serving_mode,
        "min_replicas": replicas,
        "max_replicas": replicas,
    }
    response = matrix.client(who).post(f"/api/v1/teams/{team}/deployments", body, format="json")
    assert response.status_code == 201, response.content
    return Deployment.objects.get(team__slug=team, name=name)


def _create(sandbox: Sandbox, kind: str, name: str, labels: dict[str, str]) -> None:
    found = sandbox.store.kind_by_api_version(KUEUE, kind)
    assert found is not None
    manifest = {"apiVersion": KUEUE, "kind": kind, "metadata": {"name": name, "labels": labels}, "spec": {}}
    sandbox.store.create(found, None, manifest, manager="kubectl")


def test_a_team_borrows_idle_gpus_and_the_lenders_deployment_is_queued_with_kueues_reason(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    matrix, sandbox = world
    cluster = Cluster.objects.get()
    cluster.gpu_quota, cluster.runs_llmd = "kueue", True
    cluster.save()
    ModelVersion.objects.filter(model__slug="qwen").update(serving_modes=["standard", "llm-d"])
    TeamGpuQuota.objects.filter(quota=matrix.team.quota).update(gpus=2, borrowing_limit=2)
    TeamGpuQuota.objects.create(quota=matrix.other_team.quota, accelerator_type="nvidia-l4", gpus=2)

    assert reconcile_cluster_quota(cluster.pk) > 0
    queues = {item["metadata"]["name"]: item["spec"] for item in sandbox.objects(KUEUE, "ClusterQueue")}
    assert set(queues) == {"genai-alpha", "genai-beta"}  # beta has nothing deployed, yet its GPUs can be lent
    (alpha_flavor,) = queues["genai-alpha"]["resourceGroups"][0]["flavors"]
    gpus = alpha_flavor["resources"][0]
    assert (gpus["name"], gpus["nominalQuota"], gpus["borrowingLimit"]) == ("nvidia.com/gpu", "2", "2")
    assert reconcile_cluster_quota(cluster.pk) == 0  # converged: nothing to write

    # Alpha runs 4 replicas on its 2 GPUs and 2 borrowed from beta's idle ones.
    big = _deploy(matrix, "developer", "alpha", "big", replicas=4)
    reconcile_until(big.pk, sandbox, "Ready")
    big.refresh_from_db()
    assert big.observed_replicas == 4
    assert [item["metadata"]["name"] for item in sandbox.objects(KUEUE, "LocalQueue", namespace=NAMESPACE)] == [
        "genai-portal"
    ]

    # Beta deploys within its own quota while alpha holds its lent GPUs: what Kueue cannot admit yet is queued, and
    # beta's status says so with Kueue's own reason (Kueue then takes the GPUs back from the borrower).
    mine = _deploy(matrix, "outsider", "beta", "mine", replicas=2)
    reconcile_deployment(mine.pk)
    for _ in range(20):
        sandbox.settle()
        reconcile_deployment(mine.pk)
        mine.refresh_from_db()
        if "queued by Kueue" in mine.message:
            break
    assert mine.phase == "Provisioning"
    assert (
        "replica(s) queued by Kueue (Pending): couldn't assign flavors to pod set main: insufficient unused quota "
        in (mine.message)
    )
    queued = next(item for item in mine.conditions if item["type"] == "KueueQuotaReserved")
    assert (queued["status"], queued["reason"]) == ("False", "Pending")

    # Alpha gives its borrowed GPUs back: beta's replicas are admitted and it serves, its status clear of the queue.
    assert matrix.client("developer").delete("/api/v1/teams/alpha/deployments/big").status_code == 202
    for _ in range(20):
        if reconcile_deployment(big.pk).outcome == "deleted":
            break
        sandbox.settle()
    reconcile_until(mine.pk, sandbox, "Ready")
    mine.refresh_from_db()
    assert mine.observed_replicas == 2
    assert "queued" not in mine.message


def test_a_standard_deployment_on_a_kueue_cluster_is_held_by_kueue_until_its_gpus_are_free(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    """The InferenceService carries the queue-name label; KServe copies it onto the predictor's pods, Kueue gates
    them: while alpha borrows beta's GPUs, beta's pods wait with Kueue's reason, and are admitted once they free up."""
    matrix, sandbox = world
    cluster = Cluster.objects.get()
    cluster.gpu_quota = "kueue"
    cluster.save()
    TeamGpuQuota.objects.filter(quota=matrix.team.quota).update(gpus=2, borrowing_limit=2)
    TeamGpuQuota.objects.create(quota=matrix.other_team.quota, accelerator_type="nvidia-l4", gpus=2)
    assert reconcile_cluster_quota(cluster.pk) > 0

    first = _deploy(matrix, "developer", "alpha", "first", replicas=4, serving_mode="standard")
    reconcile_until(first.pk, sandbox, "Ready")
    (isvc,) = sandbox.objects("serving.kserve.io/v1beta1", "InferenceService", namespace=NAMESPACE)
    assert isvc["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "genai-portal"
    admitted = sandbox.objects(KUEUE, "Workload", namespace=NAMESPACE)
    assert len(admitted) == 4  # one Workload per predictor pod: 2 on alpha's GPUs, 2 borrowed from beta

    second = _deploy(matrix, "outsider", "beta", "second", replicas=2, serving_mode="standard")
    for _ in range(20):
        sandbox.settle()
        reconcile_deployment(second.pk)
        second.refresh_from_db()
        if "queued by Kueue" in second.message:
            break
    assert second.phase == "Provisioning"
    assert "queued by Kueue (Pending): couldn't assign flavors to pod set main: insufficient " in second.message
    gated = [
        item
        for item in sandbox.objects("v1", "Pod", namespace="genai-beta")
        if item["metadata"]["labels"].get("serving.kserve.io/inferenceservice") == "second"
        and item["spec"].get("schedulingGates") == [{"name": "kueue.x-k8s.io/admission"}]
    ]
    assert gated  # Kueue's gate, not the scheduler, holds them

    assert matrix.client("developer").delete("/api/v1/teams/alpha/deployments/first").status_code == 202
    for _ in range(20):
        if reconcile_deployment(first.pk).outcome == "deleted":
            break
        sandbox.settle()
    reconcile_until(second.pk, sandbox, "Ready")
    second.refresh_from_db()
    assert second.observed_replicas == 2
    assert "queued" not in second.message


def test_a_cluster_update_moves_it_to_kueue_and_back_promptly_keeping_its_deployments(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    matrix, sandbox = world
    cluster = Cluster.objects.get()
    TeamGpuQuota.objects.create(quota=matrix.other_team.quota, accelerator_type="nvidia-l4", gpus=2)
    served = _deploy(matrix, "developer", "alpha", "served", replicas=1, serving_mode="standard")
    reconcile_until(served.pk, sandbox, "Ready")
    assert sandbox.objects("v1", "ResourceQuota", namespace=NAMESPACE)

    # Moved to Kueue by a cluster update: the deployment's reconcile drops the ResourceQuota and, in the same pass,
    # makes every team's queues (beta's too, though it deploys nothing here), with no wait for a resync.
    response = matrix.client("platform_admin").patch(
        f"/api/v1/clusters/{cluster.name}", {"gpu_quota": "kueue"}, format="json"
    )
    assert response.status_code == 200, response.content
    reconcile_until(served.pk, sandbox, "Ready")
    assert not sandbox.objects("v1", "ResourceQuota", namespace=NAMESPACE)  # Kueue caps the team here
    queues = [item["metadata"]["name"] for item in sandbox.objects(KUEUE, "ClusterQueue")]
    assert sorted(queues) == ["genai-alpha", "genai-beta"]
    _create(sandbox, "ResourceFlavor", "platform-owned", {})  # the platform team's own: not the portal's to remove

    # The platform admin moves the cluster back: the update marks its deployments, whose reconcile restores the
    # ResourceQuota and, in the same pass, removes every queue the portal made (beta's too, which deploys nothing).
    response = matrix.client("platform_admin").patch(
        f"/api/v1/clusters/{cluster.name}", {"gpu_quota": "resourcequota"}, format="json"
    )
    assert response.status_code == 200, response.content
    reconcile_until(served.pk, sandbox, "Ready")
    (quota,) = sandbox.objects("v1", "ResourceQuota", namespace=NAMESPACE)
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "4"}  # alpha's GPU quota
    assert [item["metadata"]["name"] for item in sandbox.objects(KUEUE, "ResourceFlavor")] == ["platform-owned"]
    for kind in ("Cohort", "ClusterQueue"):
        assert sandbox.objects(KUEUE, kind) == []
    assert sandbox.objects(KUEUE, "LocalQueue", namespace=NAMESPACE) == []
    isvc = sandbox.objects("serving.kserve.io/v1beta1", "InferenceService", namespace=NAMESPACE)
    assert [item["metadata"]["name"] for item in isvc] == ["served"]
    assert "kueue.x-k8s.io/queue-name" not in isvc[0]["metadata"]["labels"]

    # Queues left from an interrupted pass go when the cluster's quota is converged again.
    _create(sandbox, "Cohort", "genai-portal", {"app.kubernetes.io/managed-by": "genai-portal"})
    assert reconcile_cluster_quota(cluster.pk) == 1
    assert sandbox.objects(KUEUE, "Cohort") == []
    assert [item["metadata"]["name"] for item in sandbox.objects(KUEUE, "ResourceFlavor")] == ["platform-owned"]


def test_the_resync_prunes_the_queues_of_a_cluster_that_left_kueue_with_no_deployment_left(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    """A cluster on Kueue whose last deployment was deleted, then moved back to ResourceQuotas: no deployment's
    reconcile is left to remove the queues, so the periodic resync does, and once clean it costs one list, no write."""
    from workers.tasks.deployments import resync

    matrix, sandbox = world
    cluster = Cluster.objects.get()
    cluster.gpu_quota = "kueue"
    cluster.save(update_fields=["gpu_quota"])
    served = _deploy(matrix, "developer", "alpha", "served", replicas=1, serving_mode="standard")
    reconcile_until(served.pk, sandbox, "Ready")
    assert [item["metadata"]["name"] for item in sandbox.objects(KUEUE, "ClusterQueue")] == ["genai-alpha"]
    response = matrix.client("developer").delete(f"/api/v1/teams/alpha/deployments/{served.name}")
    assert response.status_code in (200, 202), response.content
    for _ in range(20):
        if reconcile_deployment(served.pk).outcome == "deleted":
            break
        sandbox.settle()
    assert not Deployment.objects.filter(pk=served.pk).exists()
    response = matrix.client("platform_admin").patch(
        f"/api/v1/clusters/{cluster.name}", {"gpu_quota": "resourcequota"}, format="json"
    )
    assert response.status_code == 200, response.content
    _create(sandbox, "ResourceFlavor", "platform-owned", {})  # the platform team's own: not the portal's to remove
    assert sandbox.objects(KUEUE, "Cohort")  # nothing has removed the portal's queues yet

    assert resync() == 0  # nothing to reconcile: no deployment is left
    for kind in ("Cohort", "ClusterQueue"):
        assert sandbox.objects(KUEUE, kind) == []
    assert sandbox.objects(KUEUE, "LocalQueue", namespace=NAMESPACE) == []
    assert [item["metadata"]["name"] for item in sandbox.objects(KUEUE, "ResourceFlavor")] == ["platform-owned"]

    sandbox.reset_records()
    assert resync() == 0
    assert sandbox.writes() == []
    assert sandbox.request_counts() == {"GET": 1}  # the list of the portal's Cohort, by its label


def _predictor_pods(sandbox: Sandbox, name: str, serving_mode: str = "standard") -> list[dict[str, object]]:
    """The model server's pods: the predictor's, or llm-d's decode pods (not its endpoint picker's)."""
    if serving_mode == "llm-d":
        selector = f"app.kubernetes.io/name={name},app.kubernetes.io/component=llminferenceservice-workload"
    else:
        selector = f"serving.kserve.io/inferenceservice={name}"
    return sandbox.objects("v1", "Pod", namespace=NAMESPACE, label_selector=selector)


def _ready(pod: dict[str, object]) -> bool:
    status = pod.get("status") or {}
    assert isinstance(status, dict)
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _queue(pod: dict[str, object]) -> str:
    metadata = pod["metadata"]
    assert isinstance(metadata, dict)
    return str((metadata.get("labels") or {}).get("kueue.x-k8s.io/queue-name") or "")


def _move_until_settled(matrix: RoleMatrix, sandbox: Sandbox, served: Deployment, gpu_quota: str) -> list[str]:
    """The platform admin moves the cluster; the deployment is reconciled and the sandbox's controllers step until it
    is Ready with every predictor pod on the wanted queue. Returns the messages seen; a step with no ready predictor
    pod fails (the model must keep serving throughout)."""
    cluster = Cluster.objects.get()
    response = matrix.client("platform_admin").patch(
        f"/api/v1/clusters/{cluster.name}", {"gpu_quota": gpu_quota}, format="json"
    )
    assert response.status_code == 200, response.content
    wanted = "genai-portal" if gpu_quota == "kueue" else ""
    messages = []
    for _ in range(20):
        result = reconcile_deployment(served.pk)
        served.refresh_from_db()
        messages.append(served.message)
        pods = _predictor_pods(sandbox, served.name, served.serving_mode)
        assert any(_ready(pod) for pod in pods), f"nothing served after: {served.message}"
        if result.phase == "Ready" and pods and all(_queue(pod) == wanted for pod in pods):
            return messages
        sandbox.settle()
    raise AssertionError(f"never settled on '{wanted}': {messages[-3:]}")


def test_a_live_standard_deployment_moves_onto_kueue_and_back_serving_throughout(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    """Kueue's webhook refuses KServe's relabel of a predictor Deployment with ready pods (and any removal of the
    label), so on a cluster moved to Kueue and back the portal re-creates the predictor's Deployment, orphaning its
    pods: KServe makes it anew with the wanted label, it adopts the old pods and replaces them one by one. The model
    serves at every step, the status says what is under way, and the pods end on the wanted queue."""
    matrix, sandbox = world
    served = _deploy(matrix, "developer", "alpha", "served", replicas=1, serving_mode="standard")
    reconcile_until(served.pk, sandbox, "Ready")
    (before,) = _predictor_pods(sandbox, "served")
    assert _queue(before) == ""

    messages = _move_until_settled(matrix, sandbox, served, "kueue")
    assert any("moving the model server into Kueue's queue 'genai-portal'" in message for message in messages)
    (pod,) = _predictor_pods(sandbox, "served")
    assert pod["metadata"]["name"] != before["metadata"]["name"]  # a new pod, admitted by Kueue
    workloads = sandbox.objects(KUEUE, "Workload", namespace=NAMESPACE)
    assert [item["status"]["admission"]["clusterQueue"] for item in workloads] == ["genai-alpha"]
    (predictor,) = sandbox.objects("apps/v1", "Deployment", namespace=NAMESPACE)
    assert predictor["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "genai-portal"
    served.refresh_from_db()
    assert served.message == f"serving '{served.served_model_name}' through the gateway"

    messages = _move_until_settled(matrix, sandbox, served, "resourcequota")
    assert any("moving the model server off Kueue's queue, under the namespace's ResourceQuota" in m for m in messages)
    (predictor,) = sandbox.objects("apps/v1", "Deployment", namespace=NAMESPACE)
    assert "kueue.x-k8s.io/queue-name" not in predictor["metadata"]["labels"]
    assert sandbox.objects("v1", "ResourceQuota", namespace=NAMESPACE)
    assert sandbox.objects(KUEUE, "ClusterQueue") == []


def test_a_live_llmd_deployment_moves_onto_kueue_and_back_serving_throughout(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    """The same for llm-d: KServe copies the LLMInferenceService's Kueue labels onto its decode Deployment, which
    Kueue's webhook guards alike; the portal re-creates that Deployment, never the endpoint picker's."""
    matrix, sandbox = world
    Cluster.objects.update(runs_llmd=True)
    ModelVersion.objects.filter(model__slug="qwen").update(serving_modes=["standard", "llm-d"])
    served = _deploy(matrix, "developer", "alpha", "served", replicas=1, serving_mode="llm-d")
    reconcile_until(served.pk, sandbox, "Ready")
    (before,) = _predictor_pods(sandbox, "served", "llm-d")
    picker = {item["metadata"]["uid"] for item in sandbox.objects("apps/v1", "Deployment", namespace=NAMESPACE)}

    messages = _move_until_settled(matrix, sandbox, served, "kueue")
    assert any("moving the model server into Kueue's queue 'genai-portal'" in message for message in messages)
    (pod,) = _predictor_pods(sandbox, "served", "llm-d")
    assert pod["metadata"]["name"] != before["metadata"]["name"]
    deployments = {
        item["metadata"]["name"]: item for item in sandbox.objects("apps/v1", "Deployment", namespace=NAMESPACE)
    }
    assert deployments["served-kserve"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "genai-portal"
    scheduler = deployments["served-kserve-router-scheduler"]
    assert scheduler["metadata"]["uid"] in picker  # the endpoint picker's Deployment was left alone
    assert "kueue.x-k8s.io/queue-name" not in scheduler["metadata"]["labels"]

    _move_until_settled(matrix, sandbox, served, "resourcequota")
    (decode,) = [
        item
        for item in sandbox.objects("apps/v1", "Deployment", namespace=NAMESPACE)
        if item["metadata"]["name"] == "served-kserve"
    ]
    assert "kueue.x-k8s.io/queue-name" not in decode["metadata"]["labels"]


def test_a_deployment_at_the_teams_gpu_cap_moves_off_kueue_with_its_old_pods_gpus_as_room(
    world: tuple[RoleMatrix, Sandbox],
) -> None:
    """Alpha's 4 GPUs all serve one deployment on Kueue; the cluster goes back to ResourceQuotas. Its pods are replaced
    surge first, so while the old ones (still on Kueue's queue) remain, the namespace's cap is raised by their GPUs;
    without that the new pods would be refused and the move would wait forever. The cap returns to 4 after."""
    matrix, sandbox = world
    cluster = Cluster.objects.get()
    cluster.gpu_quota = "kueue"
    cluster.save(update_fields=["gpu_quota"])
    served = _deploy(matrix, "developer", "alpha", "served", replicas=4, serving_mode="standard")
    reconcile_until(served.pk, sandbox, "Ready")
    assert [_queue(pod) for pod in _predictor_pods(sandbox, "served")] == ["genai-portal"] * 4

    response = matrix.client("platform_admin").patch(
        f"/api/v1/clusters/{cluster.name}", {"gpu_quota": "resourcequota"}, format="json"
    )
    assert response.status_code == 200, response.content
    caps = []
    for _ in range(20):
        result = reconcile_deployment(served.pk)
        caps.extend(item["spec"]["hard"]["requests.nvidia.com/gpu"] for item in sandbox.objects("v1", "ResourceQuota"))
        pods = _predictor_pods(sandbox, "served")
        assert sum(1 for pod in pods if _ready(pod)) >= 4  # the move never takes a serving replica away
        if result.phase == "Ready" and all(_queue(pod) == "" for pod in pods):
            break
        sandbox.settle()
    else:
        raise AssertionError(f"never settled off Kueue: caps {caps}")
    assert "8" in caps  # the old pods' 4 GPUs as room while they remained
    reconcile_deployment(served.pk)
    (quota,) = sandbox.objects("v1", "ResourceQuota", namespace=NAMESPACE)
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "4"}
    assert len(_predictor_pods(sandbox, "served")) == 4
