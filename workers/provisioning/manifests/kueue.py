"""Kueue's GPU quota for one cluster: the Cohort, a ResourceFlavor per accelerator pool, and per team a ClusterQueue
and the LocalQueue its namespace submits to; and the queue-name label that puts a serving workload in that queue.

Facts (Kueue v0.19.2, kubernetes-sigs/kueue 8eab68778fc1b52affe165fdf5af29d1e9b4f3cb; CRDs in shared/crds/kueue):
- v1beta2 is the storage version; the ClusterQueue's cohort field is `spec.cohortName` (reference section 8).
- `borrowingLimit` unset means *no* limit; it must be unset when the ClusterQueue has no cohort (CEL on the spec;
  apis/kueue/v1beta2/clusterqueue_types.go ResourceQuota.BorrowingLimit). So a team that may borrow nothing gets an
  explicit 0, never an absent field.
- Every resource a pod requests must be covered by its ClusterQueue ("resource cpu unavailable in ClusterQueue",
  pkg/scheduler/flavorassigner/flavorassigner.go) unless Kueue runs with `resources.quotaCheckStrategy:
  IgnoreUndeclared` (apis/config/v1beta2/configuration_types.go). The portal caps GPUs only (as the ResourceQuota on
  requests.nvidia.com/gpu does), so a cluster with `gpu_quota: kueue` must run Kueue with IgnoreUndeclared.
- A ResourceFlavor's `nodeLabels` must match the pod's node selector for the flavor to be assigned, and its
  `tolerations` are added to pods admitted with it (resourceflavor_types.go); nodeLabels and tolerations hold at
  most 8 entries each (CRD).
- Which objects carry the queue: Kueue reads `kueue.x-k8s.io/queue-name` from an object's metadata.labels
  (pkg/controller/jobframework/utils.go QueueNameForObject); for a Deployment its webhook copies it into the pod
  template (pkg/controller/jobs/deployment/deployment_webhook.go Default), and the label cannot change (nor be added)
  while the Deployment has ready replicas (ValidateUpdate: immutable unless ReadyReplicas == 0).
- A queued serving pod is gated (`kueue.x-k8s.io/admission` scheduling gate); its Workload reports condition
  `QuotaReserved` False with reason `WaitingForQuota` (or `ExceedsMaxQuota`, `NoMatchingFlavor`, `Misconfigured`,
  `Suspended`, falling back to `Pending`) and a message such as "couldn't assign flavors to pod set main:
  insufficient unused quota for nvidia.com/gpu in flavor nvidia-l4, 1 more needed", and `Admitted` False
  (apis/kueue/v1beta2/workload_types.go, pkg/scheduler/scheduler.go, pkg/scheduler/flavorassigner/flavorassigner.go).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from portal.clusters.contracts import KUEUE, AcceleratorPoolContract, ClusterContract
from portal.tenancy.contracts import TeamQuotaContract
from workers.provisioning.manifests.labels import MANAGED_BY, MANAGED_BY_KEY, team_labels, team_namespace
from workers.provisioning.manifests.upstream import GPU_RESOURCE, KUEUE_API_VERSION

Manifest = dict[str, Any]
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"
COHORT_NAME = "genai-portal"  # every team's ClusterQueue on a cluster, so idle GPUs can be lent
LOCAL_QUEUE_NAME = "genai-portal"  # one per team namespace; the queue-name label names it
MAX_FLAVOR_NODE_LABELS = 8
MAX_FLAVOR_TOLERATIONS = 8


def platform_labels() -> dict[str, str]:
    """Cluster-wide objects shared by every team: owned by the portal, by no team."""
    return {MANAGED_BY_KEY: MANAGED_BY}


def resource_flavor_name(pool: AcceleratorPoolContract) -> str:
    """Convention shared with the model cache's LocalModelNodeGroup: one per accelerator pool, named after its type."""
    return pool.accelerator_type


def cluster_queue_name(cluster: ClusterContract, team_slug: str) -> str:
    """Cluster-scoped, so named like the team's namespace: unique on the cluster, one per team."""
    return team_namespace(cluster.namespace_prefix, team_slug)


def queue_labels(cluster: ClusterContract) -> dict[str, str]:
    """The label that puts a serving workload in its team's LocalQueue on a Kueue cluster; none elsewhere."""
    return {QUEUE_NAME_LABEL: LOCAL_QUEUE_NAME} if cluster.gpu_quota == KUEUE else {}


def build_cohort() -> Manifest:
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "Cohort",
        "metadata": {"name": COHORT_NAME, "labels": platform_labels()},
        "spec": {},
    }


