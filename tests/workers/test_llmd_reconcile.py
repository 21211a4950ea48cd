"""The llm-d serving mode against the sandbox (its simulated KServe llm-d controller and AI gateway), through the real
kubernetes client: a deployment goes Ready through its LLMInferenceService and pool, the route names the pool, and a
live deployment switches mode without a moment where its route points at nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from catalog.models import ModelVersion
from portal.clusters.models import AcceleratorPool, Cluster
from portal.deployments.models import Deployment, ReplicaObservation
from portal.tenancy.models import TeamGpuQuota, TeamQuota
from portal.usage.services.gpu_hours import gpu_usage_accrue
from tests.conftest import RoleMatrix, assert_problem
from tests.workers.conftest import ISVC, NAMESPACE, deploy, reconcile_until
from workers.provisioning.reconciler import reconcile_deployment
from workers.sandbox.server import Sandbox

pytestmark = pytest.mark.django_db

LLMISVC = "serving.kserve.io/v1alpha2"
POOL = "inference.networking.k8s.io/v1"
AIGW = "aigateway.envoyproxy.io/v1beta1"
GATEWAY_NAMESPACE = "genai-gateway"


@pytest.fixture
def llmd_world(world: tuple[RoleMatrix, Sandbox]) -> tuple[RoleMatrix, Sandbox]:
    Cluster.objects.update(runs_llmd=True)
    ModelVersion.objects.filter(model__slug="qwen").update(serving_modes=["standard", "llm-d"])
    TeamQuota.objects.filter(team=world[0].team).update(serving_tier="production")
    return world


def _route_backends(sandbox: Sandbox) -> list[dict[str, Any]]:
    (route,) = sandbox.objects(AIGW, "AIGatewayRoute", namespace=GATEWAY_NAMESPACE)
    return [ref for rule in route["spec"]["rules"] for ref in rule["backendRefs"]]


def _route_target_exists(sandbox: Sandbox) -> bool:
    """Whatever the route sends to is there: the pool in the team namespace, or the AIServiceBackend beside it."""
    for ref in _route_backends(sandbox):
        if ref.get("kind") == "InferencePool":
            found = sandbox.objects(POOL, "InferencePool", namespace=ref.get("namespace", GATEWAY_NAMESPACE))
        else:
            found = sandbox.objects(AIGW, "AIServiceBackend", namespace=GATEWAY_NAMESPACE)
        if ref["name"] not in {item["metadata"]["name"] for item in found}:
            return False
    return True


def test_an_llmd_deployment_goes_ready_through_its_pool(llmd_world: tuple[RoleMatrix, Sandbox]) -> None:
    matrix, sandbox = llmd_world
    deployment = deploy(matrix, serving_mode="llm-d")
    reconcile_until(deployment.pk, sandbox, "Ready")
    deployment.refresh_from_db()
    assert deployment.message == f"serving '{deployment.served_model_name}' through the gateway (llm-d)"
    assert deployment.endpoint.endswith("/v1")
    assert deployment.observed_replicas == 1
    (service,) = sandbox.objects(LLMISVC, "LLMInferenceService", namespace=NAMESPACE)
    assert service["spec"]["model"]["name"] == deployment.served_model_name
    assert sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE) == []
    assert _route_backends(sandbox) == [
        {
            "group": "inference.networking.k8s.io",
            "kind": "InferencePool",
            "name": "chat-inference-pool",
            "namespace": NAMESPACE,
            "weight": 1,
            "priority": 0,  # the CRD's default, written by the API server
        }
    ]
    (objective,) = sandbox.objects("llm-d.ai/v1alpha2", "InferenceObjective", namespace=NAMESPACE)
    assert objective["spec"]["priority"] == 100  # the team's production tier
    # Unchanged, a second pass writes nothing.
    assert reconcile_deployment(deployment.pk).writes == 0


def test_switching_a_live_deployments_mode_keeps_a_route_to_something_until_the_old_objects_go(
    llmd_world: tuple[RoleMatrix, Sandbox],
) -> None:
    matrix, sandbox = llmd_world
    deployment = deploy(matrix)
    reconcile_until(deployment.pk, sandbox, "Ready")
    for mode, gone, serving in (("llm-d", "InferenceService", "LLMInferenceService"), ("standard", None, None)):
        response = matrix.client("developer").patch(
            "/api/v1/teams/alpha/deployments/chat", {"serving_mode": mode}, format="json"
        )
        assert response.status_code == 200, response.content
        first = reconcile_deployment(deployment.pk)
        # The new serving object is there beside the old one, and the route still sends to the old.
        assert first.phase == "Provisioning"
        assert _route_target_exists(sandbox)
        both = (
            sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE),
            sandbox.objects(LLMISVC, "LLMInferenceService", namespace=NAMESPACE),
        )
        assert [len(found) for found in both] == [1, 1]
        old_kind = "AIServiceBackend" if mode == "llm-d" else "InferencePool"
        assert [ref.get("kind", "AIServiceBackend") for ref in _route_backends(sandbox)] == [old_kind]
        for _ in range(20):
            sandbox.settle()
            result = reconcile_deployment(deployment.pk)
            assert _route_target_exists(sandbox), f"the route points at nothing after {result}"
            if result.phase == "Ready":
                break
        else:
            raise AssertionError(f"never Ready in the {mode} mode")
        deployment.refresh_from_db()
        assert deployment.serving_mode == mode
        kinds = {
            "InferenceService": sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE),
            "LLMInferenceService": sandbox.objects(LLMISVC, "LLMInferenceService", namespace=NAMESPACE),
        }
        if gone is not None and serving is not None:
            assert kinds[gone] == []
            assert len(kinds[serving]) == 1
            assert sandbox.objects(AIGW, "AIServiceBackend", namespace=GATEWAY_NAMESPACE) == []
        else:
            assert kinds["LLMInferenceService"] == []
            assert len(kinds["InferenceService"]) == 1
    events = list(Deployment.objects.get(pk=deployment.pk).events.values_list("phase", flat=True))
    assert "Failed" not in events


def _gpu_cap(sandbox: Sandbox) -> str:
    (quota,) = sandbox.objects("v1", "ResourceQuota", namespace=NAMESPACE)
    return str(quota["spec"]["hard"]["requests.nvidia.com/gpu"])


def _switch_to_llmd(matrix: RoleMatrix) -> None:
    response = matrix.client("developer").patch(
        "/api/v1/teams/alpha/deployments/chat", {"serving_mode": "llm-d"}, format="json"
    )
    assert response.status_code == 200, response.content


def test_a_mode_switch_at_the_teams_gpu_cap_gets_the_old_modes_gpus_as_room_until_it_completes(
    llmd_world: tuple[RoleMatrix, Sandbox],
) -> None:
    """The new mode's pods start beside the old ones, which go only once the new are Ready: with the team's whole
    GPU cap in use, the ResourceQuota is raised by the old mode's GPUs for the switch, then put back."""
    matrix, sandbox = llmd_world
    deployment = deploy(matrix, min_replicas=4, max_replicas=4)
    reconcile_until(deployment.pk, sandbox, "Ready")
    assert _gpu_cap(sandbox) == "4"  # alpha's GPU quota, all in use by the standard replicas

    _switch_to_llmd(matrix)
    assert reconcile_deployment(deployment.pk).phase == "Provisioning"
    assert _gpu_cap(sandbox) == "8"  # the old mode's 4 GPUs as room for the new pods
    reconcile_until(deployment.pk, sandbox, "Ready")
    assert sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE) == []
    reconcile_deployment(deployment.pk)
    assert _gpu_cap(sandbox) == "4"
    deployment.refresh_from_db()
    assert deployment.observed_replicas == 4


