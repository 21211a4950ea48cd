"""What clusters hand to workers: how to connect, and how the cluster wants things rendered."""

from __future__ import annotations

from dataclasses import dataclass

RESOURCE_QUOTA = "resourcequota"  # a hard ResourceQuota on requests.nvidia.com/gpu per team namespace
KUEUE = "kueue"  # Kueue: a ClusterQueue per team with a nominal GPU quota, all in one cohort that lends idle GPUs
GPU_QUOTA_KINDS = (RESOURCE_QUOTA, KUEUE)


@dataclass(frozen=True)
class ClusterConnection:
    """Credentials are decrypted only into this value, and only for a worker about to connect."""

    cluster_id: int
    name: str
    api_server: str
    auth_kind: str
    kubeconfig: str | None
    token: str | None
    ca_bundle: str | None

    def __repr__(self) -> str:  # never print credentials
        return f"ClusterConnection(name={self.name!r}, api_server={self.api_server!r}, auth_kind={self.auth_kind!r})"


@dataclass(frozen=True)
class AcceleratorPoolContract:
    accelerator_type: str
    gpu_product: str
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, object], ...]
    gpu_memory_gb: int


@dataclass(frozen=True)
class ClusterContract:
    cluster_id: int
    name: str
    region: str
    gateway_namespace: str
    gateway_name: str
    deployment_mode: str
    autoscaler_class: str
    namespace_prefix: str
    apply_gateway_bootstrap: bool
    gateway_url: str = ""
    # The cluster runs the llm-d stack (KServe's LLMInferenceService controller, its well-known presets, the
    # InferencePool CRD and Envoy Gateway's InferencePool backend support), so deployments may use the llm-d mode.
    runs_llmd: bool = False
    # How a team's GPUs are capped on this cluster (GPU_QUOTA_KINDS).
    gpu_quota: str = RESOURCE_QUOTA
