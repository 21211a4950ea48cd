"""What deployments hand to workers: the desired spec of one deployment, frozen."""

from __future__ import annotations

from dataclasses import dataclass

from catalog.contracts import ModelVersionContract
from portal.clusters.contracts import AcceleratorPoolContract, ClusterContract


@dataclass(frozen=True)
class DeploymentSpec:
    deployment_id: int
    generation: int
    team_slug: str
    name: str
    served_model_name: str
    min_replicas: int
    max_replicas: int
    scale_to_zero: bool
    gpus_per_replica: int
    runtime_args: tuple[str, ...]
    model_cache: bool
    deleting: bool
    model: ModelVersionContract
    cluster: ClusterContract
    pool: AcceleratorPoolContract
    # Per-key allow-lists (gateway credentials): None when every current key of the team may call this model,
    # else the key ids that may (possibly none). The route matches only those client ids.
    allowed_key_ids: tuple[str, ...] | None = None
    # The generation last observed on the cluster (0: never), so a first apply can skip looking for leftovers.
    observed_generation: int = 0


@dataclass(frozen=True)
class ObservedStatus:
    phase: str
    conditions: tuple[dict[str, str], ...]
    message: str
    endpoint: str
    observed_replicas: int
