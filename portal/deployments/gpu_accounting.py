"""GPUs a deployment holds in each serving mode, for the quota admission and for GPU-hours: pure arithmetic.

In the llm-d mode with prefill/decode disaggregation a deployment runs two workloads on GPUs: the decode replicas
(the deployment's replicas) and the prefill replicas (KServe renders `spec.prefill` as a second Deployment,
`<name>-kserve-prefill`, with its own replicas and pod template: kserve v0.20.0
pkg/controller/v1alpha2/llmisvc/workload_single_node.go expectedPrefillMainDeployment). Both count, separately.
The standard mode has no prefill workload, so prefill fields count for nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass

from portal.deployments.contracts import LLMD_MODE, DeploymentSpec


@dataclass(frozen=True)
class GpuDemand:
    decode: int  # the serving replicas' GPUs (all of them in the standard mode)
    prefill: int

    @property
    def total(self) -> int:
        return self.decode + self.prefill


def prefill_gpus_each(*, gpus_per_replica: int, prefill_gpus_per_replica: int) -> int:
    """GPUs of one prefill replica: its own count, or a decode replica's when it has none (0)."""
    return prefill_gpus_per_replica or gpus_per_replica


def gpus_for(
    *,
    serving_mode: str,
    replicas: int,
    gpus_per_replica: int,
    prefill_replicas: int = 0,
    prefill_gpus_per_replica: int = 0,
) -> GpuDemand:
    """GPUs held by `replicas` decode (or standard) replicas and `prefill_replicas` prefill replicas.

    For the quota, pass the most the deployment may scale to (max replicas); for GPU-hours, the replicas observed."""
    prefill = 0
    if serving_mode == LLMD_MODE and prefill_replicas > 0:
        each = prefill_gpus_each(gpus_per_replica=gpus_per_replica, prefill_gpus_per_replica=prefill_gpus_per_replica)
        prefill = prefill_replicas * each
    return GpuDemand(decode=max(replicas, 0) * gpus_per_replica, prefill=prefill)


def gpus_reserved(spec: DeploymentSpec) -> GpuDemand:
    """What the quota admits for a deployment: its most replicas of each workload, at their GPUs each."""
    return gpus_for(
        serving_mode=spec.serving_mode,
        replicas=spec.max_replicas,
        gpus_per_replica=spec.gpus_per_replica,
        prefill_replicas=spec.prefill_replicas,
        prefill_gpus_per_replica=spec.prefill_gpus_per_replica,
    )
