"""GPUs a deployment holds, per serving mode: decode (or standard) replicas and prefill replicas, counted apart."""

from __future__ import annotations

from portal.deployments.contracts import LLMD_MODE, STANDARD_MODE
from portal.deployments.gpu_accounting import GpuDemand, gpus_for, gpus_reserved, prefill_gpus_each
from tests.workers.test_manifests import make_spec


def test_standard_mode_counts_replicas_times_gpus_and_no_prefill() -> None:
    assert gpus_for(serving_mode=STANDARD_MODE, replicas=3, gpus_per_replica=2) == GpuDemand(decode=6, prefill=0)
    # Prefill fields mean nothing outside llm-d: a stale value never inflates the quota.
    demand = gpus_for(
        serving_mode=STANDARD_MODE, replicas=3, gpus_per_replica=2, prefill_replicas=4, prefill_gpus_per_replica=1
    )
    assert demand == GpuDemand(decode=6, prefill=0)
    assert demand.total == 6


def test_llmd_mode_adds_prefill_replicas_at_their_own_gpus() -> None:
    demand = gpus_for(
        serving_mode=LLMD_MODE, replicas=2, gpus_per_replica=4, prefill_replicas=3, prefill_gpus_per_replica=1
    )
    assert (demand.decode, demand.prefill, demand.total) == (8, 3, 11)
    # No count of their own: a prefill replica has a decode replica's GPUs.
    assert prefill_gpus_each(gpus_per_replica=4, prefill_gpus_per_replica=0) == 4
    assert gpus_for(serving_mode=LLMD_MODE, replicas=2, gpus_per_replica=4, prefill_replicas=1).total == 12
    assert gpus_for(serving_mode=LLMD_MODE, replicas=2, gpus_per_replica=4).prefill == 0


def test_observed_replicas_give_gpu_hours_and_zero_replicas_hold_nothing() -> None:
    assert gpus_for(serving_mode=LLMD_MODE, replicas=0, gpus_per_replica=4, prefill_replicas=0).total == 0
    assert gpus_for(serving_mode=STANDARD_MODE, replicas=-1, gpus_per_replica=4).total == 0


def test_the_quota_reserves_the_most_a_deployment_may_scale_to() -> None:
    spec = make_spec(serving_mode=LLMD_MODE, max_replicas=3, gpus_per_replica=2, prefill_replicas=2)
    assert gpus_reserved(spec) == GpuDemand(decode=6, prefill=4)
    assert gpus_reserved(make_spec(max_replicas=3, gpus_per_replica=2, prefill_replicas=2)) == GpuDemand(6, 0)
