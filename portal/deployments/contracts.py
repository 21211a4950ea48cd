"""What deployments hand to workers: the desired spec of one deployment, frozen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from catalog.contracts import ModelVersionContract
from portal.clusters.contracts import AcceleratorPoolContract, ClusterContract

STANDARD_MODE = "standard"  # one KServe InferenceService behind an AIServiceBackend
LLMD_MODE = "llm-d"  # a KServe LLMInferenceService: its InferencePool and endpoint picker, routed to directly
SERVING_MODES = (STANDARD_MODE, LLMD_MODE)


@dataclass(frozen=True)
class DeploymentSpec:
    deployment_id: int
    generation: int
    team_slug: str
    name: str
    served_model_name: str  # also the name of its objects in the gateway namespace (portal/deployments/names.py)
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
    # Earlier served names its route still answers to (a rename by migration keeps callers working).
    served_model_aliases: tuple[str, ...] = ()
    # Model server flags from the sizing plan (context, tensor parallel size, memory share, KV cache dtype) when the
    # catalog knows the architecture; they replace the catalog's defaults, and the team's own flags replace them.
    plan_runtime_args: tuple[str, ...] = ()
    # How it is served (SERVING_MODES), chosen by the team within what its catalog version (`model.serving_modes`)
    # and its cluster (`cluster.runs_llmd`) allow.
    serving_mode: str = STANDARD_MODE
    # Prefill/decode disaggregation, llm-d only: prefill replicas (0: none) and GPUs per prefill replica (0: as many
    # as a decode replica). The replicas above are then the decode replicas.
    prefill_replicas: int = 0
    prefill_gpus_per_replica: int = 0
    # llm-d only: priority of the deployment's InferenceObjective, from its team's serving tier
    # (portal.tenancy.contracts.SERVING_TIER_PRIORITIES; higher is served first).
    objective_priority: int = 0
    # While a serving-mode switch is in flight: the GPUs the old mode's objects hold (0: none), released once the
    # reconciler prunes them (deployment_switch_completed).
    switch_held_gpus: int = 0


@dataclass(frozen=True)
class ObservedStatus:
    phase: str
    conditions: tuple[dict[str, str], ...]
    message: str
    endpoint: str
    observed_replicas: int
    # llm-d with prefill/decode disaggregation: ready prefill replicas (observed_replicas are then the decode's).
    observed_prefill_replicas: int = 0


@dataclass(frozen=True)
class ServedNameRef:
    """Who served under a name, and when: the deployment, its team and its catalog model and version."""

    deployment_id: int
    deployment_name: str
    team_id: int
    model_version_id: int
    model_id: int
    model_slug: str
    valid_from: datetime
    valid_until: datetime | None

    def serves_at(self, moment: datetime) -> bool:
        return self.valid_from <= moment and (self.valid_until is None or moment < self.valid_until)