def build_resource_flavor(pool: AcceleratorPoolContract) -> Manifest:
    """The pool's nodes, as the pool's deployments select them; a pool beyond the CRD's limits is refused here
    (ValueError) rather than truncated into a flavor that matches other nodes."""
    if len(pool.node_selector) > MAX_FLAVOR_NODE_LABELS or len(pool.tolerations) > MAX_FLAVOR_TOLERATIONS:
        raise ValueError(
            f"accelerator pool {pool.accelerator_type}: a ResourceFlavor holds at most {MAX_FLAVOR_NODE_LABELS} node "
            f"labels and {MAX_FLAVOR_TOLERATIONS} tolerations"
        )
    spec: dict[str, Any] = {}
    if pool.node_selector:
        spec["nodeLabels"] = dict(sorted(pool.node_selector.items()))
    if pool.tolerations:
        spec["tolerations"] = [dict(toleration) for toleration in pool.tolerations]
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "ResourceFlavor",
        "metadata": {"name": resource_flavor_name(pool), "labels": platform_labels()},
        "spec": spec,
    }


def build_cluster_queue(
    cluster: ClusterContract, pools: Iterable[AcceleratorPoolContract], quota: TeamQuotaContract
) -> Manifest:
    """The team's GPUs on this cluster: per pool, its quota of that accelerator type as nominal quota and what it
    may borrow from the cohort beyond it (0 unless a platform admin allowed more). Teams reclaim their nominal GPUs
    from borrowers (`reclaimWithinCohort: Any`): borrowed capacity is the only capacity that can be taken back."""
    flavors = [
        {
            "name": resource_flavor_name(pool),
            "resources": [
                {
                    "name": GPU_RESOURCE,
                    "nominalQuota": str(max(quota.gpus.get(pool.accelerator_type, 0), 0)),
                    "borrowingLimit": str(max(quota.gpu_borrowing_limits.get(pool.accelerator_type, 0), 0)),
                }
            ],
        }
        for pool in sorted(pools, key=lambda item: item.accelerator_type)
    ]
    spec: dict[str, Any] = {
        # The team's namespace carries the team labels (build_namespace); only it may submit here.
        "namespaceSelector": {"matchLabels": team_labels(quota.team_slug)},
        "cohortName": COHORT_NAME,
        # A deployment too big for the free GPUs must not hold back a smaller one behind it.
        "queueingStrategy": "BestEffortFIFO",
        "preemption": {
            "reclaimWithinCohort": "Any",
            "withinClusterQueue": "Never",
            "borrowWithinCohort": {"policy": "Never"},
        },
    }
    if flavors:
        spec["resourceGroups"] = [{"coveredResources": [GPU_RESOURCE], "flavors": flavors}]
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "ClusterQueue",
        "metadata": {"name": cluster_queue_name(cluster, quota.team_slug), "labels": team_labels(quota.team_slug)},
        "spec": spec,
    }


def build_local_queue(cluster: ClusterContract, team_slug: str) -> Manifest:
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "LocalQueue",
        "metadata": {
            "name": LOCAL_QUEUE_NAME,
            "namespace": team_namespace(cluster.namespace_prefix, team_slug),
            "labels": team_labels(team_slug),
        },
        "spec": {"clusterQueue": cluster_queue_name(cluster, team_slug)},
    }


def build_kueue_cluster_objects(pools: Iterable[AcceleratorPoolContract]) -> list[Manifest]:
    """Shared by every team on the cluster, in apply order: the cohort, then a flavor per pool."""
    return [build_cohort(), *(build_resource_flavor(pool) for pool in sorted(pools, key=lambda p: p.accelerator_type))]


def build_team_namespace(cluster: ClusterContract, team_slug: str) -> Manifest:
    """The team's namespace on the cluster, as a deployment's reconcile renders it (manifests.deployment
    build_namespace): its LocalQueue lives there, before the team has a deployment on the cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": team_namespace(cluster.namespace_prefix, team_slug), "labels": team_labels(team_slug)},
    }


def build_kueue_quota_objects(
    cluster: ClusterContract, pools: Iterable[AcceleratorPoolContract], quotas: Iterable[TeamQuotaContract]
) -> list[Manifest]:
    """A Kueue cluster's whole GPU quota, in apply order: the cohort and flavors, then per team with GPUs (or
    borrowing) of the cluster's types its namespace and queues; every team's ClusterQueue is in the cohort from the
    start, so its idle nominal GPUs can be lent before it deploys anything."""
    pools = sorted(pools, key=lambda pool: pool.accelerator_type)
    objects = build_kueue_cluster_objects(pools)
    for quota in sorted(quotas, key=lambda item: item.team_slug):
        objects += [build_team_namespace(cluster, quota.team_slug), *build_kueue_team_objects(cluster, pools, quota)]
    return objects


def build_kueue_team_objects(
    cluster: ClusterContract, pools: Iterable[AcceleratorPoolContract], quota: TeamQuotaContract
) -> list[Manifest]:
    """The team's queues, in apply order; the LocalQueue lives in the team's namespace, so they follow it."""
    return [build_cluster_queue(cluster, pools, quota), build_local_queue(cluster, quota.team_slug)]