def test_a_mode_switch_held_by_the_gpu_cap_says_so_naming_the_resource_quota(
    llmd_world: tuple[RoleMatrix, Sandbox],
) -> None:
    """A team's GPU quota lowered while it switches leaves the new pods no room: the status names the cap."""
    matrix, sandbox = llmd_world
    deployment = deploy(matrix, min_replicas=4, max_replicas=4)
    reconcile_until(deployment.pk, sandbox, "Ready")
    _switch_to_llmd(matrix)
    TeamGpuQuota.objects.filter(quota=matrix.team.quota).update(gpus=1)
    for _ in range(5):
        sandbox.settle()
        result = reconcile_deployment(deployment.pk)
    assert result.phase == "Provisioning"
    deployment.refresh_from_db()
    held = next(item for item in deployment.conditions if item["type"] == "GpuQuotaHoldsSwitch")
    assert (held["status"], held["reason"]) == ("True", "GpuQuotaExhausted")
    assert "ResourceQuota genai-portal-gpus allows 5 nvidia.com/gpu, its pods (the old mode's included) request 5" in (
        deployment.message
    )
    assert _route_target_exists(sandbox)  # still served by the old mode meanwhile


def test_prefill_replicas_are_observed_and_charged_in_gpu_hours_beside_the_decode_replicas(
    llmd_world: tuple[RoleMatrix, Sandbox],
) -> None:
    """An llm-d deployment with prefill/decode disaggregation: the sandbox's KServe makes the prefill Deployment, the
    reconciler sees its ready pods apart from the decode ones, and the accrual charges both, each at its own GPUs;
    the team's cost report shows the sum, computed here by hand."""
    matrix, sandbox = llmd_world
    deployment = deploy(
        matrix, serving_mode="llm-d", min_replicas=1, max_replicas=1, prefill_replicas=1, prefill_gpus_per_replica=2
    )
    reconcile_until(deployment.pk, sandbox, "Ready")
    deployment.refresh_from_db()
    assert (deployment.observed_replicas, deployment.observed_prefill_replicas) == (1, 1)
    prefill_pods = sandbox.objects(
        "v1",
        "Pod",
        namespace=NAMESPACE,
        label_selector="app.kubernetes.io/component=llminferenceservice-workload-prefill",
    )
    assert len(prefill_pods) == 1
    # Both workloads turned Ready in the same pass: one entry in the replica change log, with each one's GPUs.
    (serving,) = ReplicaObservation.objects.filter(deployment_id=deployment.pk)
    assert (serving.replicas, serving.gpus_per_replica, serving.prefill_replicas, serving.prefill_gpus_per_replica) == (
        1,
        1,
        1,
        2,
    )

    # By hand: 1 decode replica x 1 GPU + 1 prefill replica x 2 GPUs = 3 GPUs, for 2 hours = 6 GPU-hours, at the
    # pool's price per GPU-hour. Before this change only the decode replica's 2 GPU-hours were charged. The
    # observation is dated on the hour (yesterday 10:00 UTC), so each hour's row is whole and nothing is rounded.
    started = (timezone.now() - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    ReplicaObservation.objects.filter(pk=serving.pk).update(observed_at=started)
    price = AcceleratorPool.objects.get(cluster=deployment.cluster, accelerator_type="nvidia-l4").hourly_price_per_gpu
    gpu_usage_accrue(now=started + timedelta(hours=2))
    day = started.date()
    response = matrix.client("developer").get(
        "/api/v1/teams/alpha/costs",
        {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat(), "group_by": "day"},
    )
    assert response.status_code == 200, response.content
    report = response.json()
    assert sum(Decimal(row["gpu_hours"]) for row in report["series"]) == Decimal(6)
    assert sum(Decimal(row["gpu_cost"]) for row in report["series"]) == 6 * price
    assert [(row["deployment"], Decimal(row["gpu_hours"])) for row in report["gpu"]] == [("chat", Decimal(6))]
    assert Decimal(report["totals"]["gpu_hours"]) == Decimal(6)


def test_a_switch_in_flight_holds_both_modes_gpus_so_another_deployment_waits_for_it_to_complete(
    llmd_world: tuple[RoleMatrix, Sandbox],
) -> None:
    """Alpha (4 GPUs) runs 'chat' on 2 and switches its mode: until the old mode's objects are pruned, both modes
    hold GPUs, so a new deployment needing the 2 that look free is refused, saying why; once the switch completes it
    is admitted."""
    matrix, sandbox = llmd_world
    deployment = deploy(matrix, min_replicas=2, max_replicas=2)
    reconcile_until(deployment.pk, sandbox, "Ready")
    _switch_to_llmd(matrix)
    assert reconcile_deployment(deployment.pk).phase == "Provisioning"  # the new mode's pods start beside the old
    assert len(sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE)) == 1

    refused = assert_problem(
        matrix.client("developer").post(
            "/api/v1/teams/alpha/deployments",
            {"name": "more", "model": "qwen", "accelerator_type": "nvidia-l4", "max_replicas": 2},
            format="json",
        ),
        409,
        "gpu_quota_exceeded",
    )
    assert (refused["field"], refused["reason"]) == ("max_replicas", "gpus_held_by_mode_switch")
    assert (refused["used"], refused["requested"], refused["limit"], refused["held_by_mode_switches"]) == (4, 2, 4, 2)
    assert "held by a serving-mode switch in flight ('chat' (2))" in refused["detail"]
    assert not Deployment.objects.filter(name="more").exists()

    reconcile_until(deployment.pk, sandbox, "Ready")
    assert sandbox.objects(ISVC, "InferenceService", namespace=NAMESPACE) == []  # the old mode's objects are gone
    deployment.refresh_from_db()
    assert deployment.switch_held_gpus == 0
    assert "ModeSwitchCompleted" in set(deployment.events.values_list("reason", flat=True))
    admitted = matrix.client("developer").post(
        "/api/v1/teams/alpha/deployments",
        {"name": "more", "model": "qwen", "accelerator_type": "nvidia-l4", "max_replicas": 2},
        format="json",
    )
    assert admitted.status_code == 201, admitted.content
