"""A sandbox registered as the portal's GPU cluster, with its nvidia-l4 pool: what the worker tests, the soak and
the provisioning benchmark each start from (one definition, so a new sandbox rule, such as its bearer token, reaches
all of them)."""

from __future__ import annotations

from decimal import Decimal

from portal.clusters.models import Cluster
from portal.clusters.services import accelerator_pool_upsert, cluster_register
from workers.sandbox.server import DEFAULT_TOKEN, Sandbox

L4_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-L4"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def register_sandbox_cluster(
    sandbox: Sandbox,
    *,
    name: str,
    region: str = "eu-west",
    gateway_namespace: str = "genai-gateway",
    l4_gpus: int | None = None,
    scheduling: bool = True,
) -> Cluster:
    """Register `sandbox` (with the token it accepts) as a Standard/KEDA cluster; with `l4_gpus`, also its nvidia-l4
    pool of that many GPUs, with the node selector and toleration when `scheduling`."""
    cluster = cluster_register(
        actor=None,
        name=name,
        api_server=sandbox.url,
        auth_kind="token",
        token=sandbox.token or DEFAULT_TOKEN,
        region=region,
        gateway_namespace=gateway_namespace,
        gateway_name="ai-gateway",
        deployment_mode="Standard",
        autoscaler_class="keda",
    )
    if l4_gpus is not None:
        values: dict[str, object] = {
            "gpu_product": "NVIDIA-L4",
            "gpu_count": l4_gpus,
            "gpu_memory_gb": 24,
            "hourly_price_per_gpu": Decimal("0.80"),
        }
        if scheduling:
            values |= {"node_selector": dict(L4_SELECTOR), "tolerations": [dict(GPU_TOLERATION)]}
        accelerator_pool_upsert(actor=None, cluster=cluster, accelerator_type="nvidia-l4", values=values)
    return cluster
