"""Provisioning at scale on the sandbox: 1,000 deployments for 100 teams, half of them in the llm-d serving mode
(LLMInferenceService, pool and objective) and half standard (InferenceService), then a resync of all of them.

Prints: time until all are Ready, API requests per deployment for the first apply, and for a resync of the
1,000 unchanged deployments the write requests (target 0), the requests in total (target: one list per kind) and
the time taken, both
for the periodic resync (one snapshot of the cluster) and for a full reconcile of each deployment.
Run with `make bench` (PORTAL_BENCH_TEAMS=10 for a quick try). Reconciles run in this process one after
another (one worker's throughput); the sandbox's controllers run on their own thread as on a cluster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from catalog.models import ModelVersion
from portal.clusters.models import Cluster
from portal.deployments.models import Deployment
from portal.deployments.services import deployment_create
from portal.tenancy.models import TeamGpuQuota, User
from tests.factories import SelfHostedVersionFactory, TeamFactory
from tests.sandbox_cluster import register_sandbox_cluster
from workers.provisioning.reconciler import LLMD_OWNED_KINDS, OWNED_KINDS, reconcile_deployment, resync_cluster
from workers.sandbox.server import GpuNodePool, Sandbox
from workers.sandbox.validation import default_crd_dir

TEAMS = int(os.environ.get("PORTAL_BENCH_TEAMS", "100"))  # smaller for a quick try
PER_TEAM = 10
# What the snapshot of an llm-d cluster lists, once each: namespaces, quotas, every owned kind of both modes, the
# portal's Kueue Cohort (a ResourceQuota cluster's leftovers of a Kueue past), the predictor pods, the llm-d pods and
# KServe's InferencePools.
SNAPSHOT_LISTS = 2 + len(OWNED_KINDS) + len(LLMD_OWNED_KINDS) + 1 + 3


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    server = Sandbox(crd_dir=default_crd_dir(), node_pools=(GpuNodePool("NVIDIA-L4", count=130, gpus=8, memory_gb=24),))
    server.start()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=False)
def test_thousand_deployments(sandbox: Sandbox) -> None:
    cluster = register_sandbox_cluster(sandbox, name="bench", l4_gpus=1040, scheduling=False)
    Cluster.objects.filter(pk=cluster.pk).update(runs_llmd=True)
    SelfHostedVersionFactory(model__slug="qwen", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    ModelVersion.objects.filter(model__slug="qwen").update(serving_modes=["standard", "llm-d"])
    actor = User.objects.create(username="bench-admin", is_staff=True)
    started = time.perf_counter()
    for team_index in range(TEAMS):
        team = TeamFactory(slug=f"team-{team_index:03d}")
        TeamGpuQuota.objects.create(quota=team.quota, accelerator_type="nvidia-l4", gpus=PER_TEAM)
        team.quota.max_deployments = PER_TEAM
        team.quota.save()
        for index in range(PER_TEAM):
            deployment_create(
                actor=actor,
                platform_admin=True,
                team=team,
                name=f"m{index}",
                model="qwen",
                accelerator_type="nvidia-l4",
                serving_mode="llm-d" if index % 2 else "standard",
            )
    created = time.perf_counter() - started
    ids = list(Deployment.objects.order_by("pk").values_list("pk", flat=True))
    assert len(ids) == TEAMS * PER_TEAM
    assert Deployment.objects.filter(serving_mode="llm-d").count() == len(ids) // 2

    sandbox.reset_records()
    started = time.perf_counter()
    for deployment_id in ids:
        reconcile_deployment(deployment_id)
    first_pass = time.perf_counter() - started
    first_requests = len(sandbox.records)
    first_writes = len(sandbox.writes())

    rounds = 0
    while Deployment.objects.exclude(phase="Ready").exists():  # what the 15-second resync of non-Ready rows does
        rounds += 1
        assert rounds <= 10, Deployment.objects.exclude(phase="Ready").values_list("phase", "message")[:5]
        sandbox.settle()
        for deployment_id in resync_cluster(cluster.pk, ids).stale:
            reconcile_deployment(deployment_id)
    all_ready = time.perf_counter() - started

    sandbox.reset_records()
    started = time.perf_counter()
    result = resync_cluster(cluster.pk, ids)  # the periodic drift repair over everything (deployments.resync)
    resync = time.perf_counter() - started
    resync_writes = len(sandbox.writes())
    resync_requests = len(sandbox.records)
    assert result.stale == ()
    assert result.checked == len(ids)

    sandbox.reset_records()
    started = time.perf_counter()
    for deployment_id in ids:  # a full reconcile of each, as a worker runs when nudged
        reconcile_deployment(deployment_id)
    each = time.perf_counter() - started
    each_writes = len(sandbox.writes())
    each_requests = len(sandbox.records)

    print(
        f"\n{len(ids):,} deployments / {TEAMS} teams on the sandbox, half standard, half llm-d (one in-process worker):"
        f"\n  created through the service layer in {created:.1f} s"
        f"\n  first reconcile pass {first_pass:.1f} s: {first_requests / len(ids):.1f} API requests per deployment"
        f" ({first_writes / len(ids):.1f} writes)"
        f"\n  all Ready after {all_ready:.1f} s ({rounds} more pass{'es' if rounds != 1 else ''})"
        f"\n  resync of {len(ids):,} unchanged deployments (one cluster snapshot): {resync_writes} writes,"
        f" {resync_requests} requests in total, {resync:.1f} s"
        f"\n  full reconcile of each of the {len(ids):,} unchanged deployments: {each_writes} writes,"
        f" {each_requests} requests ({each_requests / len(ids):.1f} per deployment), {each:.1f} s"
    )
    assert resync_writes == 0
    assert resync_requests == SNAPSHOT_LISTS  # one list per kind, whatever the number of deployments
    assert each_writes == 0
