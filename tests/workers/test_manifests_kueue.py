"""The Kueue builders: the Cohort, ResourceFlavors, ClusterQueues and LocalQueues validate against the upstream CRDs
(CEL rules included) for each shape a cluster and a team's quota can take, the check refuses what the CRDs forbid,
and the values that tie them together are exact: quota per flavor, the borrowing limit (0, never unlimited, unless
allowed), the queue a deployment's label names, and the nodes a flavor stands for."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from portal.clusters.contracts import KUEUE, AcceleratorPoolContract
from portal.deployments.contracts import LLMD_MODE
from portal.deployments.gpu_accounting import gpus_reserved
from portal.tenancy.contracts import TeamQuotaContract
from tests.workers.test_manifests import assert_valid, make_spec
from workers.provisioning.manifests import kueue
from workers.provisioning.manifests.deployment import build_inference_service, build_namespace
from workers.provisioning.manifests.llmd import build_llm_inference_service
from workers.sandbox.validation import CrdRegistry

KUEUE_CRD_KINDS = frozenset(
    {
        ("kueue.x-k8s.io", "clusterqueues"),
        ("kueue.x-k8s.io", "localqueues"),
        ("kueue.x-k8s.io", "resourceflavors"),
        ("kueue.x-k8s.io", "cohorts"),
    }
)
L4 = AcceleratorPoolContract(
    accelerator_type="nvidia-l4",
    gpu_product="NVIDIA-L4",
    node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"},
    tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
    gpu_memory_gb=24,
)
H100 = AcceleratorPoolContract(
    accelerator_type="nvidia-h100-80gb",
    gpu_product="NVIDIA-H100-80GB-HBM3",
    node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "topology.kubernetes.io/zone": "eu-west-1a"},
    tolerations=(
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"},
    ),
    gpu_memory_gb=80,
)


def make_quota(**overrides: Any) -> TeamQuotaContract:
    quota = TeamQuotaContract(
        team_slug="alpha",
        team_active=True,
        max_deployments=10,
        tokens_per_minute=100_000,
        tokens_per_day=10_000_000,
        monthly_budget=Decimal("1000"),
        budget_policy="alert",
        gpus={"nvidia-l4": 4, "nvidia-h100-80gb": 8},
    )
    return dataclasses.replace(quota, **overrides)


@pytest.fixture(scope="module")
def registry(crd_dir: Path) -> CrdRegistry:
    loaded = CrdRegistry()
    # Not the sandbox's PORTAL_CRD_KINDS (no Kueue kinds there yet): the CRDs these builders produce.
    assert loaded.load_dir(crd_dir, kinds=KUEUE_CRD_KINDS) == len(KUEUE_CRD_KINDS)
    return loaded


def causes_of(registry: CrdRegistry, manifest: dict[str, Any]) -> list[str]:
    info = registry.by_kind(manifest["apiVersion"], manifest["kind"])
    assert info is not None
    _, causes, _ = registry.validator(info.group, "v1beta2", info.plural).validate(manifest, strict=True)
    return [f"{cause.field}: {cause.message}" for cause in causes]


CLUSTER = make_spec(cluster={"gpu_quota": KUEUE}).cluster
OPTIONS: dict[str, tuple[tuple[AcceleratorPoolContract, ...], dict[str, Any]]] = {
    "one-pool": ((L4,), {}),
    "two-pools": ((L4, H100), {}),
    "borrowing-allowed": ((L4, H100), {"gpu_borrowing_limits": {"nvidia-l4": 4}}),
    "no-quota-for-a-pool": ((L4, H100), {"gpus": {"nvidia-l4": 2}}),
    "no-quota-at-all": ((L4,), {"gpus": {}}),
    "no-pools-yet": ((), {}),
    "pool-without-tolerations": ((dataclasses.replace(L4, tolerations=()),), {}),
    "pool-without-node-labels": ((dataclasses.replace(L4, node_selector={}, tolerations=()),), {}),
    "long-team-slug": ((L4,), {"team_slug": "a" * 40}),
}


@pytest.mark.parametrize("option", OPTIONS, ids=list(OPTIONS))
def test_every_kueue_object_validates(registry: CrdRegistry, option: str) -> None:
    pools, quota_overrides = OPTIONS[option]
    quota = make_quota(**quota_overrides)
    cluster_objects = kueue.build_kueue_cluster_objects(pools)
    team_objects = kueue.build_kueue_team_objects(CLUSTER, pools, quota)
    assert [item["kind"] for item in cluster_objects] == ["Cohort", *["ResourceFlavor"] * len(pools)]
    assert [item["kind"] for item in team_objects] == ["ClusterQueue", "LocalQueue"]
    for manifest in [*cluster_objects, *team_objects]:
        assert_valid(registry, manifest)
    assert not [rule for rule in registry.skipped_rules if "borrowingLimit" in rule or "coveredResources" in rule]


def test_cel_rules_refuse_what_the_crds_forbid(registry: CrdRegistry) -> None:
    """Each builder's output, broken the way its CRD's rules forbid, is refused: the matrix cannot pass vacuously."""
    queue = kueue.build_cluster_queue(CLUSTER, (L4,), make_quota())
    del queue["spec"]["cohortName"]  # a borrowing limit without a cohort
    assert any("borrowingLimit must be nil when cohort is empty" in cause for cause in causes_of(registry, queue))

    queue = kueue.build_cluster_queue(CLUSTER, (L4,), make_quota())
    queue["spec"]["resourceGroups"][0]["coveredResources"].append("cpu")
    assert any("same number of resources" in cause for cause in causes_of(registry, queue))

    flavor = kueue.build_resource_flavor(L4)
    flavor["spec"]["tolerations"][0]["tolerationSeconds"] = 30
    assert any("tolerationSeconds" in cause for cause in causes_of(registry, flavor))

    local = kueue.build_local_queue(CLUSTER, "alpha")
    local["spec"]["clusterQueue"] = "Not_A_Name"
    assert causes_of(registry, local)

    cohort = kueue.build_cohort()
    cohort["spec"]["parentName"] = "Not_A_Name"
    assert causes_of(registry, cohort)


def test_a_flavor_per_pool_stands_for_its_nodes() -> None:
    flavor = kueue.build_resource_flavor(H100)
    assert flavor["apiVersion"] == "kueue.x-k8s.io/v1beta2"
    assert flavor["metadata"] == {
        "name": "nvidia-h100-80gb",
        "labels": {"app.kubernetes.io/managed-by": "genai-portal"},
    }
    assert flavor["spec"] == {
        "nodeLabels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "topology.kubernetes.io/zone": "eu-west-1a"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"},
        ],
    }
    # Beyond the CRD's 8 node labels the flavor is refused, never cut down to match other nodes.
    crowded = dataclasses.replace(L4, node_selector={f"label-{index}": "x" for index in range(9)})
    with pytest.raises(ValueError, match="at most 8 node labels"):
        kueue.build_resource_flavor(crowded)


def test_the_cluster_queue_holds_the_teams_gpus_per_flavor_in_one_cohort() -> None:
    quota = make_quota(gpus={"nvidia-l4": 4}, gpu_borrowing_limits={"nvidia-h100-80gb": 2})
    queue = kueue.build_cluster_queue(CLUSTER, (L4, H100), quota)
    assert queue["metadata"]["name"] == "team-alpha"
    assert queue["spec"]["cohortName"] == "genai-portal" == kueue.build_cohort()["metadata"]["name"]
    assert queue["spec"]["resourceGroups"] == [
        {
            "coveredResources": ["nvidia.com/gpu"],
            "flavors": [
                # Sorted by type; no quota of a type is 0 nominal, and no allowance is 0 borrowing, never unlimited.
                {
                    "name": "nvidia-h100-80gb",
                    "resources": [{"name": "nvidia.com/gpu", "nominalQuota": "0", "borrowingLimit": "2"}],
                },
                {
                    "name": "nvidia-l4",
                    "resources": [{"name": "nvidia.com/gpu", "nominalQuota": "4", "borrowingLimit": "0"}],
                },
            ],
        }
    ]
    assert queue["spec"]["preemption"]["reclaimWithinCohort"] == "Any"
    assert queue["spec"]["queueingStrategy"] == "BestEffortFIFO"
    # No pools yet: no resource group (the CRD wants at least one flavor in a group).
    assert "resourceGroups" not in kueue.build_cluster_queue(CLUSTER, (), quota)["spec"]


def test_a_deployment_on_a_kueue_cluster_lands_in_its_teams_queue_on_its_pools_flavor() -> None:
    """Across the parts a queued llm-d deployment crosses: its service's label names the LocalQueue of its own
    namespace, which feeds the team's ClusterQueue, which admits only that namespace and holds the team's GPUs on
    the flavor whose nodes the service's pods select; what the deployment reserves fits nominal plus borrowing."""
    spec = make_spec(
        serving_mode=LLMD_MODE, cluster={"gpu_quota": KUEUE}, max_replicas=3, gpus_per_replica=2, prefill_replicas=1
    )
    quota = make_quota(gpus={"nvidia-l4": 6}, gpu_borrowing_limits={"nvidia-l4": 2})
    service = build_llm_inference_service(spec)
    namespace = build_namespace(spec)
    cluster_queue, local_queue = kueue.build_kueue_team_objects(spec.cluster, (spec.pool,), quota)
    flavor = kueue.build_resource_flavor(spec.pool)

    assert service["metadata"]["labels"][kueue.QUEUE_NAME_LABEL] == local_queue["metadata"]["name"]
    assert local_queue["metadata"]["namespace"] == service["metadata"]["namespace"] == namespace["metadata"]["name"]
    assert local_queue["spec"]["clusterQueue"] == cluster_queue["metadata"]["name"]
    selector = cluster_queue["spec"]["namespaceSelector"]["matchLabels"]
    assert selector.items() <= namespace["metadata"]["labels"].items()
    other_team = build_namespace(make_spec(team_slug="beta"))
    assert not selector.items() <= other_team["metadata"]["labels"].items()
    [group] = cluster_queue["spec"]["resourceGroups"]
    [flavor_quota] = group["flavors"]
    assert flavor_quota["name"] == flavor["metadata"]["name"]
    for template in (service["spec"]["template"], service["spec"]["prefill"]["template"]):
        assert flavor["spec"]["nodeLabels"].items() <= template["nodeSelector"].items()
    [gpus] = flavor_quota["resources"]
    reserved = gpus_reserved(spec)
    assert (reserved.decode, reserved.prefill) == (6, 2)
    assert int(gpus["nominalQuota"]) < reserved.total <= int(gpus["nominalQuota"]) + int(gpus["borrowingLimit"])


def test_the_queue_label_exists_only_on_kueue_clusters() -> None:
    assert kueue.queue_labels(CLUSTER) == {"kueue.x-k8s.io/queue-name": "genai-portal"}
    assert kueue.queue_labels(make_spec().cluster) == {}


def test_a_standard_inference_service_names_the_teams_local_queue_on_kueue_clusters_only() -> None:
    """KServe copies the InferenceService's labels onto its predictor pods, which Kueue then holds."""
    queued = build_inference_service(make_spec(cluster={"gpu_quota": KUEUE}))
    assert queued["metadata"]["labels"][kueue.QUEUE_NAME_LABEL] == kueue.LOCAL_QUEUE_NAME
    assert kueue.QUEUE_NAME_LABEL not in build_inference_service(make_spec())["metadata"]["labels"]
